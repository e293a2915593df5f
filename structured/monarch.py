"""Monarch (Dao et al. 2022) with b blocks, rectangular d_in != d_out allowed.

It is exactly a 2-core BTT with factors d_in = (d_in/b) x b, d_out = b x (d_out/b) and rank
r = min(d_in, d_out)/b^2. What runs is x @ W with W = R P L: R block-diagonal with b blocks
[d_in/b, b r] (core w0), P the reshape-transpose regrouping the b r b middle features by output
block, L block-diagonal with b blocks [b r, d_out/b] (core w1). In the paper's y = M x form that
is M = L^T P^T R^T: the paper's Monarch M = P L P^T R without its final permutation P, i.e. the
same set of matrices up to a fixed permutation of the outputs, which the next layer absorbs
(applying P would cost a transpose of every output and add no expressiveness). So params =
FLOPs/2 = min(d_in, d_out) (d_in + d_out) / b, and the BTT kernel and closed-form projection
(per-slab rank-r SVD) serve it unchanged. b = sqrt(d) gives the classic rank-1
Monarch. Widths must be divisible by b and min(d_in, d_out) by b^2 (no silent padding).
"""

from flax import nnx

from structured.base import StructuredLinear, StructureError, check_int, nearest_valid
from structured.btt import BTT


class Monarch(BTT):
  kind = "monarch"

  def __init__(self, d_in: int, d_out: int, *, blocks: int = 4, impl: str = "xla",
               use_bias: bool = False, role: str = "hidden", rngs: nnx.Rngs):
    StructuredLinear.__init__(self, d_in, d_out, use_bias=use_bias, role=role, rngs=rngs)
    blocks = check_int(self.kind, "blocks", blocks, 1)
    for name, d in (("d_in", d_in), ("d_out", d_out)):
      if d % blocks or min(d_in, d_out) % blocks**2:
        ok = lambda w: w % blocks == 0 and w % blocks**2 == 0
        raise StructureError(f"monarch with blocks={blocks} needs {name}={d} divisible by {blocks} "
                             f"and min(d_in, d_out) by {blocks**2}; nearest valid widths: "
                             f"{nearest_valid(d, ok)}")
    self.blocks = blocks
    self._build(d_in // blocks, blocks, blocks, d_out // blocks, min(d_in, d_out) // blocks**2,
                impl, rngs)
