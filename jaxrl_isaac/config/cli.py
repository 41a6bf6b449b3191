"""Command line for training entry points: pick a config and override keys.

    jaxrl-isaac-train                                   # the entry point's default config
    jaxrl-isaac-train --config-name isaaclab_franka_stack_cube_ppo_gr00t actor.model.model_path=/ckpt
    jaxrl-isaac-train --config my.yaml runner.max_epochs=10 'runner.logger.logger_backends=[tensorboard,wandb]'

Overrides are ``dotted.key=value`` with the value parsed as YAML; they are applied before ``${...}``
interpolations are resolved. Nothing here imports jax: an entry point parses its arguments, then applies
``cluster.jax_mem_fraction`` with ``jaxrl_isaac.jax_setup.configure_jax_memory``, and only then touches jax.
"""

from __future__ import annotations

import argparse
import sys

from jaxrl_isaac.config.loader import available_config_names, config_dir, load_config
from jaxrl_isaac.config.schema import TrainConfig


def _build_parser(default_config_name: str, prog: str | None) -> argparse.ArgumentParser:
    names = available_config_names()
    epilog = (f"configs in {config_dir()}:\n  " + "\n  ".join(names) if names else f"no configs in {config_dir()}")
    epilog += ("\n\nexamples:\n  runner.max_epochs=10 env.train.total_num_envs=32\n"
               "  runner.logger.log_path=/tmp/run   (paths built with ${runner.logger.log_path} follow)\n"
               "  'cluster.component_placement={\"env,rollout,actor\": all}'   (a mapping replaces the section)")
    parser = argparse.ArgumentParser(
        prog=prog, description="Train a policy with PPO/GRPO from an RLinf-style YAML config.",
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config-name", metavar="NAME", default=None,
                        help=f"a config from the config directory (default: {default_config_name})")
    source.add_argument("--config", metavar="PATH", default=None, help="a YAML config file anywhere")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted-key overrides, e.g. "
                                                                           "algorithm.update_epoch=2")
    return parser


def parse_train_args(argv: list[str] | None, default_config_name: str, *,
                     prog: str | None = None) -> tuple[TrainConfig, str]:
    """Parse ``[--config-name NAME | --config PATH] [key=value ...]`` into a validated config.

    Args:
      argv: arguments without the program name; None reads ``sys.argv[1:]``.
      default_config_name: the config used when neither ``--config-name`` nor ``--config`` is given.
    Returns:
      (config, the file it was loaded from). Validation here treats "all" placements as one device; call
      ``loader.validate(cfg, num_devices=jax.device_count())`` once jax is imported.
    Raises:
      ConfigError (one line, naming the file or "command line" and the key); SystemExit for ``-h`` and for
      malformed flags, as argparse does.
    """
    args = _build_parser(default_config_name, prog).parse_args(sys.argv[1:] if argv is None else argv)
    if args.config is not None:
        cfg = load_config(path=args.config, overrides=args.overrides)
    else:
        cfg = load_config(name=args.config_name or default_config_name, overrides=args.overrides)
    return cfg, cfg.source_path
