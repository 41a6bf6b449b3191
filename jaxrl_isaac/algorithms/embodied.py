"""From a collected rollout to per-sample training targets (RLinf's compute_advantages_and_returns).

Input is a time-major ``Trajectory`` (T chunk steps, B = rollout_epoch x num_envs trajectories, C sub-steps per
chunk); output is a flat batch of M = T x B samples plus rollout metrics. Pure and jit-able.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxrl_isaac.algorithms import advantages as adv_lib
from jaxrl_isaac.algorithms.ppo import explained_variance


@struct.dataclass
class Trajectory:
    obs: Any              # pytree of [T, B, ...]: what the policy saw at each chunk step
    train_inputs: Any     # pytree of [T, B, ...]: PolicySample.train_inputs
    logprobs: jax.Array   # [T, B] rollout-time log-probs (chunk_level)
    values: jax.Array     # [T + 1, B] rollout-time values; row T is V(obs after the last chunk)
    rewards: jax.Array    # [T, B, C]
    dones: jax.Array      # [T + 1, B, C] bool; row 0 is all False (state right after a reset)


LOSS_AGGS = ("masked_mean", "masked_mean_ratio")


@dataclasses.dataclass(frozen=True)
class AdvantageSettings:
    adv_type: str = "gae"             # "gae" (PPO) or "grpo"
    gamma: float = 0.99               # per chunk step
    gae_lambda: float = 0.95
    normalize_advantages: bool = True
    use_loss_mask: bool = True        # auto_reset=False and ignore_terminations=False, as RLinf
    group_size: int = 1               # GRPO: consecutive trajectories sharing a reset state
    filter_rewards: bool = False
    rewards_lower_bound: float = 0.1
    rewards_upper_bound: float = 0.9
    loss_agg: str = "masked_mean"     # or "masked_mean_ratio" (RLinf's aggregation with a loss mask)


def compute_advantages_and_returns(traj: Trajectory, s: AdvantageSettings) -> tuple[dict, dict]:
    """Returns (flat batch of M = T*B samples, rollout metrics).

    The batch holds ``obs``, ``train_inputs``, ``logprob``, ``value`` (rollout-time), ``advantages``,
    ``returns``, ``mask`` (bool: the sample counts in the loss) and ``loss_weight`` (float32: RLinf's
    ``masked_mean_ratio`` weight of the sample's trajectory, or 1 with ``loss_agg="masked_mean"``).
    """
    if s.loss_agg not in LOSS_AGGS:
        raise ValueError(f"algorithm.loss_agg={s.loss_agg!r} is not one of {LOSS_AGGS}")
    rewards, dones = adv_lib.chunk_level(traj.rewards, traj.dones)  # [T, B], [T + 1, B]
    T, B = rewards.shape
    if s.use_loss_mask:
        mask = adv_lib.loss_mask_from_dones(dones)
    else:
        mask = jnp.ones((T, B), bool)

    if s.adv_type == "gae":
        advantages, returns = adv_lib.gae(rewards, traj.values, dones, s.gamma, s.gae_lambda)
        if s.normalize_advantages:
            advantages = adv_lib.masked_normalize(advantages, mask)
    elif s.adv_type == "grpo":
        # Score = return of the first episode in the window (rewards under the loss mask), as RLinf's
        # calculate_scores; every valid step of a trajectory gets its trajectory's group-relative advantage.
        scores = (rewards * mask).sum(0)  # [B]
        advantages = jnp.broadcast_to(adv_lib.grpo_advantages(scores, s.group_size)[None], (T, B))
        returns = jnp.broadcast_to(scores[None], (T, B))
        if s.filter_rewards:
            group_mean = scores.reshape(-1, s.group_size).mean(-1)
            keep = (group_mean >= s.rewards_lower_bound) & (group_mean <= s.rewards_upper_bound)
            mask = mask & jnp.repeat(keep, s.group_size)[None]
        advantages = jnp.where(mask, advantages, 0.0)
    else:
        raise ValueError(f"algorithm.adv_type={s.adv_type!r} is not one of 'gae', 'grpo'")

    flat = lambda x: x.reshape(T * B, *x.shape[2:])  # noqa: E731
    batch = {
        "obs": jax.tree.map(flat, traj.obs),
        "train_inputs": jax.tree.map(flat, traj.train_inputs),
        "logprob": flat(traj.logprobs),
        "value": flat(traj.values[:-1]),
        "advantages": flat(advantages),
        "returns": flat(returns),
        "mask": flat(mask),
        "loss_weight": flat(adv_lib.trajectory_loss_weights(mask) if s.loss_agg == "masked_mean_ratio"
                            else jnp.ones((T, B), jnp.float32)),
    }
    metrics = {
        "rollout/rewards": adv_lib.masked_mean(rewards, mask),
        "rollout/returns_mean": adv_lib.masked_mean(returns, mask),
        "rollout/returns_max": jnp.max(jnp.where(mask, returns, -jnp.inf)),
        "rollout/returns_min": jnp.min(jnp.where(mask, returns, jnp.inf)),
        "rollout/advantages_mean": adv_lib.masked_mean(advantages, mask),
        "rollout/advantages_max": jnp.max(jnp.where(mask, advantages, -jnp.inf)),
        "rollout/advantages_min": jnp.min(jnp.where(mask, advantages, jnp.inf)),
        "rollout/values_mean": adv_lib.masked_mean(traj.values[:-1], mask),
        # Over the whole rollout with the rollout-time values (cleanrl's explained_var); actor/explained_variance
        # is the mean over minibatches, where a minibatch of near-equal returns can make it hugely negative.
        "rollout/explained_variance": explained_variance(traj.values[:-1], returns, mask),
        "rollout/valid_fraction": mask.mean(),
    }
    return batch, metrics
