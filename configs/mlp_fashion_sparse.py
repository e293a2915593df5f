"""python -m experiments.main --config configs/mlp_fashion_sparse.py:method=rigl,density=0.1 --workdir /tmp/rigl

The Fashion-MNIST MLP (configs/mlp_fashion.py) with moving-mask sparse feed-forward layers:
``method`` (none = dense, static, gmp, set, rigl, srste, spdf) at a global ``density`` of the
FFN weights (uniform or ERK ``distribution``); srste trains 2:4 nm_sparse layers (``n``, ``m``).
Other arg keys are mlp_fashion's (width, depth, layers, param, runlocal) or structure
hyperparameters (``block`` for block masks). Windows follow the papers as fractions of training:
GMP prunes from 25% to 75% ("The Journey Matters"), SET/RigL update every ``delta_t`` steps
until 75% (RigL), SPDF lifts the mask at 75%.
"""

from configs import common, mlp_fashion, structure

SPARSITY_KEYS = {"method": "rigl", "density": 0.1, "distribution": "uniform", "delta_t": 25}
WINDOWS = {"gmp": dict(start_frac=0.25, end_frac=0.75), "spdf": dict(switch_frac=0.75),
           "srste": dict(delta_t=1, start_frac=0.0, end_frac=1.0)}


def get_config(arg=None):
  given = structure.parse_pairs(arg)
  keys = {k: given.pop(k, default) for k, default in SPARSITY_KEYS.items()}
  kind = {"none": "dense", "srste": "nm_sparse"}.get(keys["method"], "sparse")
  if kind == "sparse":
    given.setdefault("density", keys["density"])   # the base model's muP fans at the same density
  if kind == "nm_sparse":
    given.setdefault("n", 2)
    given.setdefault("m", 4)
  config = mlp_fashion.get_config(",".join(
      [f"kind={kind}"] + [k if v is True else f"{k}={v}" for k, v in given.items()]))
  config.steps, config.log_every, config.eval_every, config.checkpoint_every = 400, 25, 400, 0
  config.sparsity = common.sparsity(**keys)
  config.sparsity.update(WINDOWS.get(keys["method"], {}))
  if given.get("runlocal"):
    config.steps, config.log_every = 40, 5
    config.sparsity.delta_t = min(config.sparsity.delta_t, 5)
  return config
