"""Stochastic transitions and exact log-probs for a flow-matching sampler (RLinf's ``rl_head_config`` for GR00T).

GR00T's time convention: t = 0 is noise, t = 1 is data, ``v`` predicts ``data - noise``, and inference integrates
``x_{k+1} = x_k + v_k / K`` on the grid ``t_k = k / K`` (K = ``denoising_steps``, 4 in RLinf). To get a policy
with a density, RLinf replaces one (or every) Euler step by a Gaussian transition whose mean and std come from
the same velocity (docs/gr00t_n15_spec.md §5.4, docs/rlinf_embodied_spec.md §5.3). With
``x0_pred = x_t - v t`` (noise estimate), ``x1_pred = x_t + v (1 - t)`` (data estimate) and Δ = t_{k+1} - t_k:

  flow_sde    σ_k  = a · sqrt((1 - t_k) / max(t_k, t_1))           (t_0 = 0 would divide by zero: RLinf uses t_1)
              mean = x0_pred · (1 - (t + Δ) - σ_k² Δ / (2 (1 - t))) + x1_pred · (t + Δ)
              std  = sqrt(Δ) · σ_k                                   (a = 0.5, K = 4: 0.5, 0.433, 0.25, 0.144)
  flow_cps    mean = x0_pred · (1 - (t + Δ)) · cos(πa/2) + x1_pred · (t + Δ),  std = (1 - (t + Δ)) · sin(πa/2)
  flow_noise  mean = the Euler step, std = a learned per-element std (``reinflow`` in RLinf's N1.5 code)

A deterministic step is the plain Euler step ``x + v / K`` (what ``FlowmatchingActionHead.get_action`` does; equal
to RLinf's ``x0_pred (1 - t - Δ) + x1_pred (t + Δ)`` up to rounding). Everything here is float32 whatever the
model's compute dtype (RLinf computes the log-density in bf16; we do not, so that the PPO ratio at the rollout
params is 1 up to float32 rounding).

Pure functions of arrays; ``tests/test_flow_sde.py`` checks them against an independent numpy implementation.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# "reinflow" is the name RLinf's N1.5 code uses for the learned-noise head; RLinf's docs call it "flow-noise".
NOISE_METHODS = ("flow_sde", "flow_cps", "flow_noise", "reinflow")
LEARNED_NOISE_METHODS = ("flow_noise", "reinflow")
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def check_noise_method(noise_method: str) -> None:
    if noise_method not in NOISE_METHODS:
        raise ValueError(f"rl_head_config.noise_method={noise_method!r} is not one of {NOISE_METHODS}")


def time_grid(num_steps: int) -> np.ndarray:
    """t_k = k / K for k = 0..K, float32 (RLinf's ``torch.linspace(0, 1, K + 1)``). Returns (K + 1,)."""
    if num_steps < 1:
        raise ValueError(f"denoising_steps={num_steps} must be >= 1")
    return (np.arange(num_steps + 1, dtype=np.float64) / num_steps).astype(np.float32)


def flow_sde_sigmas(num_steps: int, noise_level: float) -> np.ndarray:
    """σ_k = a · sqrt((1 - t_k) / max(t_k, t_1)), k = 0..K-1, float32 (K,).

    At t_0 = 0 the SDE's σ = a·sqrt((1 - t)/t) is infinite; RLinf divides by t_1 there instead, which makes the
    first step's σ equal to a · sqrt(K) (1.0 for a = 0.5, K = 4): finite, and the largest of the chain.
    """
    t = time_grid(num_steps).astype(np.float64)
    denominator = np.where(t == 0, t[1], t)
    return (noise_level * np.sqrt((1.0 - t) / denominator))[:-1].astype(np.float32)


def euler_step(x_t: Array, velocity: Array, num_steps: int) -> Array:
    """The deterministic step x + v / K (float32)."""
    return x_t + velocity * (1.0 / num_steps)


def stochastic_transition(x_t: Array, velocity: Array, step: Array, *, num_steps: int, noise_method: str,
                          noise_level: float, learned_std: Array | None = None) -> tuple[Array, Array]:
    """Mean and std of the Gaussian that replaces Euler step ``step`` (see the module docstring).

    Args:
      x_t, velocity: (B, H, D) float32, the chain state at t_step and the network's velocity there.
      step: (B,) int, the denoising step index k in [0, K).
      learned_std: (B, H, D), required for the learned-noise methods.
    Returns:
      (mean, std), both (B, H, D) float32. ``std`` may be 0 (flow_cps at its last step).
    """
    check_noise_method(noise_method)
    grid = jnp.asarray(time_grid(num_steps))
    t = grid[step][:, None, None]
    delta = (grid[step + 1] - grid[step])[:, None, None]
    x0_pred = x_t - velocity * t
    x1_pred = x_t + velocity * (1.0 - t)
    if noise_method == "flow_sde":
        sigma = jnp.asarray(flow_sde_sigmas(num_steps, noise_level))[step][:, None, None]
        mean = x0_pred * (1.0 - (t + delta) - sigma ** 2 * delta / (2.0 * (1.0 - t))) + x1_pred * (t + delta)
        std = jnp.sqrt(delta) * sigma
    elif noise_method == "flow_cps":
        angle = math.pi * noise_level / 2.0
        mean = x0_pred * (1.0 - (t + delta)) * math.cos(angle) + x1_pred * (t + delta)
        std = (1.0 - (t + delta)) * math.sin(angle)
    else:
        if learned_std is None:
            raise ValueError(f"noise_method={noise_method!r} needs the learned noise std")
        mean = x0_pred * (1.0 - (t + delta)) + x1_pred * (t + delta)
        std = learned_std.astype(jnp.float32)
    return mean, jnp.broadcast_to(std, mean.shape)


def gaussian_logprob(x: Array, mean: Array, std: Array) -> Array:
    """Element-wise log N(x; mean, std²); 0 where std == 0 (RLinf's default ``get_logprob_norm``)."""
    zero = std == 0
    safe_std = jnp.where(zero, 1.0, std)
    logp = -0.5 * jnp.square((x - mean) / safe_std) - jnp.log(safe_std) - _HALF_LOG_2PI
    return jnp.where(zero, 0.0, logp)


def gaussian_entropy(std: Array) -> Array:
    """Element-wise differential entropy 0.5 · log(2πe σ²) of N(·, σ²); 0 where σ == 0 (a point mass)."""
    zero = std == 0
    return jnp.where(zero, 0.0, 0.5 + _HALF_LOG_2PI + jnp.log(jnp.where(zero, 1.0, std)))


def sample_denoise_steps(rng: Array, batch: int, num_steps: int, ignore_last: bool) -> Array:
    """The stochastic step of each sample, uniform over [0, K) or [0, K - 1) with ``ignore_last``. Returns (B,)
    int32. (RLinf draws one k for the whole batch with Python's ``random``; per sample is the same marginal.)"""
    high = num_steps - 1 if ignore_last else num_steps
    if high < 1:
        raise ValueError(f"ignore_last=True needs denoising_steps >= 2, got {num_steps}")
    return jax.random.randint(rng, (batch,), 0, high, dtype=jnp.int32)


def executed_elements(x: Array, num_action_chunks: int, action_dim: int) -> Array:
    """(..., H, D_model) -> (..., C, A): the executed chunk steps and the real (unpadded) action dims, the only
    elements that enter the log-prob (RLinf slices ``[:, :num_action_chunks, :valid_action_dim]``)."""
    return x[..., :num_action_chunks, :action_dim]
