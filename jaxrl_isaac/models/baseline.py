"""The fast baseline actor-critic: a small CNN per camera + an MLP over proprio/task state, Gaussian chunks.

It stands in for GR00T wherever a test, a CPU demo or a comparison needs a policy that trains in seconds.
Per policy call it outputs a chunk of ``num_action_chunks`` actions, executed open loop, like GR00T in RLinf.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import torch

from jaxrl_isaac.models.policy import PolicyEval, PolicySample

ACTION_LOW, ACTION_HIGH = -1.0, 1.0  # executed actions are clipped to this box (log-probs use the raw sample)


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    action_dim: int = 7
    num_action_chunks: int = 5
    image_keys: tuple[str, ...] = ("table_cam", "wrist_cam")
    image_size: int = 64                       # images are resized to image_size x image_size for the CNN
    state_keys: tuple[str, ...] = ("eef_pos", "eef_quat", "gripper_pos")
    cnn_channels: tuple[int, ...] = (16, 32, 32)
    mlp_hidden: tuple[int, ...] = (256, 256)
    init_log_std: float = -0.5
    logprob_type: str = "chunk_level"          # chunk_level: sum over C x A; action_level: keep [C, A]


class _Encoder(nn.Module):
    cfg: BaselineConfig

    @nn.compact
    def __call__(self, images: Mapping[str, jax.Array], state: jax.Array) -> jax.Array:
        feats = []
        for key in self.cfg.image_keys:
            x = images[key].astype(jnp.float32) / 255.0  # [B, H, W, 3]
            if x.shape[1:3] != (self.cfg.image_size, self.cfg.image_size):
                x = jax.image.resize(x, (x.shape[0], self.cfg.image_size, self.cfg.image_size, 3), "bilinear")
            for i, ch in enumerate(self.cfg.cnn_channels):
                x = nn.relu(nn.Conv(ch, (3, 3), strides=(2, 2), name=f"{key}_conv{i}")(x))
            x = x.mean(axis=(1, 2))  # global average pool: [B, channels]
            feats.append(nn.relu(nn.Dense(128, name=f"{key}_proj")(x)))
        if state.shape[-1]:
            feats.append(nn.tanh(nn.Dense(128, name="state_proj")(state)))
        return jnp.concatenate(feats, axis=-1)


def _mlp(x: jax.Array, hidden: Sequence[int], prefix: str) -> jax.Array:
    for i, h in enumerate(hidden):
        x = nn.tanh(nn.Dense(h, kernel_init=nn.initializers.orthogonal(math.sqrt(2)), name=f"{prefix}_{i}")(x))
    return x


class ActorCriticNet(nn.Module):
    """Returns (mean [B, C, A], log_std [A], value [B])."""

    cfg: BaselineConfig

    @nn.compact
    def __call__(self, images: Mapping[str, jax.Array], state: jax.Array):
        cfg = self.cfg
        feats = _Encoder(cfg, name="encoder")(images, state)
        actor = _mlp(feats, cfg.mlp_hidden, "actor")
        mean = nn.Dense(cfg.num_action_chunks * cfg.action_dim, kernel_init=nn.initializers.orthogonal(0.01),
                        name="action_mean")(actor).reshape(-1, cfg.num_action_chunks, cfg.action_dim)
        log_std = self.param("log_std", nn.initializers.constant(cfg.init_log_std), (cfg.action_dim,))
        critic = _mlp(feats, cfg.mlp_hidden, "value_head")
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), name="value_head_out")(critic)[..., 0]
        return mean, log_std, value


def _gaussian_logprob(x: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    return -0.5 * jnp.square((x - mean) / jnp.exp(log_std)) - log_std - 0.5 * math.log(2 * math.pi)


class BaselinePolicy:
    """Implements ``jaxrl_isaac.models.policy.Policy`` with ``ActorCriticNet``."""

    def __init__(self, cfg: BaselineConfig):
        self.cfg = cfg
        self.action_dim = cfg.action_dim
        self.num_action_chunks = cfg.num_action_chunks
        self.net = ActorCriticNet(cfg)

    # ---- torch side ----
    def read_obs(self, policy_group: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [k for k in (*self.cfg.image_keys, *self.cfg.state_keys) if k not in policy_group]
        if missing:
            raise KeyError(f"the env's 'policy' observation group lacks {missing} needed by actor.model.baseline "
                           f"(it has {sorted(policy_group.keys())})")
        obs = {f"image/{k}": policy_group[k].detach().contiguous() for k in self.cfg.image_keys}
        parts = [policy_group[k].detach().float().reshape(policy_group[k].shape[0], -1) for k in self.cfg.state_keys]
        if parts:
            obs["state"] = torch.cat(parts, dim=-1)  # a fresh tensor: safe to alias from JAX
        return obs

    # ---- JAX side ----
    def _split(self, obs: Mapping[str, jax.Array]):
        images = {k: obs[f"image/{k}"] for k in self.cfg.image_keys}
        batch = next(iter(obs.values())).shape[0]
        state = obs.get("state", jnp.zeros((batch, 0), jnp.float32))
        return images, state

    def init(self, rng: jax.Array, obs: Mapping[str, jax.Array]) -> Any:
        images, state = self._split(obs)
        return self.net.init(rng, images, state)["params"]

    def _forward(self, params, obs):
        images, state = self._split(obs)
        return self.net.apply({"params": params}, images, state)

    def _reduce(self, logprob: jax.Array) -> jax.Array:
        return logprob.sum(axis=(-2, -1)) if self.cfg.logprob_type == "chunk_level" else logprob

    def sample(self, params, obs, rng) -> PolicySample:
        mean, log_std, value = self._forward(params, obs)
        raw = mean + jnp.exp(log_std) * jax.random.normal(rng, mean.shape)
        logprob = self._reduce(_gaussian_logprob(raw, mean, log_std))
        return PolicySample(actions=jnp.clip(raw, ACTION_LOW, ACTION_HIGH), logprob=logprob, value=value,
                            train_inputs={"raw_actions": raw})

    def evaluate(self, params, obs, train_inputs) -> PolicyEval:
        mean, log_std, value = self._forward(params, obs)
        logprob = self._reduce(_gaussian_logprob(train_inputs["raw_actions"], mean, log_std))
        per_dim_entropy = 0.5 + 0.5 * math.log(2 * math.pi) + log_std
        entropy = jnp.broadcast_to(per_dim_entropy.sum() * self.num_action_chunks, value.shape)
        return PolicyEval(logprob=logprob, value=value, entropy=entropy)

    def act(self, params, obs) -> jax.Array:
        mean, _, _ = self._forward(params, obs)
        return jnp.clip(mean, ACTION_LOW, ACTION_HIGH)

    def value(self, params, obs) -> jax.Array:
        return self._forward(params, obs)[2]

    @staticmethod
    def is_value_param(path: tuple[str, ...]) -> bool:
        return any(p.startswith("value_head") for p in path)
