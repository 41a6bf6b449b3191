"""Rollout collection with action chunks: the simulator (torch, outside jit) <-> the policy (JAX, jitted).

Per global step: ``rollout_epoch`` passes of T = max_steps_per_rollout_epoch / C chunk steps over N envs. At each
chunk step the policy sees one observation (cameras render once per chunk) and returns C actions that are
executed open loop, as RLinf does. Env outputs cross into JAX through the DLPack bridge; the reward/done
buffers an IsaacLab env reuses in place are copied into buffers the rollout owns before the next step.

Semantics (RLinf's, see docs/rlinf_embodied_spec.md §2.2-2.4 and §4.6), with two deliberate fixes:
* auto_reset=False (train): every rollout epoch starts with a full reset; after an episode ends inside the
  window, the env keeps running a fresh episode whose samples are loss-masked. The env metrics (success_once,
  return, episode_len) describe the *first* episode only -- RLinf keeps latching success over the re-spawned
  episodes and reports episode_len = window length.
* Every global step starts from a reset seeded by (env seed, global step, epoch), so a resumed run sees the
  same episodes as an uninterrupted one (RLinf's resets are unseeded).

With a ``VideoRecorder`` (``env.train.video_cfg.save_video``) each rollout epoch becomes one video,
``global_step_<N>_epoch_<e>.mp4`` with N the 1-based global step the rollout's metrics are logged at; one frame per
env step (the obs the step returned, i.e. already the next episode's for an env that just ended). Reading the table
camera every env step makes the embedded simulator render it every step: see ``jaxrl_isaac/video.py``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from jaxrl_isaac import bridge
from jaxrl_isaac.algorithms.embodied import Trajectory
from jaxrl_isaac.envs.contract import POLICY_GROUP, VecEnv, check_finite
from jaxrl_isaac.models.policy import Policy

if TYPE_CHECKING:
    from jaxrl_isaac.video import VideoRecorder


@dataclasses.dataclass(frozen=True)
class RolloutSettings:
    num_action_chunks: int            # C: env steps per policy call
    chunk_steps: int                  # T = max_steps_per_rollout_epoch / C
    rollout_epoch: int = 1
    auto_reset: bool = False
    ignore_terminations: bool = False
    seed: int = 0


def reset_seed(base_seed: int, global_step: int, epoch: int) -> int:
    """A reset seed that depends only on (seed, step, epoch): resumed runs replay the same episodes."""
    return int(np.random.SeedSequence([base_seed, global_step, epoch]).generate_state(1)[0] & 0x7FFFFFFF)


class _EpisodeStats:
    """Per-env accumulators for the episodes of one global step (torch, on the env device)."""

    def __init__(self, n: int, device: torch.device, first_only: bool):
        self.first_only = first_only
        self.ret = torch.zeros(n, device=device)
        self.length = torch.zeros(n, dtype=torch.int64, device=device)
        self.success = torch.zeros(n, dtype=torch.bool, device=device)
        self.counting = torch.ones(n, dtype=torch.bool, device=device)  # first_only: still in episode 1
        self.finished: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def update(self, reward, done, success):
        active = self.counting
        self.ret += torch.where(active, reward, 0.0)
        self.length += active.long()
        self.success |= active & success
        ended = done & active
        if bool(ended.any()):
            self.finished.append((self.ret[ended].clone(), self.length[ended].clone(), self.success[ended].clone()))
            if self.first_only:
                self.counting &= ~ended
            else:
                self.ret[ended], self.length[ended], self.success[ended] = 0.0, 0, False

    def close_window(self):
        """Unfinished episodes count too (cut by the rollout window), then restart the accumulators."""
        open_ = self.counting & (self.length > 0)
        if bool(open_.any()):
            self.finished.append((self.ret[open_].clone(), self.length[open_].clone(), self.success[open_].clone()))
        self.ret.zero_(); self.length.zero_(); self.success.zero_(); self.counting.fill_(True)

    def metrics(self, prefix: str) -> dict[str, float]:
        if not self.finished:
            return {}
        ret = torch.cat([f[0] for f in self.finished]).float()
        length = torch.cat([f[1] for f in self.finished]).float()
        success = torch.cat([f[2] for f in self.finished]).float()
        return {f"{prefix}/success_once": float(success.mean()), f"{prefix}/return": float(ret.mean()),
                f"{prefix}/episode_len": float(length.mean()), f"{prefix}/reward": float((ret / length).mean()),
                f"{prefix}/num_trajectories": float(len(ret))}


class RolloutCollector:
    """Runs the env with a policy and returns a time-major ``Trajectory`` of JAX arrays."""

    def __init__(self, env: VecEnv, policy: Policy, settings: RolloutSettings,
                 recorder: VideoRecorder | None = None, device: jax.Device | None = None):
        """``device``: where the policy runs. Observations, rewards and dones are committed to it (one host ->
        device copy per call for a CPU simulator driving an accelerator policy); None keeps them where the
        simulator's tensors land in JAX (zero-copy)."""
        self.env, self.policy, self.s = env, policy, settings
        self.recorder = recorder
        self.device = device
        self._sample = jax.jit(policy.sample)
        self._value = jax.jit(policy.value)
        self._obs = None

    def _read(self, obs) -> dict[str, jax.Array]:
        model_obs = self.policy.read_obs(obs[POLICY_GROUP])
        for key, value in model_obs.items():  # a NaN observation would silently poison the update
            check_finite(f"observation {key!r}", value)
        return self._put(bridge.tree_torch_to_jax(model_obs))

    def _put(self, tree):
        return tree if self.device is None else jax.device_put(tree, self.device)

    def collect(self, params: Any, rng: jax.Array, global_step: int) -> tuple[Trajectory, dict[str, float]]:
        s, env, rec = self.s, self.env, self.recorder
        n, C = env.num_envs, s.num_action_chunks
        stats = _EpisodeStats(n, env.device, first_only=not s.auto_reset)
        # time/policy = time/policy_inputs (camera rendering of lazy envs, preprocessing, host -> device) +
        # time/policy_forward (the jitted sample and the actions back to the env's device).
        timings = {"time/env_step": 0.0, "time/policy": 0.0, "time/policy_inputs": 0.0, "time/policy_forward": 0.0}
        video_time = 0.0
        epochs = []
        for epoch in range(s.rollout_epoch):
            if epoch == 0 or not s.auto_reset:
                self._obs, _ = env.reset(seed=reset_seed(s.seed, global_step, epoch))
            if rec is not None:
                rec.begin(f"global_step_{global_step + 1}_epoch_{epoch}")
            obs_steps, samples, rewards, dones = [], [], [], []
            dones.append(self._put(jnp.zeros((n, C), bool)))
            for t in range(s.chunk_steps):
                t0 = time.perf_counter()
                obs_j = self._read(self._obs)
                t_inputs = time.perf_counter()
                sample = self._sample(params, obs_j, jax.random.fold_in(rng, epoch * s.chunk_steps + t))
                actions = bridge.jax_to_torch_on(sample.actions, env.device)
                t1 = time.perf_counter()
                timings["time/policy_inputs"] += t_inputs - t0
                timings["time/policy_forward"] += t1 - t_inputs
                chunk_reward = torch.zeros((n, C), device=env.device)  # owned copies of the reused buffers
                chunk_done = torch.zeros((n, C), dtype=torch.bool, device=env.device)
                chunk_video_time = 0.0
                for c in range(C):
                    self._obs, reward, terminated, truncated, extras = env.step(actions[:, c].contiguous())
                    raw_terminated = terminated
                    if s.ignore_terminations:
                        terminated = torch.zeros_like(terminated)
                    done = terminated | truncated
                    chunk_reward[:, c] = reward
                    chunk_done[:, c] = done
                    success = extras.get("success", torch.zeros_like(done))
                    stats.update(reward.float(), done, success.bool())
                    if rec is not None:  # renders the table camera of every sub-env (the embedded env is lazy)
                        tv = time.perf_counter()
                        rec.add_frame(self._obs[POLICY_GROUP]["table_cam"], reward, raw_terminated, truncated,
                                      success, extras)
                        chunk_video_time += time.perf_counter() - tv
                check_finite(f"reward (global step {global_step + 1}, chunk {t})", chunk_reward)
                t2 = time.perf_counter()
                timings["time/policy"] += t1 - t0
                timings["time/env_step"] += t2 - t1 - chunk_video_time
                video_time += chunk_video_time
                obs_steps.append(obs_j)
                samples.append(sample)
                rewards.append(self._put(bridge.torch_to_jax(chunk_reward)))
                dones.append(self._put(bridge.torch_to_jax(chunk_done)))
            t0 = time.perf_counter()
            final_obs = self._read(self._obs)
            t_inputs = time.perf_counter()
            final_value = jax.block_until_ready(self._value(params, final_obs))
            t1 = time.perf_counter()
            timings["time/policy"] += t1 - t0
            timings["time/policy_inputs"] += t_inputs - t0
            timings["time/policy_forward"] += t1 - t_inputs
            if rec is not None:
                rec.end()
            if not s.auto_reset:
                stats.close_window()
            epochs.append(Trajectory(
                obs=jax.tree.map(lambda *x: jnp.stack(x), *obs_steps),
                train_inputs=jax.tree.map(lambda *x: jnp.stack(x), *[x.train_inputs for x in samples]),
                logprobs=jnp.stack([x.logprob for x in samples]),
                values=jnp.stack([x.value for x in samples] + [final_value]),
                rewards=jnp.stack(rewards),
                dones=jnp.stack(dones)))
        if s.auto_reset:
            stats.close_window()
        # Trajectories of all epochs side by side on the batch axis (index = epoch * N + env), as RLinf.
        traj = jax.tree.map(lambda *x: jnp.concatenate(x, axis=1), *epochs)
        metrics = stats.metrics("env")
        metrics.update(timings)
        if rec is not None:
            metrics["time/video"] = video_time
        return traj, metrics
