"""python -m experiments.main --config configs/mlp_fashion.py:kind=btt,rank=1 --workdir /tmp/fashion

The Compute Better Spent residual MLP on Fashion-MNIST (offline: Debian's
dataset-fashion-mnist, `make data`; `--config.data.source=tfds` reads a tfds array_record copy
under data.dir instead), cross-entropy, eval accuracy on the 10k test images.
Arg keys: kind, width, depth, layers, param, runlocal; others are structure hyperparameters.
"""

from configs import common



def get_config(arg=None):
  arg = common.parse_arg(arg, kind="dense", width=256, depth=2, layers="ffn", param="mup",
                         runlocal=False)
  config = common.run(steps=3000, batch_size=128, log_every=100, eval_every=1000,
                      checkpoint_every=1000)
  config.data = common.image_data("fashion_mnist", source="idx", image_size=0, eval_batch=2000)
  config.model = common.model("mlp", arg, width=arg.width, depth=arg.depth, expansion=4,
                              layers=arg.layers, use_bias=True)
  config.optim = common.optim(lr=1e-3, warmup_steps=100, weight_decay=1e-4)
  config.mup = common.mup(arg.param, base_width=64)
  config.mesh = common.mesh()
  config.wandb = common.wandb()
  if arg.runlocal:
    config.steps, config.batch_size, config.log_every, config.eval_every = 30, 32, 10, 30
    config.checkpoint_every = 0
    config.model.width = 64
    config.wandb.mode = "disabled"
  return config
