"""What every command-line entry point does before its real work, in this order: quiet logging, parse and
validate the config (one line on error), cap JAX's GPU memory share, and only then start JAX and re-validate the
placement against the devices JAX sees."""

from __future__ import annotations

import logging
import sys
from typing import Any, Sequence


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src.xla_bridge"):  # orbax logs every file it writes at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)


def parse_config(argv: Sequence[str], default_config_name: str, *, prog: str | None = None
                 ) -> tuple[Any, str] | None:
    """(config, source file), or None after printing the one-line config error."""
    from jaxrl_isaac.config import ConfigError
    from jaxrl_isaac.config.cli import parse_train_args
    try:
        return parse_train_args(list(argv), default_config_name, prog=prog)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return None


def start_jax(cfg) -> bool:
    """Applies ``cluster.jax_mem_fraction`` and ``cluster.deterministic_gpu_ops`` (if JAX has not started yet),
    starts JAX and validates the placement against its devices. False after printing the one-line config error."""
    from jaxrl_isaac.config import ConfigError
    from jaxrl_isaac.jax_setup import configure_jax_determinism, configure_jax_memory, jax_backends_initialized
    if jax_backends_initialized():  # called in-process after JAX started (tests, notebooks): too late to cap it
        logging.getLogger("jaxrl_isaac").warning("JAX is already initialised; cluster.jax_mem_fraction and "
                                                 "cluster.deterministic_gpu_ops not applied")
    else:
        configure_jax_memory(cfg.cluster.jax_mem_fraction)
        configure_jax_determinism(cfg.cluster.deterministic_gpu_ops)
    import jax
    from jaxrl_isaac.config.loader import validate
    # Which backend JAX actually got: a broken CUDA plugin makes JAX fall back to the CPU with only a warning.
    logging.getLogger("jaxrl_isaac").info("JAX %s on %d %s device(s): %s", jax.__version__, jax.device_count(),
                                          jax.default_backend(), jax.devices()[0].device_kind)
    try:
        validate(cfg, num_devices=jax.device_count())
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return False
    return True


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by a run's inputs (checkpoint, env, logger backend, model choice, video dir): one line."""
    from jaxrl_isaac.bridge import BridgeError
    from jaxrl_isaac.checkpoints import CheckpointError
    from jaxrl_isaac.envs.contract import EnvInputError, EnvOutputError
    from jaxrl_isaac.envs.isaaclab.launcher import IsaacLabNotInstalled
    from jaxrl_isaac.metric_logger import LoggerBackendError
    from jaxrl_isaac.runner import UnsupportedModel
    from jaxrl_isaac.video import VideoError
    return (CheckpointError, EnvInputError, EnvOutputError, IsaacLabNotInstalled, LoggerBackendError, BridgeError, UnsupportedModel,
            VideoError)
