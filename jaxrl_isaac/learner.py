"""The actor update: optimizer, train state and one jitted PPO/GRPO update per global step.

Update schedule as RLinf's ``run_training``: shuffle the M samples once per global step, cut them into
M / global_batch_size minibatches (same order every epoch), run ``update_epoch`` epochs; each minibatch is
accumulated over micro-batches of ``micro_batch_size`` per data-parallel device, then one optimizer step.
A step whose gradient norm is not finite is skipped (params and optimizer state unchanged) and counted.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxrl_isaac import sharding
from jaxrl_isaac.algorithms import ppo
from jaxrl_isaac.algorithms.advantages import masked_mean
from jaxrl_isaac.models.policy import Policy


@struct.dataclass
class TrainState:
    step: jax.Array              # int32, completed global steps
    params: Any
    opt_state: Any
    skipped_updates: jax.Array   # int32, optimizer steps skipped for a non-finite gradient


@dataclasses.dataclass(frozen=True)
class OptimSettings:
    lr: float = 1e-5
    value_lr: float = 2e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    weight_decay: float = 0.01


@dataclasses.dataclass(frozen=True)
class LossSettings:
    loss_type: str = "actor_critic"     # "actor_critic" (PPO) or "actor" (GRPO: no value loss)
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    clip_ratio_c: float | None = None   # dual clip; None = off
    value_clip: float = 0.2
    huber_delta: float | None = 10.0    # None = squared error
    entropy_bonus: float = 0.0
    critic_warmup_steps: int = 0        # optimizer steps that train only the value head (RLinf's critic warm-up)
    loss_agg: str = "masked_mean"       # or "masked_mean_ratio": weight samples by batch["loss_weight"]


@dataclasses.dataclass(frozen=True)
class Schedule:
    num_samples: int          # M = T * B samples per global step
    global_batch_size: int    # samples per optimizer step
    micro_batch_size: int     # samples per device per micro-batch
    update_epoch: int

    def check(self, data_parallel: int) -> None:
        micro_global = self.micro_batch_size * data_parallel
        if self.global_batch_size % micro_global:
            raise ValueError(f"actor.global_batch_size={self.global_batch_size} must be divisible by "
                             f"actor.micro_batch_size x data-parallel devices = {micro_global}")
        if self.num_samples % self.global_batch_size:
            raise ValueError(f"the rollout has {self.num_samples} samples (chunk steps x trajectories), not "
                             f"divisible by actor.global_batch_size={self.global_batch_size}")

    def shape(self, data_parallel: int) -> tuple[int, int, int]:
        micro_global = self.micro_batch_size * data_parallel
        return self.num_samples // self.global_batch_size, self.global_batch_size // micro_global, micro_global


def make_optimizer(o: OptimSettings, is_value_param: Callable[[tuple[str, ...]], bool],
                   is_trainable_param: Callable[[tuple[str, ...]], bool] | None = None
                   ) -> optax.GradientTransformation:
    """Global-norm clip, then AdamW with a separate learning rate for the value head (RLinf's param groups).

    Parameters outside ``is_trainable_param`` (e.g. GR00T's frozen backbone) get no update at all: no weight decay
    and no Adam moments (``optax.set_to_zero``), rather than merely zero gradients.
    """

    def labels(params):
        def label(path, _):
            names = tuple(_key(p) for p in path)
            if is_trainable_param is not None and not is_trainable_param(names):
                return "frozen"
            return "value" if is_value_param(names) else "policy"
        return jax.tree_util.tree_map_with_path(label, params)

    adamw = lambda lr: optax.adamw(lr, b1=o.adam_beta1, b2=o.adam_beta2, eps=o.adam_eps,  # noqa: E731
                                   weight_decay=o.weight_decay)
    return optax.chain(optax.clip_by_global_norm(o.clip_grad), optax.multi_transform(
        {"policy": adamw(o.lr), "value": adamw(o.value_lr), "frozen": optax.set_to_zero()}, labels))


def _key(entry) -> str:
    return str(getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry))))


def init_train_state(params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      skipped_updates=jnp.zeros((), jnp.int32))


def make_update_fn(policy: Policy, tx: optax.GradientTransformation, loss: LossSettings, sched: Schedule,
                   mesh: Mesh):
    """Returns ``update(state, batch, rng) -> (state, metrics)`` jitted over ``mesh``.

    ``batch`` is the flat sample dict of ``compute_advantages_and_returns`` ([M, ...] leaves), sharded on "data".
    """
    dp = sharding.data_size(mesh)
    sched.check(dp)
    n_minibatch, n_micro, micro_global = sched.shape(dp)
    micro_spec = NamedSharding(mesh, P(None, None, sharding.DATA_AXIS))

    def loss_fn(params, mb, actor_weight):
        ev = policy.evaluate(params, mb["obs"], mb["train_inputs"])
        weight = mb["loss_weight"] if loss.loss_agg == "masked_mean_ratio" else None
        actor = ppo.ppo_actor_loss(ev.logprob, mb["logprob"], mb["advantages"], mb["mask"],
                                   clip_ratio_low=loss.clip_ratio_low, clip_ratio_high=loss.clip_ratio_high,
                                   clip_ratio_c=loss.clip_ratio_c, weight=weight)
        total = actor_weight * actor.loss
        metrics = {"actor/policy_loss": actor.loss, "actor/approx_kl": actor.approx_kl,
                   "actor/pg_clipfrac": actor.clipfrac, "actor/ratio": actor.ratio_mean,
                   "actor/entropy": masked_mean(ev.entropy, mb["mask"])}
        if loss.loss_type == "actor_critic":
            value = ppo.clipped_value_loss(ev.value, mb["value"], mb["returns"], mb["mask"],
                                           value_clip=loss.value_clip, huber_delta=loss.huber_delta,
                                           weight=weight)
            total = total + value.loss
            metrics.update({"actor/value_loss": value.loss, "actor/value_clip_ratio": value.clip_ratio,
                            "actor/explained_variance": value.explained_variance})
        if loss.entropy_bonus:
            total = total - loss.entropy_bonus * metrics["actor/entropy"]
        metrics["actor/loss"] = total
        return total, metrics

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    warmup = loss.critic_warmup_steps
    steps_per_update = sched.update_epoch * n_minibatch

    def minibatch_step(carry, minibatch):
        state, opt_step = carry
        # Critic warm-up (RLinf's critic_warmup_steps): the policy loss is dropped and only the value head moves.
        in_warmup = opt_step < warmup
        actor_weight = jnp.where(in_warmup, 0.0, 1.0)

        def micro_step(acc, micro):
            (_, metrics), grads = grad_fn(state.params, micro, actor_weight)
            return jax.tree.map(jnp.add, acc, grads), metrics

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        grads, metrics = jax.lax.scan(micro_step, zeros, minibatch)
        grads = jax.tree.map(lambda g: g / n_micro, grads)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        if warmup:  # no update (not even weight decay) for the policy's parameters during the warm-up
            updates = jax.tree_util.tree_map_with_path(
                lambda path, u: u if policy.is_value_param(tuple(_key(p) for p in path)) else u * actor_weight,
                updates)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        state = state.replace(params=keep(params, state.params), opt_state=keep(opt_state, state.opt_state),
                              skipped_updates=state.skipped_updates + (~finite).astype(jnp.int32))
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["actor/grad_norm"] = grad_norm
        metrics["actor/critic_warmup"] = in_warmup.astype(jnp.float32)
        return (state, opt_step + 1), metrics

    def update(state: TrainState, batch: dict, rng: jax.Array):
        perm = jax.random.permutation(rng, sched.num_samples)  # one shuffle per global step, as RLinf

        def to_minibatches(x):
            x = x[perm].reshape(n_minibatch, n_micro, micro_global, *x.shape[1:])
            return jax.lax.with_sharding_constraint(x, micro_spec)

        minibatches = jax.tree.map(to_minibatches, batch)

        def epoch(carry, _):
            return jax.lax.scan(minibatch_step, carry, minibatches)

        first_opt_step = state.step * steps_per_update  # optimizer steps taken by earlier global steps
        (state, _), metrics = jax.lax.scan(epoch, (state, first_opt_step), None, length=sched.update_epoch)
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["actor/skipped_updates"] = state.skipped_updates.astype(jnp.float32)
        return state.replace(step=state.step + 1), metrics

    rep, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    return jax.jit(update, in_shardings=(rep, data, rep), out_shardings=(rep, rep), donate_argnums=(0,))
