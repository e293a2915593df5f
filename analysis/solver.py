"""Batched L-BFGS on the summed, weighted Huber loss between predicted and observed log-loss.

Every problem of a fit (each start of a multi-start grid, times each bootstrap resample
expressed as per-point weights) runs in one jitted, batch-first L-BFGS loop, so a 4,500-start
grid or 1,000 bootstrap refits are one call. Float64 throughout: the Epoch
objective is ~1e-3 summed over 240 points and float32 cannot resolve its optimum.
The loss is **summed**, never averaged, and the loop stops only on a tiny gradient, no
progress, or ``max_iter``: averaging and early stopping are what biased Chinchilla's
Approach 3 (Besiroglu et al. 2024).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

HUBER_DELTA = 1e-3
GTOL = 1e-9    # a problem stops when its largest |gradient| falls below this ...
FTOL = 1e-15   # ... or an iteration lowers its objective by less than this, relatively
MAX_ITER = 2000


class Solution(NamedTuple):
  """Per-problem results, leading axis = problem: parameters, objective, |grad|_inf, iterations."""

  theta_SxP: np.ndarray
  objective_S: np.ndarray
  grad_norm_S: np.ndarray
  iters_S: np.ndarray

  @property
  def converged_S(self) -> np.ndarray:
    """Stopped at a stationary point: |grad|_inf of the summed objective at most 1e-6."""
    return self.grad_norm_S <= 1e-6


def objective(predict: Callable, theta_P, x, log_loss_N, weights_N, delta: float = HUBER_DELTA):
  """sum_i w_i Huber_delta(predict(theta, x)_i - log L_i)."""
  r = predict(theta_P, x) - log_loss_N
  return jnp.sum(weights_N * optax.losses.huber_loss(r, delta=delta))


def _two_loop(g_BxP, s_BxMxP, y_BxMxP, gamma_B):
  """L-BFGS direction -H g from the memory (oldest first; all-zero pairs are no-ops)."""
  sy_BxM = jnp.sum(s_BxMxP * y_BxMxP, -1)
  rho_BxM = jnp.where(sy_BxM > 0, 1 / jnp.where(sy_BxM > 0, sy_BxM, 1), 0)
  q, alphas = g_BxP, []
  for i in reversed(range(s_BxMxP.shape[1])):
    alphas.append(rho_BxM[:, i] * jnp.sum(s_BxMxP[:, i] * q, -1))
    q = q - alphas[-1][:, None] * y_BxMxP[:, i]
  r = gamma_B[:, None] * q
  for i, a in enumerate(reversed(alphas)):
    b = rho_BxM[:, i] * jnp.sum(y_BxMxP[:, i] * r, -1)
    r = r + (a - b)[:, None] * s_BxMxP[:, i]
  return -r


@functools.partial(jax.jit, static_argnames=("predict", "memory"))
def _solve(predict, theta0_BxP, x, log_loss_N, weights_BxN, delta, max_iter, max_halvings, memory=10):
  """Batched L-BFGS with Armijo backtracking; each problem stops on its own criteria.

  Written batch-first rather than as a vmapped optax loop: vmapping optax's zoom line search
  costs ~1 ms per problem-iteration on CPU, this ~1 us.
  """
  f = jax.vmap(lambda th, w: objective(predict, th, x, log_loss_N, w, delta))
  f_and_g = jax.vmap(jax.value_and_grad(lambda th, w: objective(predict, th, x, log_loss_N, w, delta)))
  batch, n_params = theta0_BxP.shape

  def step(carry):
    theta, value, grad, s_mem, y_mem, done, k, iters = carry
    gamma = jnp.where(jnp.any(s_mem[:, -1] != 0, -1),
                      jnp.sum(s_mem[:, -1] * y_mem[:, -1], -1) / jnp.sum(y_mem[:, -1] ** 2, -1),
                      1 / jnp.maximum(jnp.max(jnp.abs(grad), -1), 1e-300))   # first step: |d| = 1
    d = _two_loop(grad, s_mem, y_mem, gamma)
    slope = jnp.sum(d * grad, -1)
    d = jnp.where((slope < 0)[:, None], d, -grad * gamma[:, None])   # not descent: steepest
    slope = jnp.sum(d * grad, -1)

    def shrink(ls):
      t, _, ok, i = ls
      t = jnp.where(ok, t, t / 2)
      new = f(theta + t[:, None] * d, weights_BxN)
      ok = ok | (new <= value + 1e-4 * t * slope)
      return t, new, ok, i + 1

    t0 = jnp.ones(batch)
    first = f(theta + d, weights_BxN)
    t, _, ok, _ = jax.lax.while_loop(lambda ls: ~jnp.all(ls[2] | done) & (ls[3] < max_halvings), shrink,
                                     (t0, first, first <= value + 1e-4 * slope, 0))
    move = ok & ~done
    new_theta = jnp.where(move[:, None], theta + t[:, None] * d, theta)
    new_value, new_grad = f_and_g(new_theta, weights_BxN)
    s_new, y_new = new_theta - theta, new_grad - grad
    keep = move & (jnp.sum(s_new * y_new, -1) > 1e-300)
    roll = lambda mem, new: jnp.where(keep[:, None, None],
                                      jnp.concatenate([mem[:, 1:], new[:, None]], 1), mem)
    small_grad = jnp.max(jnp.abs(new_grad), -1) <= GTOL * jnp.maximum(1.0, new_value)
    stalled = value - new_value <= FTOL * jnp.abs(value)
    iters = iters + ~done
    done = done | ~move | small_grad | stalled
    return new_theta, new_value, new_grad, roll(s_mem, s_new), roll(y_mem, y_new), done, k + 1, iters

  value, grad = f_and_g(theta0_BxP, weights_BxN)
  zeros = jnp.zeros((batch, memory, n_params))
  init = (theta0_BxP, value, grad, zeros, zeros, ~jnp.isfinite(value), 0, jnp.zeros(batch, int))
  theta, value, grad, *_, iters = jax.lax.while_loop(
      lambda c: ~jnp.all(c[5]) & (c[6] < max_iter), step, init)
  return theta, value, jnp.max(jnp.abs(grad), -1), iters


def minimize(predict: Callable, theta0_SxP, x, log_loss_N, weights_SxN=None,
             delta: float = HUBER_DELTA, max_iter: int = MAX_ITER, max_halvings: int = 40) -> Solution:
  """Minimises the weighted summed Huber objective from every start (row of ``theta0_SxP``).

  ``predict(theta_P, x) -> log-loss_N`` must be a jax-traceable module-level function (it is a
  static jit argument). ``weights_SxN`` (default all ones) gives each problem its own point
  weights, e.g. the run counts of a bootstrap resample.
  """
  theta0 = np.asarray(theta0_SxP, float)
  log_loss = np.asarray(log_loss_N, float)
  (s, _), n = theta0.shape, len(log_loss)
  weights = np.ones((s, n)) if weights_SxN is None else np.asarray(weights_SxN, float)
  # pad problems and points (zero-weight copies) to 8 sizes per octave: jit compiles few shapes
  s_pad, n_pad = (-v % 2 ** max(0, int(np.log2(v)) - 3) for v in (s, n))
  pad = lambda a, k, axis: np.concatenate([a, np.repeat(np.take(a, [0], axis), k, axis)], axis)
  theta0 = pad(theta0, s_pad, 0)
  weights = np.pad(pad(weights, s_pad, 0), ((0, 0), (0, n_pad)))
  log_loss = pad(log_loss, n_pad, 0)
  x = jax.tree.map(lambda a: pad(np.asarray(a, float), n_pad, 0), x)
  with jax.enable_x64(True):
    out = _solve(predict, jnp.asarray(theta0), jax.tree.map(jnp.asarray, x), jnp.asarray(log_loss),
                 jnp.asarray(weights), delta, max_iter, max_halvings)
    return Solution(*(np.asarray(a)[:s] for a in out))


def grid_objectives(predict: Callable, theta_SxP, x, log_loss_N, weights_BxN=None,
                    delta: float = HUBER_DELTA) -> np.ndarray:
  """Objective of every start under every weighting, [B, S] (one matmul, no optimisation)."""
  with jax.enable_x64(True):
    r = jax.vmap(predict, (0, None))(jnp.asarray(theta_SxP, jnp.float64), x) - log_loss_N
    h_SxN = np.asarray(optax.losses.huber_loss(r, delta=delta))
  weights = np.ones((1, h_SxN.shape[1])) if weights_BxN is None else np.asarray(weights_BxN)
  return weights @ h_SxN.T
