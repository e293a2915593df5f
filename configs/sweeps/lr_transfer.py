"""python -m experiments.sweep --sweep configs/sweeps/lr_transfer.py --root runs/lr_transfer --workers 2
python -m analysis.lr_transfer runs/lr_transfer --out benchmarks/results/lr_transfer

Learning rate (factor-2 grid) x width (64, 256, 1024) for dense, low-rank, Monarch and BTT
students of the synthetic teacher, under muP and under standard parametrization: with a
correct muP the best learning rate stays put as width grows.
"""

from configs.sweeps import product

CONFIG = "configs/mlp_synthetic.py"

FAMILIES = ("kind=dense", "kind=low_rank,rank_frac=0.25", "kind=monarch,blocks=4", "kind=btt,rank=1")
LRS = tuple(3e-3 * 2.0**k for k in range(-3, 2))
WIDTHS = (64, 256, 1024)


def get_sweep(arg=None):
  runs = []
  for param in ("mup", "standard"):
    for family in FAMILIES:
      runs += product(**{"arg": [f"{family},param={param},depth=2"], "model.width": list(WIDTHS),
                         "optim.lr": list(LRS)})
  for run in runs:
    run.update({"steps": 300, "batch_size": 64, "optim.warmup_steps": 30, "eval_every": 300,
                "log_every": 100, "checkpoint_every": 0, "wandb.mode": "disabled",
                "mesh.data": 1, "model.layers": "all_but_last"})
  return runs
