"""PPO losses and their diagnostics (RLinf's embodied actor-critic loss, with its value_clip_ratio fixed).

All functions take flat per-sample arrays [M] (one sample = one chunk step of one trajectory) and a boolean
mask [M]; masked-out samples contribute nothing. The losses average over the valid samples (``masked_mean``), or,
given per-sample trajectory weights [M], over all entries with those weights (RLinf's ``masked_mean_ratio``).
Diagnostics are always masked means. Pure functions, checked against numpy in tests.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_isaac.algorithms.advantages import masked_mean, masked_mean_ratio


def _aggregate(per_sample: jax.Array, mask: jax.Array, weight: jax.Array | None) -> jax.Array:
    return masked_mean(per_sample, mask) if weight is None else masked_mean_ratio(per_sample, mask, weight)


class ActorLossOut(NamedTuple):
    loss: jax.Array            # scalar
    approx_kl: jax.Array       # mean(logp_old - logp_new), the k1 estimator RLinf logs
    clipfrac: jax.Array        # fraction of samples whose clipped objective was the active one
    ratio_mean: jax.Array


class ValueLossOut(NamedTuple):
    loss: jax.Array
    clip_ratio: jax.Array      # fraction of samples whose value prediction was actually clipped
    explained_variance: jax.Array


def ppo_actor_loss(logp_new: jax.Array, logp_old: jax.Array, advantages: jax.Array, mask: jax.Array, *,
                   clip_ratio_low: float, clip_ratio_high: float, clip_ratio_c: float | None = None,
                   weight: jax.Array | None = None) -> ActorLossOut:
    """Clipped surrogate with an asymmetric ratio range [1 - low, 1 + high] and optional dual clip.

    Dual clip (Ye et al. 2020): for negative advantages the loss is capped at ``clip_ratio_c * |A|``.
    """
    log_ratio = logp_new - logp_old
    ratio = jnp.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    per_sample = jnp.maximum(unclipped, clipped)
    if clip_ratio_c is not None:
        per_sample = jnp.where(advantages < 0, jnp.minimum(per_sample, -advantages * clip_ratio_c), per_sample)
    return ActorLossOut(
        loss=_aggregate(per_sample, mask, weight),
        approx_kl=masked_mean(-log_ratio, mask),
        clipfrac=masked_mean((clipped > unclipped).astype(jnp.float32), mask),
        ratio_mean=masked_mean(ratio, mask),
    )


def huber(x: jax.Array, delta: float) -> jax.Array:
    """torch.nn.functional.huber_loss(reduction='none') of a residual x."""
    abs_x = jnp.abs(x)
    return jnp.where(abs_x <= delta, 0.5 * jnp.square(x), delta * (abs_x - 0.5 * delta))


def clipped_value_loss(values: jax.Array, values_old: jax.Array, returns: jax.Array, mask: jax.Array, *,
                       value_clip: float, huber_delta: float | None,
                       weight: jax.Array | None = None) -> ValueLossOut:
    """max(l(R - V), l(R - V_clip)) with V_clip = V_old + clip(V - V_old, -c, c); l = Huber(delta) or 0.5 x^2.

    ``clip_ratio`` counts samples with |V - V_old| > c, i.e. those whose prediction the clip actually moved.
    (RLinf measures it on the already-clamped difference, so its value_clip_ratio is always 0.)
    """
    diff = values - values_old
    values_clipped = values_old + jnp.clip(diff, -value_clip, value_clip)
    if huber_delta is None:
        loss_fn = lambda r: 0.5 * jnp.square(r)  # noqa: E731
    else:
        loss_fn = lambda r: huber(r, huber_delta)  # noqa: E731
    per_sample = jnp.maximum(loss_fn(returns - values), loss_fn(returns - values_clipped))
    return ValueLossOut(
        loss=_aggregate(per_sample, mask, weight),
        clip_ratio=masked_mean((jnp.abs(diff) > value_clip).astype(jnp.float32), mask),
        explained_variance=explained_variance(values, returns, mask),
    )


def explained_variance(values: jax.Array, returns: jax.Array, mask: jax.Array) -> jax.Array:
    """1 - Var[R - V] / Var[R] over masked samples (0 when Var[R] is 0)."""
    mean_r = masked_mean(returns, mask)
    var_r = masked_mean(jnp.square(returns - mean_r), mask)
    resid = returns - values
    mean_e = masked_mean(resid, mask)
    var_e = masked_mean(jnp.square(resid - mean_e), mask)
    return jnp.where(var_r > 0, 1.0 - var_e / jnp.where(var_r > 0, var_r, 1.0), 0.0)
