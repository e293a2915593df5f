"""python -m experiments.main --config configs/vit_imagenet.py:kind=btt,rank=1,width=784 --workdir /tmp/vit_i1k

Compute Better Spent's ImageNet-1k ViT-S/32 recipe (scripts/imagenet.sh, imagenet/vit32.yaml):
224 px, patch 32 (49 patches + a class token), depth 12, 4 heads as in the paper (ViT-S has
6), dense width 384 (the paper's ladder: dense 80/192/384, BTT rank 1 256/784/1936), base
width 256 with depth-muP base depth 12; 300 epochs at global batch 3072, AdamW (0.9, 0.95)
lr 2e-3, weight decay 0.05, clip 1, 5 warmup epochs then cosine to 0, mixup 0.2, label
smoothing 0.1, flips, bfloat16 compute. Images are resized (shorter side 224) and
center-cropped. Not reproduced: RandAugment, random erasing, color jitter, RandomResizedCrop.
Data: tfds ``imagenet2012`` in array_record format under data.dir (manual download, see the
error message). Arg keys: kind, width, depth, heads, patch, layers, param, epochs, runlocal.
"""

from configs import common

TRAIN_EXAMPLES = 1_281_167


def get_config(arg=None):
  arg = common.parse_arg(arg, kind="dense", width=384, depth=12, heads=4, patch=32, layers="all",
                         param="mup", epochs=300, runlocal=False)
  batch = 3072
  steps_per_epoch = TRAIN_EXAMPLES // batch
  config = common.run(steps=arg.epochs * steps_per_epoch, batch_size=batch, log_every=100,
                      eval_every=steps_per_epoch * 5, checkpoint_every=1000)
  config.data = common.image_data("imagenet2012", image_size=224, mixup_alpha=0.2,
                                   label_smoothing=0.1, read_threads=32)
  config.model = common.model(
      "vit", arg, width=arg.width, depth=arg.depth, heads=arg.heads, patch=arg.patch,
      pool="cls", expansion=4, layers=arg.layers, use_bias=True, qk_norm=True, dtype="bfloat16")
  config.optim = common.optim(lr=2e-3, b2=0.95, weight_decay=0.05, grad_clip=1.0,
                              warmup_steps=5 * steps_per_epoch)
  config.mup = common.mup(arg.param, base_width=256, base_depth=12)
  config.mesh = common.mesh()
  config.wandb = common.wandb()
  if arg.runlocal:   # seconds on CPU; the tests run it under tfds.testing.mock_data
    config.steps, config.batch_size, config.log_every, config.eval_every = 20, 16, 5, 20
    config.checkpoint_every = 0
    config.data.image_size, config.data.read_threads = 64, 4
    config.data.eval_batch, config.data.eval_examples = 16, 16
    config.model.width, config.model.depth, config.model.heads = 32, 1, 2
    config.mup.base_width, config.mup.base_depth, config.model.dtype = 32, 1, "float32"
    config.optim.warmup_steps = 5
    config.wandb.mode = "disabled"
  return config
