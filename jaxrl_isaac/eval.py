"""Evaluation on ``env.eval`` with the deterministic policy: in training and as a command.

    python -m jaxrl_isaac.eval --config-name NAME runner.ckpt_path=PATH [key=value ...]

``PATH`` is ``<log_path>/checkpoints`` (latest step) or ``.../global_step_<N>``. The command loads the checkpoint's
``params`` into the configured policy, runs ``env.eval`` and reports ``eval/*`` as a console table and to the
configured logger backends at the checkpoint's global step (RLinf's eval script logs at step 0; logging at N puts
the point on the training run's curves). ``env.eval.video_cfg.save_video=true`` adds videos.

Semantics (RLinf's eval split, docs/rlinf_embodied_spec.md §4.6): ``rollout_epoch`` passes of
``max_steps_per_rollout_epoch`` env steps over ``total_num_envs`` envs, one policy call (``policy.act``, the
deterministic chunk; for GR00T the flow ODE from seeded x_0 ~ N(0, I), as RLinf's eval mode) per
``num_action_chunks`` env steps. An *eval episode* starts at a reset and ends after
``max_episode_steps`` env steps (or when the env truncates it); with ``ignore_terminations: False`` a termination
(success or failure) also ends it. With ``ignore_terminations: True`` (the eval default) the simulator still
restarts a terminated sub-env internally, as IsaacLab does, and the eval episode goes on until its time limit, so
the return can count several successes. With ``auto_reset: True`` an ended eval episode is followed by the next
one (envs the simulator did not reset itself are reset with ``reset(env_ids=...)``); with ``auto_reset: False``
every pass starts from a full reset and only the first episode of each env counts. Per eval episode:

* ``success_once``: ``extras["success"]`` was true on at least one step;
* ``success_at_end``: ``extras["success"]`` on the episode's last env step, i.e. the task's success termination
  fired on that step. RLinf records ``success_at_end = terminations`` at the last step, which counts *any*
  termination, a dropped cube included; ours never counts a failure;
* ``return`` (sum of rewards), ``episode_len`` (env steps), ``reward`` = return / episode_len;
  ``num_trajectories`` = eval episodes counted (``total_num_envs * rollout_epoch`` when ``max_episode_steps`` equals
  ``max_steps_per_rollout_epoch``). Episodes still open when the last pass ends count with the steps they ran.

Every evaluation resets from the same seeds (derived from ``env.eval.seed`` and the pass index, not the global
step), so all evaluations of a run see the same initial states and a checkpoint evaluates to the same numbers.

JAX and torch are imported inside functions: ``main`` parses and validates the config and sets JAX's GPU memory
share (``cluster.jax_mem_fraction``) before JAX starts, as ``python -m jaxrl_isaac.train`` does.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jaxrl_isaac.video import VideoSettings

DEFAULT_CONFIG_NAME = "embedded_reach_ppo_gr00t_tiny"
METRIC_ORDER = ("eval/success_once", "eval/success_at_end", "eval/return", "eval/episode_len", "eval/reward",
                "eval/num_trajectories", "time/eval")

log = logging.getLogger("jaxrl_isaac")


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    num_action_chunks: int        # C: env steps per policy call
    chunk_steps: int              # policy calls per pass = max_steps_per_rollout_epoch / C
    max_episode_steps: int        # env steps of an eval episode
    rollout_epoch: int = 1        # passes
    auto_reset: bool = True
    ignore_terminations: bool = True
    seed: int = 0

    @classmethod
    def from_split(cls, split: Any, num_action_chunks: int) -> EvalSettings:
        max_episode_steps = getattr(split.init_params, "max_episode_steps", None) or split.max_episode_steps
        return cls(num_action_chunks=num_action_chunks,
                   chunk_steps=split.max_steps_per_rollout_epoch // num_action_chunks,
                   max_episode_steps=max_episode_steps, rollout_epoch=split.rollout_epoch,
                   auto_reset=split.auto_reset, ignore_terminations=split.ignore_terminations, seed=split.seed)


class EvalEpisodes:
    """Per-env accumulators of eval episodes (torch, on the env device); see the module docstring for the rules."""

    def __init__(self, n: int, device, max_episode_steps: int, ignore_terminations: bool, first_only: bool):
        import torch
        self.max_episode_steps, self.ignore_terminations, self.first_only = \
            max_episode_steps, ignore_terminations, first_only
        self.ret = torch.zeros(n, device=device)
        self.length = torch.zeros(n, dtype=torch.int64, device=device)
        self.success_once = torch.zeros(n, dtype=torch.bool, device=device)
        self.last_success = torch.zeros(n, dtype=torch.bool, device=device)
        self.counting = torch.ones(n, dtype=torch.bool, device=device)  # first_only: still in episode 1
        self.finished: list[tuple] = []  # (return, length, success_once, success_at_end) per batch of ended episodes

    def update(self, reward, terminated, truncated, success):
        """One env step of every env; returns (N,) bool: the eval episodes that ended on this step."""
        import torch
        active = self.counting
        self.length += 1
        self.ret += torch.where(active, reward.float(), 0.0)
        self.success_once |= active & success
        self.last_success = success.clone()
        ended = truncated | (self.length >= self.max_episode_steps)
        if not self.ignore_terminations:
            ended = ended | terminated
        record = ended & active
        if bool(record.any()):
            self.finished.append((self.ret[record].clone(), self.length[record].clone(),
                                  self.success_once[record].clone(), success[record].clone()))
        self.ret[ended], self.length[ended], self.success_once[ended] = 0.0, 0, False
        if self.first_only:
            self.counting &= ~ended
        return ended

    def close_window(self) -> None:
        """Episodes still open count with the steps they ran; then every accumulator restarts."""
        open_ = self.counting & (self.length > 0)
        if bool(open_.any()):
            self.finished.append((self.ret[open_].clone(), self.length[open_].clone(),
                                  self.success_once[open_].clone(), self.last_success[open_].clone()))
        self.ret.zero_(); self.length.zero_(); self.success_once.zero_(); self.counting.fill_(True)

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        import torch
        if not self.finished:
            return {f"{prefix}/num_trajectories": 0.0}
        ret, length, once, at_end = (torch.cat([f[i] for f in self.finished]) for i in range(4))
        ret, length = ret.float(), length.float()
        return {f"{prefix}/success_once": float(once.float().mean()),
                f"{prefix}/success_at_end": float(at_end.float().mean()),
                f"{prefix}/return": float(ret.mean()), f"{prefix}/episode_len": float(length.mean()),
                f"{prefix}/reward": float((ret / length).mean()), f"{prefix}/num_trajectories": float(len(ret))}


class Evaluator:
    """Runs ``policy.act`` on its own env and returns ``eval/*`` metrics (and ``time/eval``).

    Args:
      env: the eval ``VecEnv`` (not shared with training).
      policy: a ``jaxrl_isaac.models.policy.Policy``.
      settings: ``EvalSettings``.
      video: ``VideoSettings`` to record each pass as ``global_step_<N>_epoch_<e>.mp4``, or None.
      owns_env: close ``env`` in ``close()``.
    """

    def __init__(self, env, policy, settings: EvalSettings, video: VideoSettings | None = None,
                 owns_env: bool = False, device=None):
        """``device``: the JAX device the policy runs on (default: JAX's first device); observations are
        committed to it (a copy for a CPU simulator and an accelerator policy)."""
        import jax
        from jaxrl_isaac.video import VideoRecorder
        self.env, self.policy, self.s, self.owns_env = env, policy, settings, owns_env
        self._act = jax.jit(policy.act)
        # GR00T (RLinf's eval mode): the ODE starts from x_0 ~ N(0, I), not from 0. The noise is seeded by the eval
        # seed and the chunk index, so every evaluation replays the same noise as well as the same resets.
        self._noise_key = (jax.random.PRNGKey(settings.seed) if getattr(policy, "eval_samples_noise", False)
                           else None)
        self._device = jax.devices()[0] if device is None else device
        self.recorder = VideoRecorder(video, env.num_envs) if video is not None else None

    @classmethod
    def from_config(cls, cfg, policy, env=None, *, beside_train_env: bool = False) -> Evaluator:
        """The evaluator of ``cfg.env.eval``; builds that env with ``make_env`` unless ``env`` is given.

        ``beside_train_env``: this process also holds ``cfg.env.train``'s env (in-training eval). An IsaacLab eval env
        beside an IsaacLab train env is then built in a process of its own (Kit runs one stage per process).
        """
        from jaxrl_isaac.video import VideoSettings
        split = cfg.env.eval
        if split is None:
            raise ValueError("env.eval is required for evaluation (runner.val_check_interval > 0, "
                             "runner.only_eval or python -m jaxrl_isaac.eval)")
        owns_env = env is None
        if env is None:
            from jaxrl_isaac.envs import factory
            if beside_train_env and factory.needs_own_process(split, cfg.env.train):
                env = factory.make_env_process(split, name="env.eval")
            else:
                env = factory.make_env(split)
        from jaxrl_isaac.sharding import rollout_device
        settings = EvalSettings.from_split(split, cfg.actor.model.num_action_chunks)
        return cls(env, policy, settings, VideoSettings.from_config(split.video_cfg), owns_env=owns_env,
                   device=rollout_device(cfg))

    def _read(self, obs):
        from jaxrl_isaac import bridge
        from jaxrl_isaac.envs.contract import POLICY_GROUP
        import jax
        return jax.device_put(bridge.tree_torch_to_jax(self.policy.read_obs(obs[POLICY_GROUP])), self._device)

    def init_params(self, rng) -> Any:
        """Freshly initialised params for this env's observations (the target a checkpoint is restored into)."""
        obs, _ = self.env.reset(seed=self._reset_seed(0))
        return self.policy.init(rng, self._read(obs))

    def _reset_seed(self, epoch: int) -> int:
        from jaxrl_isaac.rollout import reset_seed
        return reset_seed(self.s.seed, 0, epoch)  # independent of the global step: every eval replays the same set

    def evaluate(self, params: Any, global_step: int) -> dict[str, float]:
        """One evaluation (``rollout_epoch`` passes); ``global_step`` only names the videos."""
        import jax
        import torch
        from jaxrl_isaac import bridge
        from jaxrl_isaac.envs.contract import POLICY_GROUP

        t_start = time.perf_counter()
        s, env, rec = self.s, self.env, self.recorder
        n, C = env.num_envs, s.num_action_chunks
        episodes = EvalEpisodes(n, env.device, s.max_episode_steps, s.ignore_terminations,
                                first_only=not s.auto_reset)
        obs = None
        for epoch in range(s.rollout_epoch):
            if epoch == 0 or not s.auto_reset:
                obs, _ = env.reset(seed=self._reset_seed(epoch))
            if epoch == 0:
                params = jax.device_put(params, self._device)
            if rec is not None:
                rec.begin(f"global_step_{global_step}_epoch_{epoch}")
            for chunk in range(s.chunk_steps):
                noise = () if self._noise_key is None else (
                    jax.device_put(jax.random.fold_in(self._noise_key, epoch * s.chunk_steps + chunk), self._device),)
                actions = bridge.jax_to_torch_on(self._act(params, self._read(obs), *noise), env.device)
                for c in range(C):
                    obs, reward, terminated, truncated, extras = env.step(actions[:, c].contiguous())
                    # Owned copies: IsaacLab reuses these buffers, and a reset below may touch them.
                    reward, terminated, truncated = reward.clone(), terminated.clone(), truncated.clone()
                    success = extras.get("success", torch.zeros_like(terminated)).bool().clone()
                    ended = episodes.update(reward, terminated, truncated, success)
                    if s.auto_reset:
                        obs = self._start_next_episodes(obs, ended & ~(terminated | truncated))
                    if rec is not None:
                        rec.add_frame(obs[POLICY_GROUP]["table_cam"], reward, terminated, truncated, success, extras)
            if rec is not None:
                rec.end()
            if not s.auto_reset:
                episodes.close_window()
        if s.auto_reset:
            episodes.close_window()
        metrics = episodes.metrics("eval")
        metrics["time/eval"] = time.perf_counter() - t_start
        return metrics

    def _start_next_episodes(self, obs, stale):
        """Resets the envs whose eval episode ended without the simulator resetting them (the time limit)."""
        if not bool(stale.any()):
            return obs
        if bool(stale.all()):  # every window ends together (max_episode_steps divides the pass): a full reset
            return self.env.reset()[0]
        return self.env.reset(env_ids=stale.nonzero().flatten())[0]

    def close(self) -> None:
        """Waits for the videos to be written; closes the env if this evaluator built it."""
        if self.recorder is not None:
            self.recorder.close()
        if self.owns_env:
            self.env.close()


def load_params(cfg, evaluator: Evaluator) -> tuple[Any, int]:
    """The params to evaluate and their global step: ``runner.ckpt_path``'s params (shape-checked against the
    configured policy), or the policy's own initial params at step 0 when no checkpoint is given (for GR00T: the
    ``actor.model.model_path`` checkpoint, e.g. an SFT result)."""
    import jax
    from jaxrl_isaac import checkpoints
    params = evaluator.init_params(jax.random.fold_in(jax.random.PRNGKey(cfg.actor.seed), 0x1A17))
    if not cfg.runner.ckpt_path:
        if not _evaluates_model_path(cfg):
            log.warning("runner.ckpt_path is not set: evaluating freshly initialised params")
        return params, 0
    _, step = checkpoints.resolve_step_dir(cfg.runner.ckpt_path, items=("params",))
    return checkpoints.restore_params(cfg.runner.ckpt_path, params), step


def _evaluates_model_path(cfg) -> bool:
    """GR00T with a checkpoint in ``actor.model.model_path`` and no ``runner.ckpt_path``: evaluate that one."""
    m = cfg.actor.model
    return not cfg.runner.ckpt_path and m.model_type == "gr00t" and bool(m.model_path)


def run_eval(cfg, policy=None, env=None) -> tuple[dict[str, float], int]:
    """Evaluates ``runner.ckpt_path`` on ``env.eval``: logs ``eval/*`` at the checkpoint's global step to the
    configured backends, prints a table, returns (metrics, step). ``policy``/``env`` default to the config's."""
    from jaxrl_isaac.metric_logger import MetricLogger
    from jaxrl_isaac.runner import build_policy
    created_env = False
    if policy is None:  # GR00T builds against the env it acts in, so the eval env comes first
        if env is None:
            from jaxrl_isaac.envs.factory import make_env
            env, created_env = make_env(cfg.env.eval), True
        policy = build_policy(cfg, env, "eval")
    evaluator = Evaluator.from_config(cfg, policy, env)
    evaluator.owns_env = evaluator.owns_env or created_env
    try:
        params, step = load_params(cfg, evaluator)
        metrics = evaluator.evaluate(params, step)
    finally:
        evaluator.close()
    lg = cfg.runner.logger
    logger = MetricLogger(lg.log_path, lg.project_name, lg.experiment_name, lg.logger_backends,
                          config=cfg.to_dict())
    try:
        logger.log(metrics, step)
    finally:
        logger.close()
    print_table(metrics, cfg, step, evaluator)
    return metrics, step


def print_table(metrics: dict[str, float], cfg, step: int, evaluator: Evaluator | None = None) -> None:
    from rich.console import Console
    from rich.table import Table
    split = cfg.env.eval
    source = cfg.runner.ckpt_path or (cfg.actor.model.model_path if _evaluates_model_path(cfg)
                                      else "freshly initialised params")
    console = Console()
    console.print(f"eval of {source} (global step {step}) on {split.init_params.id} ({split.env_type})",
                  soft_wrap=True)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (*METRIC_ORDER, *sorted(set(metrics) - set(METRIC_ORDER))):
        if key in metrics:
            table.add_row(key, f"{metrics[key]:.4f}" if key != "eval/num_trajectories" else f"{metrics[key]:.0f}")
    console.print(table)
    if evaluator is not None and evaluator.recorder is not None:
        console.print(f"videos: {', '.join(str(p) for p in evaluator.recorder.written) or 'none written'}")
    console.print(f"eval/* logged at step {step} to {cfg.runner.logger.log_path}")


def main(argv: list[str] | None = None) -> int:
    from jaxrl_isaac import entrypoint

    entrypoint.setup_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    # only_eval: validation checks env.eval and skips the training split and batch rules.
    parsed = entrypoint.parse_config([*argv, "runner.only_eval=true"], DEFAULT_CONFIG_NAME,
                                     prog="python -m jaxrl_isaac.eval")
    if parsed is None:
        return 2
    cfg, source = parsed
    if not cfg.runner.ckpt_path and not _evaluates_model_path(cfg):
        print("config error: runner.ckpt_path is required: the checkpoint to evaluate (<log_path>/checkpoints or "
              ".../checkpoints/global_step_<N>; for GR00T, actor.model.model_path alone evaluates that checkpoint)",
              file=sys.stderr)
        return 2

    from jaxrl_isaac.checkpoints import CheckpointError, resolve_step_dir
    try:  # a missing or incomplete checkpoint fails before anything is built
        if cfg.runner.ckpt_path:
            resolve_step_dir(cfg.runner.ckpt_path, items=("params",))
        else:
            resolve_step_dir(cfg.actor.model.model_path, items=("params", "assets"))
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not entrypoint.start_jax(cfg):
        return 2

    log.info("config %s: evaluating %s on %s (%d envs x %d passes)", source,
             cfg.runner.ckpt_path or cfg.actor.model.model_path,
             cfg.env.eval.init_params.id, cfg.env.eval.total_num_envs, cfg.env.eval.rollout_epoch)
    try:
        run_eval(cfg)
    except entrypoint.user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
