"""python -m experiments.main --config configs/gpt2_owt.py:kind=btt,rank=4,width=1024,heads=16 --workdir /tmp/gpt2_owt

Compute Better Spent's GPT-2 on OpenWebText recipe (scripts/gpt.sh, config/train_open.py):
GPT-2 BPE tokens (vocab 50257, padded to 50304), context 512, 480 sequences a step (245,760
tokens), 12 layers, heads of 64, no biases, QK-LayerNorm, untied lm_head; AdamW (0.9, 0.95)
lr 2e-3, no weight decay, clip 1, 2000 warmup steps then cosine to lr / 10, bfloat16 compute.
Dense widths 384/512/768; BTT rank 4 on every linear including the lm_head at widths
1024/1536/2048 (the paper normalized BTT cores, "btt_norm", which strux does not have).
10,000 steps as in the paper's config (its script says 600,000). Data: ``train.bin`` /
``val.bin`` under data.dir from `python scripts/prepare_owt.py --out DIR`. Arg keys: kind,
width, depth, heads, layers, param, steps, runlocal; others are structure hyperparameters.
"""

import ml_collections

from configs import common



def get_config(arg=None):
  arg = common.parse_arg(arg, kind="dense", width=768, depth=12, heads=0, layers="all",
                         param="mup", steps=10_000, runlocal=False)
  config = common.run(steps=arg.steps, batch_size=480, log_every=50, eval_every=500,
                      checkpoint_every=1000)
  config.data = ml_collections.ConfigDict(dict(
      name="tokens", dir="data/owt", vocab=50304, seq_len=512, eval_batches=20, seed_offset=0))
  config.model = common.model(
      "gpt2", arg, width=arg.width, depth=arg.depth, heads=arg.heads or arg.width // 64,
      expansion=4, layers=arg.layers, use_bias=False, qk_norm=True, tie_embeddings=False, dtype="bfloat16")
  config.optim = common.optim(lr=2e-3, b2=0.95, weight_decay=0.0, grad_clip=1.0,
                              warmup_steps=2000, final_lr_frac=0.1)
  config.mup = common.mup(arg.param, base_width=768)
  config.mesh = common.mesh()
  config.wandb = common.wandb()
  if arg.runlocal:   # seconds on CPU; point data.dir at any small train.bin / val.bin
    config.steps, config.batch_size, config.log_every, config.eval_every = 20, 8, 5, 20
    config.checkpoint_every = 0
    config.data.seq_len, config.data.eval_batches = 32, 2
    config.model.width, config.model.depth, config.model.heads = 32, 1, 2
    config.mup.base_width, config.model.dtype = 32, "float32"
    config.optim.warmup_steps = 5
    config.wandb.mode = "disabled"
  return config
