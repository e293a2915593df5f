"""The Fashion-MNIST MLP scaling study (CPU stand-in for Compute Better Spent's CIFAR MLP figure).

Run the whole study (lr sweep at the base width, then every family at the tuned lr, then the
analysis) with one command:

  python -m analysis.study mlp_fashion --root runs/scaling_mlp_fashion \
      --out benchmarks/results/scaling_mlp_fashion --workers 2

Stages (``get_sweep`` arg, comma-separated):
  'lr'          dense at the muP base width (64), a factor-2 learning-rate grid
  'lr=<value>'  the study: dense, low_rank, btt, monarch and kronecker at 5 widths each, muP,
                every hidden layer structured, the tuned lr transferred to every width and family
  'quick'       shortens everything to seconds (tests), 2 widths per family
Every run evaluates 10 times along its cosine schedule; the frontier is built from those
intermediate evaluations, as in the paper's compute-vs-loss figures.
"""

from configs.sweeps import product

CONFIG = "configs/mlp_fashion.py"

BASE_WIDTH = 64   # configs/mlp_fashion.py's model.base_width: where the lr is tuned
FAMILIES = {
    "kind=dense": (32, 64, 128, 256, 512),
    "kind=low_rank,rank_frac=0.25": (64, 128, 256, 512, 1024),
    "kind=btt,rank=1": (64, 128, 256, 512, 1024),
    "kind=monarch,blocks=4": (64, 128, 256, 512, 1024),
    "kind=kronecker,factors=2": (64, 128, 256, 512, 1024),
}
LRS = (5e-4, 1e-3, 2e-3, 4e-3, 8e-3)
STEPS, EVAL_EVERY = 1000, 100
QUICK = {"steps": 40, "eval_every": 10, "log_every": 10, "batch_size": 32,
         "data.eval_examples": 512, "data.eval_batch": 256}


def get_sweep(arg=None):
  options = dict(item.partition("=")[::2] for item in (arg or "").split(",") if item)
  quick = "quick" in options
  if "lr" not in options:
    raise ValueError("scaling_mlp_fashion needs --sweep_arg 'lr' (the lr sweep) or "
                     "'lr=<tuned lr>' (the study); `python -m analysis.study mlp_fashion` runs both")
  if options["lr"] == "":
    runs = product(**{"arg": ["kind=dense,layers=all_but_last"], "model.width": [BASE_WIDTH],
                      "optim.lr": list(LRS)})
  else:
    runs = []   # smallest widths of every family first: a study cut short still has them all
    for rank in range(2 if quick else 5):
      for family, widths in FAMILIES.items():
        runs.append({"arg": f"{family},layers=all_but_last", "model.width": widths[rank],
                     "optim.lr": float(options["lr"])})
  for run in runs:
    run.update({"steps": STEPS, "eval_every": EVAL_EVERY, "log_every": EVAL_EVERY,
                "checkpoint_every": 500, "wandb.mode": "disabled", "mesh.data": 1})
    if quick:
      run.update({**QUICK, "checkpoint_every": 0})
  return runs
