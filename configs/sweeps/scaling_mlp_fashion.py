"""The Fashion-MNIST MLP scaling study (CPU stand-in for Compute Better Spent's CIFAR MLP figure).

One command runs it all (lr sweep at the base width, every family at the tuned lr, analysis):

  python -m analysis.study mlp_fashion --root runs/scaling_mlp_fashion \
      --out benchmarks/results/scaling_mlp_fashion --workers 2

Stages (``--sweep_arg``): 'lr' = dense at the muP base width (64) over a factor-2 lr grid;
'lr=<value>' = dense, low_rank, btt, monarch and kronecker at 5 widths each, muP, every layer
but the readout structured, the tuned lr transferred to every width and family; ',quick'
shortens everything to seconds (tests) with 2 widths per family. Every run evaluates 10 times
along its cosine schedule; the frontier uses those intermediate evaluations, as the paper's
compute-vs-loss figures do.
"""

from configs.sweeps import scaling_study

CONFIG = "configs/mlp_fashion.py"

LAYERS = "layers=all_but_last"
FAMILIES = {
    f"kind=dense,{LAYERS}": (32, 64, 128, 256, 512),
    f"kind=low_rank,rank_frac=0.25,{LAYERS}": (64, 128, 256, 512, 1024),
    f"kind=btt,rank=1,{LAYERS}": (64, 128, 256, 512, 1024),
    f"kind=monarch,blocks=4,{LAYERS}": (64, 128, 256, 512, 1024),
    f"kind=kronecker,factors=2,{LAYERS}": (64, 128, 256, 512, 1024),
}
BASE = {"arg": f"kind=dense,{LAYERS}", "model.width": 64}   # configs/mlp_fashion.py's base_width
LRS = (5e-4, 1e-3, 2e-3, 4e-3, 8e-3)
COMMON = {"steps": 1000, "eval_every": 100, "log_every": 100, "checkpoint_every": 500,
          "wandb.mode": "disabled", "mesh.data": 1}
QUICK = {"steps": 40, "eval_every": 10, "log_every": 10, "batch_size": 32, "checkpoint_every": 0,
         "data.eval_examples": 512, "data.eval_batch": 256}


def get_sweep(arg=None):
  runs = scaling_study(arg, "scaling_mlp_fashion", FAMILIES, BASE["arg"], LRS, COMMON, QUICK)
  return [{**run, "model.width": run.get("model.width", BASE["model.width"])} for run in runs]
