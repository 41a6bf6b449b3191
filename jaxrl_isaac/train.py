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
        history = runner.run(progress=sys.stderr.isatty())
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
    if history and "env/success_once" in history[0]:
        first, last = history[0], history[-1]
        keys = ("env/success_once", "env/return", "env/episode_len", "actor/loss", "throughput/env_steps_per_s")
        print("metric".ljust(30), "first step".rjust(12), "last step".rjust(12))
        for k in keys:
            if k in first and k in last:
                print(k.ljust(30), f"{first[k]:12.4f}", f"{last[k]:12.4f}")
    print(f"logs, tensorboard and checkpoints in {cfg.runner.logger.log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
