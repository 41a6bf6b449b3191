"""Advantage estimation over chunk-level steps (RLinf's embodied layout, time-major).

Shapes follow RLinf's actor batch: T chunk steps (one policy call each), B trajectories (envs x rollout
epochs), C env sub-steps per chunk. ``dones[0]`` is the done flag *before* the first chunk (always 0 after a
reset) and ``dones[t + 1]`` says that chunk t ended an episode, so ``dones`` and ``values`` have T + 1 rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def chunk_level(rewards: jax.Array, dones: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Collapse the sub-step axis: rewards are summed within a chunk, a chunk is done if any sub-step is.

    Args:
      rewards: [T, B, C] float.
      dones: [T + 1, B, C] bool.
    Returns:
      rewards [T, B] float32, dones [T + 1, B] bool.
    """
    return rewards.astype(jnp.float32).sum(-1), dones.any(-1)


def loss_mask_from_dones(dones: jax.Array) -> jax.Array:
    """Chunks that belong to the first episode of each trajectory (RLinf's mask with auto_reset=False).

    A chunk t is valid iff no episode ended in chunks 0..t-1; the chunk in which the episode ends is valid,
    everything the (internally reset) env does afterwards in the same rollout epoch is not.

    Args:
      dones: [T + 1, B] bool, chunk-level.
    Returns:
      [T, B] bool.
    """
    ended_before = jnp.cumsum(dones[:-1].astype(jnp.int32), axis=0)
    return ended_before == 0


def gae(rewards: jax.Array, values: jax.Array, dones: jax.Array, gamma: float, gae_lambda: float
        ) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation as a reverse ``lax.scan`` (purejaxrl style).

    ``delta_t = r_t + gamma * V_{t+1} * (1 - d_{t+1}) - V_t`` and
    ``A_t = delta_t + gamma * lambda * (1 - d_{t+1}) * A_{t+1}``; returns ``R_t = A_t + V_t``.
    A done (termination or time limit) cuts the bootstrap, as RLinf does with auto_reset=False.

    Args:
      rewards: [T, B] float.
      values: [T + 1, B] float; values[T] is the value of the observation after the last chunk.
      dones: [T + 1, B] bool.
    Returns:
      advantages [T, B], returns [T, B] (float32).
    """
    rewards = rewards.astype(jnp.float32)
    values = values.astype(jnp.float32)
    not_done_next = 1.0 - dones[1:].astype(jnp.float32)

    def backward(next_advantage, step):
        reward, value, next_value, not_done = step
        delta = reward + gamma * next_value * not_done - value
        advantage = delta + gamma * gae_lambda * not_done * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(
        backward, jnp.zeros_like(rewards[0]), (rewards, values[:-1], values[1:], not_done_next), reverse=True)
    return advantages, advantages + values[:-1]


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    mask = mask.astype(jnp.float32)
    return (x * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def trajectory_loss_weights(mask: jax.Array) -> jax.Array:
    """RLinf's ``masked_mean_ratio`` weights: [T, B] mask -> [T, B] float32 weights T / L_b, L_b = valid chunk steps
    of trajectory b (at least 1). Averaging ``x * mask * weight`` over all entries gives every trajectory the same
    total weight whatever its length (short, e.g. successful, episodes count as much as full ones).

    RLinf divides by ``loss_mask_sum / max_episode_steps``; with its IsaacLab configs (one episode per rollout
    epoch, ``max_steps_per_rollout_epoch == max_episode_steps``) that is this ratio in chunk steps."""
    valid = mask.astype(jnp.float32).sum(0, keepdims=True)  # [1, B]
    return jnp.broadcast_to(mask.shape[0] / jnp.maximum(valid, 1.0), mask.shape).astype(jnp.float32)


def masked_mean_ratio(x: jax.Array, mask: jax.Array, weight: jax.Array) -> jax.Array:
    """mean over ALL entries of x * mask * weight (RLinf's ``masked_mean_ratio``; ``weight`` from
    ``trajectory_loss_weights``)."""
    return jnp.mean(x * mask.astype(jnp.float32) * weight)


def masked_normalize(x: jax.Array, mask: jax.Array, eps: float = 1e-5) -> jax.Array:
    """(x - mean) / (std + eps) over the masked entries; std is unbiased, as torch.std. Masked-out entries -> 0."""
    maskf = mask.astype(jnp.float32)
    count = jnp.maximum(maskf.sum(), 1.0)
    mean = (x * maskf).sum() / count
    var = (jnp.square(x - mean) * maskf).sum() / jnp.maximum(count - 1.0, 1.0)
    return jnp.where(mask, (x - mean) / (jnp.sqrt(var) + eps), 0.0)


def grpo_advantages(scores: jax.Array, group_size: int, eps: float = 1e-6) -> jax.Array:
    """Group-relative advantages: (score - group mean) / (group std + eps), unbiased std as torch.

    Args:
      scores: [B] float, one score per trajectory; groups are ``group_size`` consecutive trajectories.
    Returns:
      [B] float32.
    """
    grouped = scores.astype(jnp.float32).reshape(-1, group_size)
    mean = grouped.mean(-1, keepdims=True)
    std = grouped.std(-1, keepdims=True, ddof=1)
    return ((grouped - mean) / (std + eps)).reshape(-1)
