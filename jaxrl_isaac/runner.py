"""The embodied runner: config -> (env <-> bridge <-> policy) -> advantages -> update -> logger / checkpoints.

One global step (RLinf's ``EmbodiedRunner.run``): sync weights to the rollout copy, generate rollouts,
compute advantages and returns, train the actor, maybe evaluate, log, maybe checkpoint. Each phase is a separate
function over explicit pytrees (no hidden device state), so that placement and pipelining can be layered on later.

Evaluation (``jaxrl_isaac/eval.py``) runs the deterministic policy on its own ``env.eval`` instance every
``runner.val_check_interval`` global steps and at the last step; its ``eval/*`` metrics and ``time/eval`` join that
step's row. It touches neither the train env nor the RNG, so training is the same with or without it.
``runner.only_eval`` builds only the policy and ``env.eval`` and evaluates ``runner.ckpt_path`` once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_isaac import checkpoints, learner, sharding
from jaxrl_isaac.algorithms.embodied import AdvantageSettings, compute_advantages_and_returns
from jaxrl_isaac.metric_logger import MetricLogger
from jaxrl_isaac.rollout import RolloutCollector, RolloutSettings
from jaxrl_isaac.video import VideoRecorder, VideoSettings

log = logging.getLogger("jaxrl_isaac")


class UnsupportedModel(ValueError):
    """actor.model names a policy, checkpoint or setting that cannot be built; the message says which."""


def build_policy(cfg, env=None, split: str = "train") -> Any:
    """The policy of ``actor.model.model_type``; GR00T also needs the env it will act in (quaternion order, the
    task's instruction) and reads its converted checkpoint (``actor.model.model_path``)."""
    model = cfg.actor.model
    if model.model_type == "baseline":
        from jaxrl_isaac.models.baseline import BaselineConfig, BaselinePolicy
        b = model.baseline
        return BaselinePolicy(BaselineConfig(
            action_dim=model.action_dim, num_action_chunks=model.num_action_chunks,
            image_keys=tuple(b.image_keys), image_size=b.image_size, state_keys=tuple(b.state_keys),
            cnn_channels=tuple(b.cnn_channels), mlp_hidden=tuple(b.mlp_hidden), init_log_std=b.init_log_std,
            logprob_type=cfg.algorithm.logprob_type))
    if model.model_type == "gr00t":
        if env is None:
            raise UnsupportedModel("actor.model.model_type=gr00t needs the env it acts in to build its policy")
        from jaxrl_isaac.models.gr00t_policy import GR00TRLPolicy
        try:
            return GR00TRLPolicy.from_config(cfg, env, split)
        except (ValueError, FileNotFoundError, KeyError) as e:  # bad model_path, checkpoint or rl_head_config
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UnsupportedModel(f"actor.model (gr00t): {first}") from None
    raise UnsupportedModel(f"actor.model.model_type={model.model_type!r} is not one of 'baseline', 'gr00t'")


def _advantage_settings(cfg) -> AdvantageSettings:
    a, e = cfg.algorithm, cfg.env.train
    return AdvantageSettings(
        adv_type=a.adv_type, gamma=a.gamma, gae_lambda=a.gae_lambda, normalize_advantages=a.normalize_advantages,
        use_loss_mask=(not e.auto_reset) and (not e.ignore_terminations), group_size=max(a.group_size, 1),
        filter_rewards=a.filter_rewards, rewards_lower_bound=a.rewards_lower_bound,
        rewards_upper_bound=a.rewards_upper_bound, loss_agg=a.embodied_loss_agg)


def _loss_settings(cfg) -> learner.LossSettings:
    a = cfg.algorithm
    return learner.LossSettings(loss_type=a.loss_type, clip_ratio_low=a.clip_ratio_low,
                                clip_ratio_high=a.clip_ratio_high, clip_ratio_c=a.clip_ratio_c,
                                value_clip=a.value_clip, huber_delta=a.huber_delta, entropy_bonus=a.entropy_bonus,
                                critic_warmup_steps=cfg.actor.optim.critic_warmup_steps,
                                loss_agg=a.embodied_loss_agg)


def _optim_settings(cfg) -> learner.OptimSettings:
    o = cfg.actor.optim
    return learner.OptimSettings(lr=o.lr, value_lr=o.value_lr, adam_beta1=o.adam_beta1, adam_beta2=o.adam_beta2,
                                 adam_eps=o.adam_eps, clip_grad=o.clip_grad, weight_decay=o.weight_decay)


def total_steps(cfg) -> int:
    steps = cfg.runner.max_epochs
    if cfg.runner.max_steps is not None and cfg.runner.max_steps >= 0:
        steps = min(steps, cfg.runner.max_steps)
    return steps


class EmbodiedRunner:
    def __init__(self, cfg, config_dict: dict, env=None, actor_device_ids=None, eval_env=None):
        """``env`` / ``eval_env``: prebuilt envs (tests); None builds ``env.train`` / ``env.eval`` with make_env."""
        from jaxrl_isaac.envs.factory import make_env

        self.cfg = cfg
        self.config_dict = config_dict
        split = cfg.env.train
        self.log_path = Path(cfg.runner.logger.log_path)
        self.evaluator = None
        self.recorder = None
        self._eval_env = eval_env
        if cfg.runner.only_eval:  # RLinf's eval runner: no train env, learner or optimizer
            self.policy = None  # run_eval builds the eval env, then the policy against it
            return
        old = checkpoints.existing_steps(self.log_path / "checkpoints")
        if old and not cfg.runner.resume_dir:
            raise checkpoints.CheckpointError(
                f"runner.logger.log_path={self.log_path} already holds a run's checkpoints (global steps "
                f"{old[0]}..{old[-1]}); continue that run with runner.resume_dir={self.log_path / 'checkpoints'} "
                f"(raise runner.max_epochs to train longer) or pick a new runner.logger.log_path")
        self.env = env if env is not None else make_env(split)
        self.policy = build_policy(cfg, self.env)
        C = cfg.actor.model.num_action_chunks
        self.rollout_settings = RolloutSettings(
            num_action_chunks=C, chunk_steps=split.max_steps_per_rollout_epoch // C,
            rollout_epoch=split.rollout_epoch, auto_reset=split.auto_reset,
            ignore_terminations=split.ignore_terminations, seed=split.seed)
        video = VideoSettings.from_config(split.video_cfg)
        self.recorder = VideoRecorder(video, self.env.num_envs) if video is not None else None
        self.rollout_device = sharding.rollout_device(cfg)
        self.collector = RolloutCollector(self.env, self.policy, self.rollout_settings, self.recorder,
                                          device=self.rollout_device)
        if cfg.runner.val_check_interval > 0:
            from jaxrl_isaac.eval import Evaluator
            self.evaluator = Evaluator.from_config(cfg, self.policy, env=eval_env, beside_train_env=True)
        self.mesh = sharding.make_mesh(actor_device_ids)
        num_samples = self.rollout_settings.chunk_steps * split.rollout_epoch * self.env.num_envs
        self.schedule = learner.Schedule(num_samples=num_samples, global_batch_size=cfg.actor.global_batch_size,
                                         micro_batch_size=cfg.actor.micro_batch_size,
                                         update_epoch=cfg.algorithm.update_epoch)
        self.tx = learner.make_optimizer(_optim_settings(cfg), self.policy.is_value_param,
                                         getattr(self.policy, "is_trainable_param", None))
        self.update_fn = learner.make_update_fn(self.policy, self.tx, _loss_settings(cfg), self.schedule, self.mesh)
        adv_settings = _advantage_settings(cfg)
        self.advantage_fn = jax.jit(lambda traj: compute_advantages_and_returns(traj, adv_settings))
        self.rng = jax.random.PRNGKey(cfg.actor.seed)
        self.state = self._init_state()
        self.start_step = 0
        if cfg.runner.resume_dir:
            self._resume(cfg.runner.resume_dir)

    # ---- state ----
    def _init_state(self) -> learner.TrainState:
        obs, _ = self.env.reset(seed=self.rollout_settings.seed)
        from jaxrl_isaac import bridge
        from jaxrl_isaac.envs.contract import POLICY_GROUP
        example = bridge.tree_torch_to_jax(self.policy.read_obs(obs[POLICY_GROUP]))
        params = self.policy.init(jax.random.fold_in(self.rng, 0x1A17), example)
        if self.cfg.runner.ckpt_path:
            params = checkpoints.restore_params(self.cfg.runner.ckpt_path, params)
            log.info("initialised params from %s", self.cfg.runner.ckpt_path)
        state = learner.init_train_state(params, self.tx)
        return jax.device_put(state, sharding.replicated(self.mesh))

    def _resume(self, path) -> None:
        target_ts = {"opt_state": self.state.opt_state, "step": self.state.step,
                     "skipped_updates": self.state.skipped_updates, "rng": self.rng}
        params, ts, assets, step = checkpoints.restore(path, self.state.params, target_ts)
        self.state = jax.device_put(learner.TrainState(step=ts["step"], params=params, opt_state=ts["opt_state"],
                                                       skipped_updates=ts["skipped_updates"]),
                                    sharding.replicated(self.mesh))
        self.rng = jnp.asarray(ts["rng"])
        self.start_step = int(ts["step"])
        log.info("resumed from %s at global step %d", path, self.start_step)

    def save(self, step: int) -> Path:
        ckpt = checkpoints.Checkpointer(self.log_path / "checkpoints")
        train_state = {"opt_state": self.state.opt_state, "step": self.state.step,
                       "skipped_updates": self.state.skipped_updates, "rng": self.rng}
        assets = {"config": self.config_dict, "model_type": self.cfg.actor.model.model_type,
                  "global_step": step}
        path = ckpt.save(step, self.state.params, train_state, assets)
        ckpt.close()
        return path

    # ---- phases ----
    def sync_weights(self) -> Any:
        """The rollout copy of the weights, on the rollout device (``sharding.rollout_device``). When the actor mesh is
        that single device this reuses the same buffers; otherwise it is one device-to-device copy."""
        return jax.device_put(self.state.params, self.rollout_device)

    def train_step(self, step: int) -> dict[str, float]:
        t_step = time.perf_counter()
        rollout_params = self.sync_weights()
        step_rng = jax.random.fold_in(self.rng, step)
        rollout_rng, update_rng = jax.random.split(step_rng)

        t0 = time.perf_counter()
        traj, env_metrics = self.collector.collect(rollout_params, rollout_rng, step)
        t1 = time.perf_counter()
        batch, rollout_metrics = self.advantage_fn(traj)
        batch = jax.device_put(batch, sharding.batch_sharded(self.mesh))
        jax.block_until_ready(batch)
        t2 = time.perf_counter()
        self.state, train_metrics = self.update_fn(self.state, batch, update_rng)
        train_metrics = jax.device_get(train_metrics)
        t3 = time.perf_counter()

        metrics = {k: float(v) for k, v in {**env_metrics, **jax.device_get(rollout_metrics),
                                             **train_metrics}.items()}
        env_steps = self.rollout_settings.chunk_steps * self.rollout_settings.num_action_chunks * \
            self.rollout_settings.rollout_epoch * self.env.num_envs
        metrics.update({"time/generate_rollouts": t1 - t0, "time/cal_adv_and_returns": t2 - t1,
                        "time/actor_training": t3 - t2, "time/step": t3 - t_step,
                        "throughput/env_steps_per_s": env_steps / max(t3 - t_step, 1e-9),
                        "throughput/rollout_env_steps_per_s": env_steps / max(t1 - t0, 1e-9)})
        return metrics

    def evaluate(self, global_step: int) -> dict[str, float]:
        """``eval/*`` and ``time/eval`` of the current params on ``env.eval``."""
        return self.evaluator.evaluate(self.state.params, global_step)

    def _eval_due(self, global_step: int, last: bool) -> bool:
        interval = self.cfg.runner.val_check_interval
        return self.evaluator is not None and interval > 0 and (global_step % interval == 0 or last)

    def _next_step_seconds(self, step: int, history: list[dict[str, float]], save_s: float | None) -> float:
        """Estimated seconds of global step ``step + 1`` with its eval and checkpoint: the median of the last three
        steps, the last eval's time (before any: the eval's env steps at the last rollout's throughput), and the last
        save's (before any: 10 s), plus 5%."""
        n_steps = total_steps(self.cfg)
        recent = sorted(row["time/step"] for row in history[-3:])
        seconds = recent[len(recent) // 2]
        last = step + 1 == n_steps
        if self._eval_due(step + 1, last):
            evals = [row["time/eval"] for row in history if "time/eval" in row]
            if evals:
                seconds += evals[-1]
            else:
                e = self.cfg.env.eval
                seconds += e.total_num_envs * e.rollout_epoch * e.max_steps_per_rollout_epoch / \
                    history[-1]["throughput/rollout_env_steps_per_s"]
        interval = self.cfg.runner.save_interval
        if (interval > 0 and (step + 1) % interval == 0) or last:
            seconds += 10.0 if save_s is None else save_s
        return 1.05 * seconds

    def run(self, progress: bool = True, started_at: float | None = None) -> list[dict[str, float]]:
        """Global steps ``start_step`` .. the last; returns their metrics. ``started_at``: ``time.monotonic()`` when
        the command started, the origin of ``runner.max_wall_time_s`` (default: now). ``stopped_at`` is then the
        global step of a stop for the time limit (its checkpoint written), else None."""
        cfg = self.cfg
        deadline = None
        if cfg.runner.max_wall_time_s is not None:
            deadline = (time.monotonic() if started_at is None else started_at) + cfg.runner.max_wall_time_s
        self.stopped_at = None
        if cfg.runner.only_eval:
            from jaxrl_isaac.eval import run_eval
            metrics, _ = run_eval(cfg, policy=self.policy, env=self._eval_env)
            return [metrics]
        n_steps = total_steps(cfg)
        self.log_path.mkdir(parents=True, exist_ok=True)
        (self.log_path / "config.json").write_text(json.dumps(self.config_dict, indent=2, default=str))
        logger = MetricLogger(self.log_path, cfg.runner.logger.project_name, cfg.runner.logger.experiment_name,
                              cfg.runner.logger.logger_backends, config=self.config_dict)
        history = []
        saved_at, save_s = None, None
        bar = _progress(progress, n_steps, self.start_step)
        try:
            for step in range(self.start_step, n_steps):
                if deadline is not None and history and \
                        time.monotonic() + self._next_step_seconds(step, history, save_s) > deadline:
                    if saved_at != step:
                        path = self.save(step)
                        log.info("saved checkpoint %s", path)
                    self.stopped_at = step
                    log.info("stopping after global step %d: the next would end past runner.max_wall_time_s=%s; "
                             "continue with runner.resume_dir=%s", step, cfg.runner.max_wall_time_s,
                             self.log_path / "checkpoints")
                    break
                metrics = self.train_step(step)
                last = step + 1 == n_steps
                if self._eval_due(step + 1, last):
                    metrics.update(self.evaluate(step + 1))
                bar.advance(metrics)
                logger.log(metrics, step + 1)
                history.append(metrics)
                if (cfg.runner.save_interval > 0 and (step + 1) % cfg.runner.save_interval == 0) or last:
                    t_save = time.monotonic()
                    path = self.save(step + 1)
                    saved_at, save_s = step + 1, time.monotonic() - t_save
                    log.info("saved checkpoint %s", path)
        finally:
            bar.close()
            logger.close()
            self.close_outputs()
        return history

    def close_outputs(self) -> None:
        """Waits for pending videos; closes the eval env this runner built."""
        if self.recorder is not None:
            self.recorder.close()
        if self.evaluator is not None:
            self.evaluator.close()


class _progress:
    """A rich progress bar with the key numbers (or nothing when disabled / not a terminal)."""

    def __init__(self, enabled: bool, total: int, start: int):
        self._p = None
        self._last_eval = ""  # the latest evaluation stays on the bar until the next one
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self._p = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                               TextColumn("{task.fields[info]}"))
            self._task = self._p.add_task("train", total=total, completed=start, info="")
            self._p.start()

    def advance(self, m: dict[str, float]) -> None:
        if self._p is None:
            return
        if "eval/success_once" in m:
            self._last_eval = f"eval/success_once={m['eval/success_once']:.2f} "
        info = (f"{self._last_eval}success_once={m.get('env/success_once', float('nan')):.2f} "
                f"return={m.get('env/return', float('nan')):.2f} loss={m.get('actor/loss', float('nan')):.3f} "
                f"{m.get('throughput/env_steps_per_s', 0):.0f} env-steps/s")
        self._p.update(self._task, advance=1, info=info)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
