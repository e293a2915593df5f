"""python -m experiments.main --config configs/gpt2_bytes.py:kind=btt,rank=1 --workdir /tmp/gpt2_bytes

A ~1M-parameter byte-level GPT-2 on the Python standard library's sources (real text on any
machine), sized for 5 minutes on 2 CPU cores (900 steps of 32 x 128 bytes). Arg keys: kind, width, depth, heads, layers,
param, runlocal; any other key is a structure hyperparameter.
"""

import ml_collections

from configs import common



def get_config(arg=None):
  arg = common.parse_arg(arg, kind="dense", width=128, depth=4, heads=4, layers="all_but_last",
                         param="mup", runlocal=False)
  config = common.run(steps=900, batch_size=32, log_every=50, eval_every=150,
                      checkpoint_every=300)
  config.data = ml_collections.ConfigDict(dict(
      name="bytes", dir="", pattern="**/*.py", seq_len=128, max_bytes=8_000_000, eval_batches=8,
      seed_offset=0))
  config.model = common.model(
      "gpt2", arg, width=arg.width, depth=arg.depth, heads=arg.heads, expansion=4,
      layers=arg.layers, use_bias=False, qk_norm=True, tie_embeddings=False)
  config.optim = common.optim(lr=3e-3, warmup_steps=100)
  config.mup = common.mup(arg.param, base_width=128)
  config.mesh = common.mesh()
  config.wandb = common.wandb()
  if arg.runlocal:
    config.steps, config.batch_size, config.log_every, config.eval_every = 20, 8, 5, 10
    config.checkpoint_every = 10
    config.data.seq_len, config.data.max_bytes, config.data.eval_batches = 32, 300_000, 2
    config.model.width, config.model.depth, config.model.heads = 32, 1, 2
    config.mup.base_width = 32
    config.optim.warmup_steps = 5
    config.wandb.mode = "disabled"
  return config
