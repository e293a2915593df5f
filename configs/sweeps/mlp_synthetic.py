"""python -m experiments.sweep --sweep configs/sweeps/mlp_synthetic.py --root runs/mlp_synthetic

Dense, low-rank and BTT students of the synthetic teacher at four widths each: the demo's
compute-vs-loss scaling sweep. Structured widths are larger so all families span similar
compute. arg: 'quick' shortens every run (the demo uses it).
"""

from configs.sweeps import product

CONFIG = "configs/mlp_synthetic.py"

WIDTHS = {
    "kind=dense": (32, 64, 128, 256),
    "kind=low_rank,rank_frac=0.25": (64, 128, 256, 512),
    "kind=btt,rank=1": (64, 128, 256, 512),
}


def get_sweep(arg=None):
  runs = []
  for structure, widths in WIDTHS.items():
    runs += product(**{"arg": [structure], "model.width": list(widths)})
  if arg == "quick":
    for run in runs:
      run.update({"steps": 600, "eval_every": 50, "wandb.mode": "disabled"})
  return runs
