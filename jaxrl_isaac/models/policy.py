"""The interface every RL policy implements (the baseline actor-critic now, GR00T N1.5 next).

The runner only talks to a policy through these calls, so swapping the model needs no runner change:

* ``read_obs(policy_group) -> dict[str, torch.Tensor]``: picks and packs the env terms the model needs, on the
  torch side (the simulator's device); each returned tensor is freshly allocated, so JAX may alias it.
* ``init(rng, obs) -> params``.
* ``sample(params, obs, rng) -> PolicySample``: stochastic actions for a rollout, with the log-prob and value
  and ``train_inputs``: whatever ``evaluate`` needs to recompute exactly the same log-prob later (for the
  baseline the raw Gaussian sample; for GR00T the denoising chain and the chosen step).
* ``evaluate(params, obs, train_inputs) -> PolicyEval``: log-prob, value and entropy under new params.
* ``act(params, obs) -> actions``: the deterministic (eval-mode) action chunk.
* ``value(params, obs) -> [B]``.

``obs`` is a dict of arrays with a leading batch axis B; actions are [B, num_action_chunks, action_dim].
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Protocol

import jax
import torch


class PolicySample(NamedTuple):
    actions: jax.Array        # [B, C, A] float32, what the env executes (after any clipping)
    logprob: jax.Array        # [B] float32 (chunk_level) or [B, C, A] (action_level)
    value: jax.Array          # [B] float32
    train_inputs: Any         # pytree with leading axis B


class PolicyEval(NamedTuple):
    logprob: jax.Array
    value: jax.Array
    entropy: jax.Array        # [B] float32


class Policy(Protocol):
    action_dim: int
    num_action_chunks: int

    def read_obs(self, policy_group: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def init(self, rng: jax.Array, obs: Mapping[str, jax.Array]) -> Any: ...

    def sample(self, params: Any, obs: Mapping[str, jax.Array], rng: jax.Array) -> PolicySample: ...

    def evaluate(self, params: Any, obs: Mapping[str, jax.Array], train_inputs: Any) -> PolicyEval: ...

    def act(self, params: Any, obs: Mapping[str, jax.Array]) -> jax.Array: ...

    def value(self, params: Any, obs: Mapping[str, jax.Array]) -> jax.Array: ...

    def is_value_param(self, path: tuple[str, ...]) -> bool:
        """Whether a parameter (by its pytree path) belongs to the value head (trained with value_lr)."""
        ...
