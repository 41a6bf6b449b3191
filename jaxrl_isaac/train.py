"""``python -m jaxrl_isaac.train [--config-name NAME | --config PATH] [key=value ...]``

With no arguments it trains the default embedded config (no IsaacLab needed). The config is parsed and
validated before JAX is imported, so that JAX's GPU memory share (``cluster.jax_mem_fraction``) can still be
set and a bad config fails in one line before anything starts.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

DEFAULT_CONFIG_NAME = "embedded_reach_ppo_gr00t_tiny"


def main(argv: list[str] | None = None) -> int:
    import time
    started_at = time.monotonic()  # the origin of runner.max_wall_time_s
    from jaxrl_isaac import entrypoint

    entrypoint.setup_logging()
    parsed = entrypoint.parse_config(sys.argv[1:] if argv is None else argv, DEFAULT_CONFIG_NAME)
    if parsed is None or not entrypoint.start_jax(parsed[0]):
        return 2
    cfg, source = parsed

    from jaxrl_isaac.runner import EmbodiedRunner, total_steps
    log = logging.getLogger("jaxrl_isaac")
    log.info("config %s -> log dir %s (%d global steps, %s on %s)", source, cfg.runner.logger.log_path,
             total_steps(cfg), cfg.env.train.init_params.id, cfg.env.train.env_type)
    try:
        runner = EmbodiedRunner(cfg, cfg.to_dict())
        history = runner.run(progress=sys.stderr.isatty(), started_at=started_at)
    except entrypoint.user_errors() as e:  # bad input the user can fix: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or `timeout --signal=INT`: say how to continue instead of a traceback
        from jaxrl_isaac.checkpoints import existing_steps
        ckpt_dir = Path(cfg.runner.logger.log_path) / "checkpoints"
        steps = existing_steps(ckpt_dir)
        where = (f"continue from global step {steps[-1]} with runner.resume_dir={ckpt_dir}" if steps
                 else "no checkpoint was written yet")
        print(f"interrupted; {where}", file=sys.stderr)
        return 130
    if not cfg.runner.only_eval:  # only_eval printed its eval table and has no training steps to sum up
        for line in summary_lines(history, runner.start_step):
            print(line)
    if runner.stopped_at is not None:
        print(f"stopped after global step {runner.stopped_at} (runner.max_wall_time_s={cfg.runner.max_wall_time_s}); "
              f"continue with runner.resume_dir={Path(cfg.runner.logger.log_path) / 'checkpoints'}")
    print(f"logs, tensorboard and checkpoints in {cfg.runner.logger.log_path}")
    return 0


SUMMARY_KEYS = ("env/success_once", "env/return", "env/episode_len", "actor/loss", "throughput/env_steps_per_s")


def summary_lines(history: list[dict[str, float]], start_step: int = 0, window: int = 10) -> list[str]:
    """The console summary of a run: the means of the key metrics over its first and its last ``window`` global
    steps (one step of a few dozen episodes says little), then every in-training eval.
    ``history[i]`` is global step ``start_step + i + 1``."""
    if not history or "env/success_once" not in history[0]:
        return []
    n = min(window, len(history))
    first, last = f"steps {start_step + 1}-{start_step + n}", f"steps {start_step + len(history) - n + 1}-" \
                                                             f"{start_step + len(history)}"
    lines = ["metric (mean)".ljust(30) + first.rjust(16) + last.rjust(16)]
    for key in SUMMARY_KEYS:
        head = [row[key] for row in history[:n] if key in row]
        tail = [row[key] for row in history[-n:] if key in row]
        if head and tail:
            lines.append(key.ljust(30) + f"{sum(head) / len(head):16.4f}" + f"{sum(tail) / len(tail):16.4f}")
    evals = [(start_step + i + 1, row["eval/success_once"]) for i, row in enumerate(history)
             if "eval/success_once" in row]
    if evals:
        lines.append("eval/success_once".ljust(30) + " ".join(f"{v:.4f} (step {s})" for s, v in evals))
    return lines


if __name__ == "__main__":
    sys.exit(main())
