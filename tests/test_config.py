"""Configs: every shipped YAML, composition and overrides, one-line errors, RLinf's divisibility rules, placement."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from jaxrl_isaac.config import (ComponentPlacement, ConfigError, available_config_names, build_config, config_dir,
                                load_config, parse_component_placement, parse_ranks, parse_train_args, validate)
from jaxrl_isaac.config.schema import CAMERA_KEYS, LOGGER_BACKENDS

DEFAULT = "embedded_reach_ppo_baseline"
REACH_FILE = "configs/embedded_reach_ppo_baseline.yaml"
SHIPPED = ("embedded_reach_ppo_gr00t_tiny", "embedded_reach_ppo_baseline", "embedded_lift_ppo_baseline",
           "embedded_stack_cube_ppo_baseline", "embedded_stack_cube_ppo_gr00t", "embedded_stack_cube_grpo_gr00t",
           "isaaclab_ppo_gr00t_demo", "isaaclab_franka_stack_cube_ppo_gr00t")


def error_of(*overrides: str, name: str = DEFAULT, **kwargs) -> str:
    """The ConfigError message of loading ``name`` with ``overrides``; asserts it is a single line."""
    with pytest.raises(ConfigError) as info:
        load_config(name, overrides=overrides, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------------------------------------- shipped configs


def test_shipped_config_names():
    assert set(SHIPPED) <= set(available_config_names())
    assert "embedded_base" not in available_config_names()  # a base for defaults:, not runnable


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads_and_validates(name, tmp_path):
    cfg = load_config(name)
    assert cfg.source_path == f"configs/{name}.yaml"
    placement = validate(cfg)
    assert isinstance(placement, ComponentPlacement)
    train = cfg.env.train
    assert train.max_steps_per_rollout_epoch % cfg.actor.model.num_action_chunks == 0
    # RLinf's derived defaults were filled.
    assert train.init_params.max_episode_steps == train.max_episode_steps
    assert train.video_cfg.video_base_dir == f"{cfg.runner.logger.log_path}/video/train"
    assert cfg.rollout.model.precision == cfg.actor.model.precision
    # The resolved config saved with to_yaml loads back to an equal config.
    saved = write(tmp_path, "resolved.yaml", cfg.to_yaml())
    assert load_config(path=saved) == cfg


@pytest.mark.parametrize("num_devices", [1, 2, 4, 8])
def test_embedded_configs_validate_on_common_device_counts(num_devices):
    for name in ("embedded_reach_ppo_gr00t_tiny", "embedded_reach_ppo_baseline", "embedded_lift_ppo_baseline",
                 "embedded_stack_cube_ppo_baseline"):
        placement = validate(load_config(name), num_devices=num_devices)
        assert placement.mode == "collocated" and placement.world_size("actor") == num_devices


def test_train_default_is_a_tiny_gr00t_bootstrapped_by_sft():
    from jaxrl_isaac import eval as eval_cli
    from jaxrl_isaac import train
    assert train.DEFAULT_CONFIG_NAME == eval_cli.DEFAULT_CONFIG_NAME == "embedded_reach_ppo_gr00t_tiny"
    cfg = load_config(train.DEFAULT_CONFIG_NAME)
    m = cfg.actor.model
    assert m.model_type == "gr00t" and m.model_path is None and m.bootstrap.architecture == "tiny"
    assert m.bootstrap.sft_steps > 0 and cfg.env.train.init_params.id == "Embedded-Reach-Franka-IK-Rel-v0"
    assert cfg.runner.logger.log_path == "logs/embedded_reach_ppo_gr00t_tiny"


def test_baseline_reach_config_is_small_and_state_only():
    cfg = load_config(DEFAULT)
    assert cfg.actor.model.model_type == "baseline" and cfg.actor.model.baseline.image_keys == ()
    assert cfg.env.train.init_params.id == "Embedded-Reach-Franka-IK-Rel-v0"
    assert cfg.env.train.total_num_envs == 32 and cfg.env.train.rollout_epoch == 1
    assert cfg.actor.model.num_action_chunks in (4, 5) and cfg.algorithm.update_epoch == 4
    assert 60 <= cfg.env.train.max_episode_steps <= 100
    assert cfg.actor.optim.lr == 3e-4 and cfg.runner.logger.logger_backends == ("tensorboard",)
    assert cfg.runner.logger.log_path == "logs/embedded_reach_ppo_baseline"


def test_current_recipe_matches_rlinf_head():
    cfg = load_config("isaaclab_franka_stack_cube_ppo_gr00t")
    train, model, algo = cfg.env.train, cfg.actor.model, cfg.algorithm
    assert train.init_params.id == "Isaac-Stack-Cube-Franka-IK-Rel-Visuomotor-Rewarded-v0"
    assert (train.total_num_envs, train.rollout_epoch, train.max_episode_steps) == (64, 2, 448)
    assert (cfg.env.eval.total_num_envs, cfg.env.eval.rollout_epoch, cfg.env.eval.ignore_terminations) == (32, 3, True)
    assert (model.num_action_chunks, model.denoising_steps, model.embodiment_tag) == (16, 4, "isaaclab_franka")
    assert (cfg.actor.micro_batch_size, cfg.actor.global_batch_size, algo.update_epoch) == (32, 512, 3)
    assert (cfg.actor.optim.lr, cfg.actor.optim.value_lr, cfg.actor.optim.adam_beta2) == (1e-5, 2e-5, 0.95)
    assert (algo.huber_delta, algo.value_clip, algo.clip_ratio_c) == (10.0, 0.2, None)
    assert train.init_params.table_cam.height == 256 and cfg.env.eval.video_cfg.save_video
    assert cfg.actor.fsdp_config.mixed_precision.param_dtype == "bf16"  # ${actor.model.precision}
    placement = validate(cfg)
    assert placement.mode == "collocated" and placement.rollout.node_group == "rollout"
    assert placement.device_ids("env") == (0, 1, 2, 3)


def test_demo_config_follows_the_seed_guide():
    cfg = load_config("isaaclab_ppo_gr00t_demo")
    assert cfg.env.train.init_params.id == "Isaac-Stack-Cube-Franka-IK-Rel-Visuomotor-Cosmos-v0"
    assert cfg.runner.logger.logger_backends == ("tensorboard", "wandb")
    assert cfg.rollout.pipeline_stage_num == 2 and cfg.runner.max_epochs == 2
    assert cfg.env.train.video_cfg.save_video and cfg.env.train.video_cfg.video_base_dir == "../results/video/train"
    placement = validate(cfg)
    assert placement.mode == "hybrid"
    assert placement.device_ids("rollout") == (4, 5, 6, 7) and placement.world_size("actor") == 8


# ------------------------------------------------------------------------------------------- overrides, composition


def test_overrides_are_typed():
    cfg = load_config(DEFAULT, overrides=["runner.max_epochs=3", "actor.optim.lr=1e-4", "env.train.auto_reset=true",
                                          "runner.logger.logger_backends=[tensorboard,wandb]", "actor.optim.lr=1"])
    assert cfg.runner.max_epochs == 3 and cfg.env.train.auto_reset is True
    assert cfg.actor.optim.lr == 1.0 and isinstance(cfg.actor.optim.lr, float)  # an int is fine for a float
    assert cfg.runner.logger.logger_backends == ("tensorboard", "wandb")


def test_overridden_log_path_moves_interpolated_paths():
    cfg = load_config(DEFAULT, overrides=["runner.logger.log_path=/x"])
    assert cfg.env.train.video_cfg.video_base_dir == "/x/video/train"
    assert cfg.env.eval.video_cfg.video_base_dir == "/x/video/eval"
    cfg = load_config(DEFAULT, overrides=["runner.logger.experiment_name=run7"])
    assert cfg.runner.logger.log_path == "logs/run7"  # log_path is ${runner.logger.experiment_name} based
    cfg = load_config("isaaclab_franka_stack_cube_ppo_gr00t", overrides=["runner.logger.log_path=/y"])
    assert cfg.env.eval.video_cfg.video_base_dir == "/y/video/eval"  # written as an interpolation in the yaml


def test_relative_interpolation_and_eval_mirroring():
    cfg = load_config(DEFAULT, overrides=["env.train.max_episode_steps=60", "env.train.max_steps_per_rollout_epoch=60",
                                          "env.train.total_num_envs=8", "actor.global_batch_size=40"])
    assert cfg.env.eval.max_episode_steps == 60 and cfg.env.eval.total_num_envs == 8
    gr00t = load_config("isaaclab_franka_stack_cube_ppo_gr00t", overrides=["env.train.max_episode_steps=100"])
    assert gr00t.env.train.init_params.max_episode_steps == 100  # ${..max_episode_steps} in the env fragment


def test_mapping_override_replaces_the_section():
    cfg = load_config("isaaclab_franka_stack_cube_ppo_gr00t",
                      overrides=['cluster.component_placement={"env,rollout,actor": all}'])
    assert list(cfg.cluster.component_placement) == ["env,rollout,actor"]
    assert validate(cfg, num_devices=4).mode == "collocated"


def test_defaults_inherit_and_child_wins(tmp_path):
    write(tmp_path, "parent.yaml", """
        defaults: [embedded_reach_ppo_baseline]
        runner: {max_epochs: 7}
        cluster:
          component_placement: {env: 0, rollout: 0, actor: 0}
        """)
    child = write(tmp_path, "child.yaml", """
        defaults: [parent]
        runner: {save_interval: 7}
        """)
    cfg = load_config(path=child)
    assert (cfg.runner.max_epochs, cfg.runner.save_interval) == (7, 7)
    assert cfg.env.train.init_params.id == "Embedded-Reach-Franka-IK-Rel-v0"  # from configs/
    assert cfg.cluster.component_placement == {"env": 0, "rollout": 0, "actor": 0}  # replaced, not merged


def test_config_dir_from_environment(tmp_path, monkeypatch):
    write(tmp_path, "mine.yaml", (config_dir() / f"{DEFAULT}.yaml").read_text())
    write(tmp_path, "embedded_base.yaml", (config_dir() / "embedded_base.yaml").read_text())
    monkeypatch.setenv("JAXRL_ISAAC_CONFIG_DIR", str(tmp_path))
    assert available_config_names() == ["mine"]
    assert load_config("mine").runner.max_epochs == 150


# ----------------------------------------------------------------------------------------------- one-line errors


def test_unknown_key_did_you_mean_names_command_line():
    message = error_of("algorithm.clip_ratio_hgh=0.3")
    assert message == "command line: unknown key 'algorithm.clip_ratio_hgh'; did you mean 'clip_ratio_high'?"


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = write(tmp_path, "typo.yaml", """
        defaults: [embedded_reach_ppo_baseline]
        actor:
          optim: {value_lr: 1.0e-4, lr_warmup_step: 3}
        """)
    with pytest.raises(ConfigError) as info:
        load_config(path=path)
    assert str(info.value).endswith("typo.yaml: unknown key 'actor.optim.lr_warmup_step'; "
                                    "did you mean 'lr_warmup_steps'?")


def test_rlinf_moved_keys_get_a_hint():
    assert "RLinf moved it to env.train.rollout_epoch" in error_of("algorithm.rollout_epoch=2")
    assert "unknown key 'hydra'" in error_of("hydra.run.dir=.")


@pytest.mark.parametrize("override, expected", [
    ("actor.optim.lr=abc", "actor.optim.lr='abc' must be a number"),
    ("env.train.auto_reset=1", "env.train.auto_reset=1 must be true or false"),
    ("env.train.total_num_envs=16.5", "env.train.total_num_envs=16.5 must be an integer"),
    ("runner.logger.logger_backends=tensorboard", "runner.logger.logger_backends='tensorboard' must be a list"),
    ("algorithm.adv_type=gea", "algorithm.adv_type='gea' must be one of gae, grpo; did you mean 'gae'?"),
    ("actor.model.precision=fp16", "actor.model.precision='fp16' must be one of bf16, fp32"),
    ("actor.model.rl_head_config.noise_params=[0.7,0.3]", "noise_params=[0.7, 0.3] must be a list of 3 values"),
    ("actor.optim=5", "actor.optim must be a section (mapping), got 5"),
])
def test_wrong_types_and_enums(override, expected):
    message = error_of(override)
    assert message.startswith("command line: ") and expected in message


def test_unknown_logger_backend():
    message = error_of("runner.logger.logger_backends=[tensorboard,wandbb]")
    assert message == ("command line: runner.logger.logger_backends[1]='wandbb' must be one of tensorboard, wandb, "
                       "swanlab; did you mean 'wandb'?")
    assert LOGGER_BACKENDS == ("tensorboard", "wandb", "swanlab")


def test_missing_required_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "nototal.yaml", """
        cluster: {component_placement: {"env,rollout,actor": all}}
        env:
          train: {env_type: embedded, init_params: {id: Embedded-Reach-Franka-IK-Rel-v0}}
        actor: {model: {model_type: baseline}}
        """)
    with pytest.raises(ConfigError) as info:
        load_config(path=path)
    assert str(info.value).endswith("nototal.yaml: missing required key 'env.train.total_num_envs'")
    assert error_of("env.train.init_params.id=null") == "command line: missing required key 'env.train.init_params.id'"
    assert error_of("runner.logger.experiment_name=???").startswith(
        "command line: missing required key 'runner.logger.experiment_name'")


def test_malformed_overrides_and_bad_names():
    assert "must look like dotted.key=value" in error_of("max_epochs")
    assert "runner.max_epochs is a value, not a section" in error_of("runner.max_epochs.x=1")
    with pytest.raises(ConfigError, match=r"unknown config name 'embeded_reach'.*did you mean "
                                          r"'embedded_reach_ppo_baseline'\?.*available: "):
        load_config("embeded_reach")
    with pytest.raises(ConfigError, match="shared base"):
        load_config("embedded_base")
    with pytest.raises(ConfigError, match="exactly one"):
        load_config()


def test_defaults_cycle(tmp_path):
    write(tmp_path, "a.yaml", "defaults: [b]\n")
    write(tmp_path, "b.yaml", "defaults: [a]\n")
    with pytest.raises(ConfigError, match="defaults form a cycle"):
        load_config(path=tmp_path / "a.yaml")


# --------------------------------------------------------------------------------------- RLinf divisibility rules

FOUR_ENV_RANKS = 'cluster.component_placement={env: 0-3, rollout: 0, actor: 0}'


@pytest.mark.parametrize("overrides, expected", [
    ((FOUR_ENV_RANKS, "env.train.total_num_envs=10"),
     "command line: env.train.total_num_envs=10 must be divisible by env ranks=4"),
    ((FOUR_ENV_RANKS, "env.train.total_num_envs=12", "rollout.pipeline_stage_num=2"),
     "command line: env.train.total_num_envs=12 must be divisible by env ranks=4 × rollout.pipeline_stage_num=2"),
    (("env.train.group_size=3",),
     "command line: env.train.group_size=3 must divide the 32 envs per simulator instance"),
    (("env.train.max_steps_per_rollout_epoch=81",),
     "command line: env.train.max_steps_per_rollout_epoch=81 must be divisible by actor.model.num_action_chunks=4"),
    (("actor.model.add_value_head=false",),
     "command line: actor.model.add_value_head=false, but algorithm.loss_type=actor_critic"),
    (("algorithm.adv_type=grpo", "algorithm.loss_type=actor"),
     f"{REACH_FILE}: algorithm.group_size=1 must be > 1 for algorithm.adv_type=grpo"),
    (("algorithm.adv_type=grpo", "algorithm.loss_type=actor", "algorithm.group_size=4"),
     "configs/embedded_base.yaml: env.train.group_size=1 must equal algorithm.group_size=4"),
    (("actor.global_batch_size=75",),
     "command line: actor.global_batch_size=75 must be divisible by actor.micro_batch_size=10 × actor ranks=1"),
    (("actor.global_batch_size=60", "actor.micro_batch_size=20"),
     "command line: actor.global_batch_size=60: each of the 1 actor rank(s) gets 640 samples"),
    (('cluster.component_placement={"env,rollout": all, actor: 0-2}', "actor.global_batch_size=30"),
     f"{REACH_FILE}: env.train.total_num_envs=32 must be divisible by actor ranks=3"),
    (("runner.val_check_interval=5", "env.eval.total_num_envs=3", FOUR_ENV_RANKS),
     "command line: env.eval.total_num_envs=3 must be divisible by env ranks=4"),
])
def test_divisibility_rules(overrides, expected):
    assert error_of(*overrides).startswith(expected)


def test_grpo_with_matching_groups_validates():
    cfg = load_config(DEFAULT, overrides=["algorithm.adv_type=grpo", "algorithm.loss_type=actor",
                                          "algorithm.group_size=4", "env.train.group_size=4"])
    assert cfg.algorithm.group_size == cfg.env.train.group_size == 4


def test_rules_use_num_devices_for_all_placements():
    cfg = load_config(DEFAULT, overrides=["env.train.total_num_envs=12", "actor.global_batch_size=60",
                                          "actor.micro_batch_size=15"])
    assert validate(cfg, num_devices=1).world_size("env") == 1
    with pytest.raises(ConfigError, match="total_num_envs=12 must be divisible by env ranks=8"):
        validate(cfg, num_devices=8)
    with pytest.raises(ConfigError, match=r"placement.env='0-3' uses device 3 but only 2 device\(s\)"):
        validate(load_config("isaaclab_franka_stack_cube_ppo_gr00t"), num_devices=2)


def test_other_semantic_errors():
    assert "reward.use_reward_model=true is not supported" in error_of("reward.use_reward_model=true")
    assert "runner.save_interval=20 must be a multiple of runner.val_check_interval=7" in \
        error_of("runner.val_check_interval=7")
    assert "image_keys[0]='table_camera' is not a camera; did you mean 'table_cam'?" in \
        error_of("actor.model.baseline.image_keys=[table_camera]")
    assert "exceeds GR00T N1.5's action horizon 16" in \
        error_of("actor.model.num_action_chunks=32", name="isaaclab_franka_stack_cube_ppo_gr00t")
    assert "cluster.num_nodes=2: only single-host runs" in error_of("cluster.num_nodes=2")


# ------------------------------------------------------------------------------------------------------ placement


@pytest.mark.parametrize("spec, num_devices, expected", [
    ("0-3", None, (0, 1, 2, 3)),
    ("0,2,5", None, (0, 2, 5)),
    ("0-1,4", None, (0, 1, 4)),
    ("all", None, (0,)),
    ("all", 4, (0, 1, 2, 3)),
    (3, None, (3,)),
])
def test_parse_ranks(spec, num_devices, expected):
    assert parse_ranks(spec, num_devices=num_devices) == expected


@pytest.mark.parametrize("spec, expected", [
    ("3-1", "range '3-1' ends before it starts"),
    ("a-b", "malformed range 'a-b'"),
    ("0-2,2", "lists rank(s) [2] more than once"),
    ("", "malformed range ''"),
    (-1, "must be a non-negative device rank"),
])
def test_parse_ranks_errors(spec, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_ranks(spec)


def test_placement_modes_and_forms():
    shared = parse_component_placement({"env,rollout,actor": "all"}, num_devices=4)
    assert shared.mode == "collocated" and shared.world_size("rollout") == 4
    seed = parse_component_placement({"env": "0-3", "rollout": "4-7", "actor": "0-7"})
    assert seed.mode == "hybrid" and seed.all_device_ids == tuple(range(8))
    split = parse_component_placement({"env": "0-1", "rollout": "2-5", "actor": "6-7"})
    assert split.mode == "disaggregated" and split.world_size("rollout") == 4
    demo = parse_component_placement({"env": 0, "rollout": 1, "actor": 2})
    assert demo.mode == "disaggregated" and demo.device_ids("actor") == (2,)
    grouped = parse_component_placement(
        {"env": "0-3", "rollout": {"node_group": "rollout", "placement": "0-3"}, "actor": "0-3"},
        node_group_labels=["rollout"])
    assert grouped.mode == "collocated" and grouped.rollout.node_group == "rollout"
    # RLinf's resources:processes form: 4 actor processes on 2 devices.
    packed = parse_component_placement({"env,rollout": "0-1", "actor": "0-1:0-3"})
    assert packed.device_ids("actor") == (0, 1) and packed.world_size("actor") == 4


@pytest.mark.parametrize("placement, expected", [
    ({"env": "0", "rollout": "0", "actr": "0"}, "unknown component 'actr'; did you mean 'actor'?"),
    ({"env": "0", "rollout": "0"}, "has no placement for 'actor'"),
    ({"env,rollout": "0", "rollout,actor": "0"}, "component 'rollout' is placed twice"),
    ({"env,rollout": "0", "actor": {"node_group": "gpus", "placement": "0"}}, "node_group 'gpus' is not declared"),
    ({"env,rollout": "0", "actor": "0-2:0-1"}, "one count must be a multiple of the other"),
    ({"env,rollout": "0", "actor": "0:1"}, "process ranks [1] must be 0..0"),
    ({"env,rollout": "0", "actor": "0-4"}, "uses device 4 but only 4 device(s) are visible"),
    ({"env": None, "rollout": None, "actor": "0"}, "quote comma-joined keys"),  # YAML {env,rollout,actor: 0}
])
def test_placement_errors(placement, expected):
    with pytest.raises(ConfigError) as info:
        parse_component_placement(placement, num_devices=4)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_bad_placement_in_config_names_source():
    assert error_of('cluster.component_placement={env: 3-1, rollout: 0, actor: 0}') == \
        "command line: cluster.component_placement.env='3-1': range '3-1' ends before it starts"


def test_env_num_workers_rules():
    assert error_of("env.train.num_workers=0") == "command line: env.train.num_workers=0 must be >= 1"
    assert "must split the 32 envs (env.train.total_num_envs) into equal shards" in error_of("env.train.num_workers=3")
    assert "multiples of env.train.group_size=8" in error_of("env.train.num_workers=16",
                                                            name="embedded_stack_cube_grpo_gr00t")
    assert "is for the embedded simulator" in error_of("env.train.num_workers=2",
                                                       name="isaaclab_franka_stack_cube_ppo_gr00t")
    assert load_config(DEFAULT, overrides=["env.train.num_workers=4"]).env.train.num_workers == 4


def test_max_wall_time_must_be_positive():
    assert "runner.max_wall_time_s=0.0 must be > 0 seconds" in error_of("runner.max_wall_time_s=0")
    assert load_config(DEFAULT, overrides=["runner.max_wall_time_s=600"]).runner.max_wall_time_s == 600


def test_tiled_rendering_is_embedded_only_and_eval_follows_train():
    cfg = load_config(DEFAULT, overrides=["env.train.init_params.tiled_rendering=true"])
    assert cfg.env.train.init_params.tiled_rendering and cfg.env.eval.init_params.tiled_rendering
    assert not load_config(DEFAULT).env.train.init_params.tiled_rendering
    assert "env.train.init_params.tiled_rendering is for the embedded simulator" in error_of(
        "env.train.init_params.tiled_rendering=true", name="isaaclab_franka_stack_cube_ppo_gr00t")


# ------------------------------------------------------------------------------------------------------------ CLI


def test_cli_default_name_and_overrides(tmp_path):
    cfg, source = parse_train_args([], DEFAULT)
    assert source == REACH_FILE and cfg == load_config(DEFAULT)
    cfg, source = parse_train_args(["--config-name", "embedded_lift_ppo_baseline", "runner.max_epochs=3"], DEFAULT)
    assert source == "configs/embedded_lift_ppo_baseline.yaml" and cfg.runner.max_epochs == 3
    path = write(tmp_path, "run.yaml", "defaults: [embedded_reach_ppo_baseline]\nrunner: {max_epochs: 2}\n")
    cfg, source = parse_train_args(["--config", str(path), "runner.save_interval=1"], "unused")
    assert source.endswith("run.yaml") and (cfg.runner.max_epochs, cfg.runner.save_interval) == (2, 1)


def test_cli_errors_and_help(capsys):
    with pytest.raises(ConfigError, match=r"^command line: unknown key 'runner.max_epoch'; did you mean "
                                          r"'max_epochs'\?$"):
        parse_train_args(["runner.max_epoch=3"], DEFAULT)
    with pytest.raises(SystemExit) as info:
        parse_train_args(["-h"], DEFAULT)
    assert info.value.code == 0
    assert "embedded_reach_ppo_baseline" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # --config and --config-name together
        parse_train_args(["--config", "a.yaml", "--config-name", DEFAULT], DEFAULT)


def test_jax_mem_fraction_range():
    assert load_config(DEFAULT, overrides=["cluster.jax_mem_fraction=null"]).cluster.jax_mem_fraction is None
    assert "must be in (0, 1] or null" in error_of("cluster.jax_mem_fraction=1.5")


# ---------------------------------------------------------------------------------------------------------- schema


def test_build_config_direct_and_camera_keys_match_contract():
    cfg = build_config({"cluster": {"component_placement": {"env,rollout,actor": "all"}},
                        "env": {"train": {"env_type": "embedded", "total_num_envs": 4, "max_episode_steps": 20,
                                          "max_steps_per_rollout_epoch": 20,
                                          "init_params": {"id": "Embedded-Reach-Franka-IK-Rel-v0"}}},
                        "actor": {"model": {"model_type": "baseline", "num_action_chunks": 5},
                                  "micro_batch_size": 4, "global_batch_size": 4}})
    assert validate(cfg).mode == "collocated"
    assert cfg.algorithm.huber_delta == 10.0 and cfg.actor.optim.adam_beta2 == 0.95  # RLinf HEAD defaults
    assert cfg.env.train.video_cfg.video_base_dir == "../results/video/train"
    assert cfg.runner.num_global_steps == 1000
    from jaxrl_isaac.envs.contract import CAMERA_KEYS as CONTRACT_CAMERA_KEYS
    assert CAMERA_KEYS == CONTRACT_CAMERA_KEYS
