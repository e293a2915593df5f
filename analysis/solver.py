"""Summed Huber loss between predicted and observed log-loss, minimised for a whole batch of
problems at once by Levenberg-Marquardt on iteratively reweighted least squares (numpy).

Scaling-law fits are tiny (3-5 parameters, tens to hundreds of points) and come in batches
(the starts of a grid, the refits of a bootstrap), so every iteration is a few array
operations over all problems, with no compilation (a jitted JAX solver spent 20-30 s compiling
for a sweep's first fit). Huber's IRLS weights min(1, delta/|r|) give a majorise-minimise step,
so each accepted step lowers the exact objective. The loss is **summed**, never averaged, and a
problem stops only at a tiny gradient or when a step no longer lowers its objective at machine
precision: averaging and early stopping are what biased Chinchilla's Approach 3 (Besiroglu et
al. 2024). Models are numpy functions ``model(theta, x) -> (log_pred, jacobian)`` evaluated
with ``theta`` as [P, S, 1] (S problems) giving [S, N] and [S, N, P]; ``x`` is an array or a
tuple of arrays with N rows.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

HUBER_DELTA = 1e-3
GTOL = 1e-10   # a problem stops when its largest |gradient| falls below this (x max(1, objective))
MAX_ITER = 500


class Solution(NamedTuple):
  """Per-problem results, leading axis = problem: parameters, objective, |grad|_inf, evaluations."""

  theta_SxP: np.ndarray
  objective_S: np.ndarray
  grad_norm_S: np.ndarray
  iters_S: np.ndarray

  @property
  def converged_S(self) -> np.ndarray:
    """Stopped at a stationary point: |grad|_inf of the summed objective at most 1e-6."""
    return self.grad_norm_S <= 1e-6


def huber(r, delta: float = HUBER_DELTA):
  """0.5 r^2 for |r| <= delta, delta (|r| - delta / 2) beyond (optax's ``huber_loss``)."""
  a = np.abs(r)
  return np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


def _finite(a: np.ndarray) -> np.ndarray:
  """``np.nan_to_num(a)``, without its copy and slow path where every entry is finite already
  (almost always: it ran three times per solver iteration)."""
  return a if np.isfinite(a).all() else np.nan_to_num(a)


def _evaluate(model, theta_SxP, x, log_loss_SxN, weights_SxN, delta):
  with np.errstate(all="ignore"):
    pred_SxN, jac_SxNxP = model(theta_SxP.T[..., None], x)
    r = pred_SxN - log_loss_SxN
    value = np.sum(weights_SxN * huber(r, delta), -1)
    c_SxN = weights_SxN * np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300))
    grad_SxP = np.matmul((c_SxN * r)[:, None, :], jac_SxNxP)[:, 0]   # batched matmul: numpy's
    # einsum runs multi-operand products as plain loops, several times slower
  bad = ~np.isfinite(value) | ~np.all(np.isfinite(grad_SxP), -1)
  return np.where(bad, np.inf, value), _finite(grad_SxP), _finite(c_SxN), jac_SxNxP


def _solve_damped(m_SxPxP, g_SxP):
  """-M^-1 g per problem; the pseudo-inverse where some M is singular (a flat direction)."""
  with np.errstate(all="ignore"):
    try:
      return -np.linalg.solve(m_SxPxP, g_SxP[..., None])[..., 0]
    except np.linalg.LinAlgError:
      return -(np.linalg.pinv(np.nan_to_num(m_SxPxP)) @ g_SxP[..., None])[..., 0]


def minimize(model: Callable, theta0_SxP, x, log_loss_N, weights_SxN=None,
             delta: float = HUBER_DELTA, max_iter: int = MAX_ITER) -> Solution:
  """Minimises sum_i w_i Huber(model(theta, x)_i - log L_i) from every start (row of
  ``theta0_SxP``). ``weights_SxN`` (default all ones) gives each problem its own point
  weights, e.g. a bootstrap resample's counts; ``log_loss_N`` may be [S, N], each problem its
  own observations (a parametric bootstrap)."""
  theta = np.array(theta0_SxP, float)
  s, n = len(theta), np.shape(log_loss_N)[-1]
  y = np.broadcast_to(np.asarray(log_loss_N, float), (s, n))
  w = np.ones((s, n)) if weights_SxN is None else np.asarray(weights_SxN, float)
  value, grad, c, jac = _evaluate(model, theta, x, y, w, delta)
  damping = np.full(s, 1e-3)
  done = ~np.isfinite(value)
  iters = np.zeros(s, int)
  eye = np.eye(theta.shape[1])
  for _ in range(max_iter):
    done |= np.max(np.abs(grad), -1) <= GTOL * np.maximum(1.0, value)
    if done.all():
      break
    act = ~done
    jac_act = jac[act]
    h = np.matmul((jac_act * c[act][..., None]).transpose(0, 2, 1), jac_act)   # J^T C J
    diag = np.einsum("spp->sp", h)[:, :, None] * eye + 1e-12 * eye
    step = _solve_damped(h + damping[act, None, None] * diag, grad[act])
    trial = theta[act] + _finite(step)
    t_value, t_grad, t_c, t_jac = _evaluate(model, trial, x, y[act], w[act], delta)
    better = t_value < value[act]
    stalled = ~better & (damping[act] > 1e12)   # no step, however short, lowers it: a minimum
    idx = np.nonzero(act)[0]
    up = idx[better]
    theta[up], value[up], grad[up], c[up], jac[up] = (trial[better], t_value[better],
                                                       t_grad[better], t_c[better], t_jac[better])
    damping[idx] = np.where(better, damping[idx] / 3, damping[idx] * 4)
    iters[idx] += 1
    done[idx[stalled]] = True
  return Solution(theta, value, np.max(np.abs(grad), -1), iters)


def grid_objectives(model: Callable, theta_SxP, x, log_loss_N, weights_BxN=None,
                    delta: float = HUBER_DELTA) -> np.ndarray:
  """Objective of every start under every weighting, [B, S] (no optimisation)."""
  theta = np.asarray(theta_SxP, float)
  with np.errstate(all="ignore"):
    pred_SxN = model(theta.T[..., None], x)[0]
  h_SxN = np.nan_to_num(huber(pred_SxN - np.asarray(log_loss_N, float), delta), nan=np.inf)
  weights = np.ones((1, h_SxN.shape[1])) if weights_BxN is None else np.asarray(weights_BxN)
  return weights @ h_SxN.T
