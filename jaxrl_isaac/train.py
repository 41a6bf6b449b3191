"""``python -m jaxrl_isaac.train [--config-name NAME | --config PATH] [key=value ...]``

With no arguments it trains the default embedded config (no IsaacLab needed). The config is parsed and
validated before JAX is imported, so that JAX's GPU memory share (``cluster.jax_mem_fraction``) can still be
set and a bad config fails in one line before anything starts.
"""

from __future__ import annotations

import logging
import sys

DEFAULT_CONFIG_NAME = "embedded_reach_ppo_baseline"


def main(argv: list[str] | None = None) -> int:
    from jaxrl_isaac.config import ConfigError
    from jaxrl_isaac.config.cli import parse_train_args

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src.xla_bridge"):  # orbax logs every file it writes at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cfg, source = parse_train_args(sys.argv[1:] if argv is None else argv, DEFAULT_CONFIG_NAME)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2

    from jaxrl_isaac.jax_setup import configure_jax_memory, jax_backends_initialized
    if jax_backends_initialized():  # called in-process after JAX started (tests, notebooks): too late to cap it
        logging.getLogger("jaxrl_isaac").warning("JAX is already initialised; cluster.jax_mem_fraction not applied")
    else:
        configure_jax_memory(cfg.cluster.jax_mem_fraction)

    import jax
    from jaxrl_isaac.config.loader import validate
    try:
        validate(cfg, num_devices=jax.device_count())
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2

    from jaxrl_isaac.runner import EmbodiedRunner, total_steps
    log = logging.getLogger("jaxrl_isaac")
    log.info("config %s -> log dir %s (%d global steps, %s on %s)", source, cfg.runner.logger.log_path,
             total_steps(cfg), cfg.env.train.init_params.id, cfg.env.train.env_type)
    try:
        runner = EmbodiedRunner(cfg, cfg.to_dict())
        history = runner.run(progress=sys.stderr.isatty())
    except _user_errors() as e:  # bad input the user can fix: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    if history and "env/success_once" in history[0]:
        first, last = history[0], history[-1]
        keys = ("env/success_once", "env/return", "env/episode_len", "actor/loss", "throughput/env_steps_per_s")
        print("metric".ljust(30), "first step".rjust(12), "last step".rjust(12))
        for k in keys:
            if k in first and k in last:
                print(k.ljust(30), f"{first[k]:12.4f}", f"{last[k]:12.4f}")
    print(f"logs, tensorboard and checkpoints in {cfg.runner.logger.log_path}")
    return 0


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the run's inputs (checkpoint, env, logger backend, model choice), reported in one line."""
    from jaxrl_isaac.bridge import BridgeError
    from jaxrl_isaac.checkpoints import CheckpointError
    from jaxrl_isaac.envs.contract import EnvInputError
    from jaxrl_isaac.envs.isaaclab.launcher import IsaacLabNotInstalled
    from jaxrl_isaac.metric_logger import LoggerBackendError
    from jaxrl_isaac.runner import UnsupportedModel
    from jaxrl_isaac.video import VideoError
    return (CheckpointError, EnvInputError, IsaacLabNotInstalled, LoggerBackendError, BridgeError, UnsupportedModel,
            VideoError)


if __name__ == "__main__":
    sys.exit(main())
