"""python -m experiments.main --config configs/mlp_cifar.py:kind=btt,rank=1,width=256 --workdir /tmp/mlp_cifar

Compute Better Spent's CIFAR MLP recipe (scripts/mlp.sh): 3 pre-LN residual blocks
(w -> 4w -> w, GELU), base width 64, every layer but the readout structured; 500 epochs at
batch 1024, Adam lr 3e-3 (no weight decay: the paper's "adamw" was torch Adam), cosine, no
warmup, label smoothing 0.3, mixup 0.8, random crop (pad 4; the paper used RandomResizedCrop)
and flips. Data: tfds ``cifar10``/``cifar100`` in array_record format under data.dir (`tfds
build cifar10 --data_dir=DIR --file_format=array_record`). Not reproduced: the input layer's
extra lr multiplier 0.1 and the fixed pixel permutation. Arg keys: dataset (cifar10|cifar100),
kind, width, depth, layers, param, epochs, runlocal; others are structure hyperparameters.
"""

from configs import common

TRAIN_EXAMPLES = 50_000


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset="cifar10", kind="dense", width=256, depth=3,
                         layers="all_but_last", param="mup", epochs=500, runlocal=False)
  batch = 1024
  steps = arg.epochs * TRAIN_EXAMPLES // batch
  config = common.run(steps=steps, batch_size=batch, log_every=100, eval_every=2000,
                      checkpoint_every=2000)
  config.data = common.image_data(arg.dataset, crop=4, mixup_alpha=0.8, label_smoothing=0.3)
  config.model = common.model("mlp", arg, width=arg.width, depth=arg.depth, expansion=4,
                              layers=arg.layers, use_bias=True)
  config.optim = common.optim(lr=3e-3, name="adam", warmup_steps=0, grad_clip=0.0)
  config.mup = common.mup(arg.param, base_width=64)
  config.mesh = common.mesh()
  config.wandb = common.wandb()
  if arg.runlocal:   # seconds on CPU; the tests run it under tfds.testing.mock_data
    config.steps, config.batch_size, config.log_every, config.eval_every = 20, 32, 5, 20
    config.checkpoint_every = 0
    config.data.eval_batch, config.data.eval_examples = 16, 16
    config.model.width, config.model.depth = 64, 1
    config.wandb.mode = "disabled"
  return config
