"""The byte-level GPT-2 scaling study: Compute Better Spent's GPT-2 compute-vs-loss figure at
CPU size (attention and FFN structured, the head dense, muP).

One command runs it all (lr sweep at the base width, every family at the tuned lr, analysis):

  python -m analysis.study gpt2_bytes --root runs/scaling_gpt2_bytes \
      --out benchmarks/results/scaling_gpt2_bytes --workers 2

Stages (``--sweep_arg``): 'lr' = dense at the muP base width (128) over a factor-2 lr grid;
'lr=<value>' = dense, low_rank, btt, monarch and kronecker at 5 widths each (depth 2), the tuned
lr transferred to every width and family; ',quick' shortens everything to seconds (tests), 2
widths per family. 600 steps of 32 x 128 bytes, 10 evaluations along each cosine schedule (the
frontier uses them, as the paper's figure does). Observed cost with --workers 2 on 2 idle
cores: lr stage 400 s, the 25 study runs 33 min, 39 min in all
(benchmarks/results/scaling_gpt2_bytes/README.md).
"""

from configs.sweeps import scaling_study

CONFIG = "configs/gpt2_bytes.py"

SHAPE = "depth=2,heads=2,layers=all_but_last"   # attention and FFN structured, head dense
FAMILIES = {
    f"kind=dense,{SHAPE}": (32, 48, 64, 96, 128),
    f"kind=low_rank,rank_frac=0.25,{SHAPE}": (64, 96, 128, 192, 256),
    f"kind=btt,rank=1,{SHAPE}": (64, 96, 128, 192, 256),
    f"kind=monarch,blocks=4,{SHAPE}": (64, 96, 128, 192, 256),
    f"kind=kronecker,factors=2,{SHAPE}": (64, 96, 128, 192, 256),
}
BASE = {"arg": f"kind=dense,{SHAPE}", "model.width": 128}   # configs/gpt2_bytes.py's base_width
LRS = (1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2)
COMMON = {"steps": 600, "eval_every": 60, "log_every": 60, "checkpoint_every": 300,
          "wandb.mode": "disabled", "mesh.data": 1}
QUICK = {"steps": 20, "eval_every": 5, "log_every": 5, "batch_size": 8, "checkpoint_every": 0,
         "data.seq_len": 32, "data.max_bytes": 300_000, "data.eval_batches": 2,
         "optim.warmup_steps": 5}


def get_sweep(arg=None):
  runs = scaling_study(arg, "scaling_gpt2_bytes", FAMILIES, BASE["arg"], LRS, COMMON, QUICK)
  return [{**run, "model.width": run.get("model.width", BASE["model.width"])} for run in runs]
