"""python -m experiments.main --config configs/vit_cifar.py:kind=btt,rank=1,width=256 --workdir /tmp/vit_cifar

Compute Better Spent's CIFAR-100 ViT recipe (scripts/vit.sh): depth 3, 8 heads, patch 8 on
32 x 32 images (16 patches + a class token), base width 64; 200 epochs at batch 256, Adam lr
1e-3, cosine, label smoothing 0.3, mixup 0.8, random crop (pad 4) and flips, as for the CIFAR
MLP. Data: tfds ``cifar100`` (or ``cifar10``) in array_record format under data.dir. Arg keys:
dataset, kind, width, depth, heads, patch, layers, param, epochs, runlocal; others are
structure hyperparameters (the paper: low_rank rank_frac=0.1 on layers=intermediate, tt rank 8).
"""

from configs import common

TRAIN_EXAMPLES = 50_000


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="cifar100", kind="dense", width=256, depth=3, heads=8,
                         patch=8, layers="all_but_last", param="mup", epochs=200, runlocal=False)
  batch = 256
  config = common.run(steps=arg.epochs * TRAIN_EXAMPLES // batch, batch_size=batch,
                      log_every=100, eval_every=2000, checkpoint_every=2000)
  config.data = common.image_data(arg.dataset, crop=4, mixup_alpha=0.8, label_smoothing=0.3)
  config.model = common.model(
      "vit", arg, width=arg.width, depth=arg.depth, heads=arg.heads, patch=arg.patch,
      pool="cls", expansion=4, layers=arg.layers, use_bias=True, qk_norm=True)
  config.optim = common.optim(lr=1e-3, name="adam", warmup_steps=0, grad_clip=0.0)
  config.mup = common.mup(arg.param, base_width=64)
  config.mesh = common.mesh()
  config.wandb = common.wandb()
  if arg.runlocal:   # seconds on CPU; the tests run it under tfds.testing.mock_data
    config.steps, config.batch_size, config.log_every, config.eval_every = 20, 32, 5, 20
    config.checkpoint_every = 0
    config.data.eval_batch, config.data.eval_examples = 16, 16
    config.model.width, config.model.depth, config.model.heads = 32, 1, 2
    config.mup.base_width = 32
    config.wandb.mode = "disabled"
  return config
