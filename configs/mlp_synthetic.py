"""python -m experiments.main --config configs/mlp_synthetic.py:kind=btt,rank=1 --workdir /tmp/run

Student MLPs on the synthetic teacher-student regression of the einsum-search paper (a fixed
random ReLU MLP teacher, fresh samples every step, MSE). Arg keys: kind, width, depth,
layers, param (mup|standard), runlocal; any other key is a hyperparameter of the structure
family (e.g. rank=2).
"""

import ml_collections

from configs import common



def get_config(arg=None):
  arg = common.parse_arg(arg, kind="dense", width=64, depth=3, layers="ffn",
                         param="mup", runlocal=False)
  config = common.run(steps=1000, batch_size=128, log_every=50, eval_every=100,
                      checkpoint_every=500)
  config.data = ml_collections.ConfigDict(dict(
      name="teacher", d_in=16, d_out=4, width=256, depth=4, seed_offset=1000, eval_examples=4096))
  config.model = common.model("mlp", arg, width=arg.width, depth=arg.depth, expansion=4,
                              layers=arg.layers, use_bias=True)
  config.optim = common.optim(lr=3e-3, warmup_steps=50)
  config.mup = common.mup(arg.param, base_width=64)
  config.mesh = common.mesh()
  config.wandb = common.wandb()
  if arg.runlocal:
    config.steps, config.batch_size, config.log_every, config.eval_every = 20, 32, 5, 10
    config.checkpoint_every = 10
    config.data.eval_examples = 256
    config.wandb.mode = "disabled"
  return config
