"""Typed configs with RLinf's embodied key tree: schema, YAML loading and validation, placement, command line.

    from jaxrl_isaac.config import load_config, validate
    cfg = load_config("embedded_reach_ppo_baseline", overrides=["runner.max_epochs=5"])
    cfg.env.train.total_num_envs, cfg.actor.model.num_action_chunks

Nothing in this package imports jax or torch.
"""

from jaxrl_isaac.config.cli import parse_train_args
from jaxrl_isaac.config.loader import available_config_names, build_config, config_dir, load_config, validate
from jaxrl_isaac.config.placement import (ComponentDevices, ComponentPlacement, PlacementError,
                                          parse_component_placement, parse_ranks)
from jaxrl_isaac.config.schema import (
    LOGGER_BACKENDS, ActorConfig, AlgorithmConfig, BaselineModelConfig, CameraConfig, ClusterConfig, ConfigError,
    CriticConfig, EnvConfig, EnvInitParams, EnvSplitConfig, FSDPConfig, LoggerConfig, ModelConfig,
    NodeGroupConfig, NodeGroupPlacement, OptimConfig, RewardConfig, RLHeadConfig, RolloutConfig, RolloutModelConfig,
    RunnerConfig, TrainConfig, VideoConfig, WeightSyncerConfig)

__all__ = [
    "LOGGER_BACKENDS", "ActorConfig", "AlgorithmConfig", "BaselineModelConfig", "CameraConfig", "ClusterConfig",
    "ComponentDevices", "ComponentPlacement", "ConfigError", "CriticConfig", "EnvConfig", "EnvInitParams",
    "EnvSplitConfig", "FSDPConfig", "LoggerConfig", "ModelConfig", "NodeGroupConfig", "NodeGroupPlacement",
    "OptimConfig", "PlacementError", "RLHeadConfig", "RewardConfig", "RolloutConfig", "RolloutModelConfig",
    "RunnerConfig", "TrainConfig", "VideoConfig", "WeightSyncerConfig", "available_config_names", "build_config",
    "config_dir", "load_config", "parse_component_placement", "parse_ranks", "parse_train_args",
    "validate",
]
