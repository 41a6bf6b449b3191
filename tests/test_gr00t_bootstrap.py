"""RL from a tiny GR00T made on the spot (``actor.model.bootstrap``: random init, or SFT on scripted demos first) on
the embedded reach task, whose state adds the target position; eval of a GR00T ``model_path`` alone; a fresh run
refuses a used log dir."""

import json
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch

from gr00t_port.processor import LIBERO_FRANKA_LAYOUT, ModalityLayout
from jaxrl_isaac import eval as eval_cli
from jaxrl_isaac import train
from jaxrl_isaac.envs import obs_mapping

RANDOM_INIT = ["actor.model.bootstrap.sft_steps=0"]
SMALL = ["env.train.total_num_envs=4", "env.train.max_episode_steps=8", "env.train.max_steps_per_rollout_epoch=8",
         "actor.global_batch_size=8", "actor.micro_batch_size=2", "algorithm.update_epoch=1",
         "runner.save_interval=-1"]
EVAL_SMALL = ["env.eval.total_num_envs=4", "env.eval.max_episode_steps=8", "env.eval.max_steps_per_rollout_epoch=8"]


def test_reach_state_appends_the_target():
    terms = {"eef_pos": torch.tensor([[0.1, 0.2, 0.3]]), "eef_quat": torch.tensor([[0.0, 0.0, 0.0, 1.0]]),
             "gripper_pos": torch.tensor([[0.04, 0.04]]), "target_pos": torch.tensor([[0.5, -0.1, 0.2]])}
    state = obs_mapping.eef_gripper_target_state(terms, "xyzw")
    assert state.shape == (1, sum(d for _, d in obs_mapping.REACH_STATE_KEYS)) == (1, 11)
    torch.testing.assert_close(state[:, :8], obs_mapping.eef_axis_angle_gripper_state(terms, "xyzw"))
    torch.testing.assert_close(state[:, 8:], terms["target_pos"])
    with pytest.raises(KeyError, match="target_pos"):
        obs_mapping.eef_gripper_target_state({k: v for k, v in terms.items() if k != "target_pos"}, "xyzw")


def test_modality_layout_round_trips_and_rejects_bad_input():
    layout = LIBERO_FRANKA_LAYOUT.with_state_keys(["x", "gripper", "target"])
    assert layout.state_modes == ("min_max",) * 3
    assert ModalityLayout.from_dict(json.loads(json.dumps(layout.to_dict()))) == layout
    with pytest.raises(ValueError, match="exactly the keys"):
        ModalityLayout.from_dict({"video_keys": ["image"]})
    with pytest.raises(ValueError, match="unique"):
        LIBERO_FRANKA_LAYOUT.with_state_keys(["x", "x"])


def _metrics(log):
    return [json.loads(line) for line in (log / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_random_init_gr00t_trains_evaluates_and_guards_its_log_dir(tmp_path, capsys):
    log = tmp_path / "run"
    base = ["--config-name", "embedded_reach_ppo_gr00t_tiny", f"runner.logger.log_path={log}", *RANDOM_INIT, *SMALL]
    assert train.main([*base, "runner.max_epochs=2"]) == 0
    rows = _metrics(log)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["actor/ratio"] == pytest.approx(1.0, abs=1e-5) and np.isfinite(rows[-1]["actor/loss"])

    # The random-init checkpoint records the reach task's 11-dim state layout and expert statistics.
    init_dir = log / "bootstrap" / "global_step_0"
    mngr = ocp.CheckpointManager((log / "bootstrap").absolute(), item_names=("assets",),
                                 options=ocp.CheckpointManagerOptions(step_prefix="global_step", create=False))
    assets = mngr.restore(0, args=ocp.args.Composite(assets=ocp.args.JsonRestore()))["assets"]
    mngr.close()
    assert assets["modality_layout"]["state_keys"] == [k for k, _ in obs_mapping.REACH_STATE_KEYS]
    assert len(assets["metadata"]["isaaclab_franka"]["statistics"]["state"]["target"]["min"]) == 3

    # A second fresh run into the same log dir would mix two runs' checkpoints: one clear error, nothing written.
    assert train.main([*base, "runner.max_epochs=2"]) == 2
    assert "already holds a run's checkpoints" in capsys.readouterr().err
    assert len(_metrics(log)) == 2

    # Eval of the RL checkpoint, and of a GR00T model_path alone (here the random init; normally an SFT result).
    eval_base = ["--config-name", "embedded_reach_ppo_gr00t_tiny", *EVAL_SMALL]
    assert eval_cli.main([*eval_base, *RANDOM_INIT, f"runner.logger.log_path={log}",
                          f"runner.ckpt_path={log / 'checkpoints'}"]) == 0
    assert eval_cli.main([*eval_base, f"runner.logger.log_path={tmp_path / 'eval_init'}",
                          "actor.model.bootstrap=null", f"actor.model.model_path={init_dir}"]) == 0
    out = capsys.readouterr().out
    assert "eval/success_once" in out and str(init_dir) in out


@pytest.mark.slow
def test_sft_bootstrap_runs_once_and_is_reused(tmp_path, caplog):
    log = tmp_path / "run"
    args = ["--config-name", "embedded_reach_ppo_gr00t_tiny", f"runner.logger.log_path={log}", *SMALL,
            "actor.model.bootstrap.sft_steps=3", "actor.model.bootstrap.sft_episodes=2"]
    assert train.main([*args, "runner.max_epochs=1"]) == 0
    step_dir = log / "bootstrap" / "global_step_3"
    assert (step_dir / "experiment_cfg" / "metadata.json").is_file()
    assert len((log / "bootstrap" / "sft_log.jsonl").read_text().splitlines()) >= 2
    caplog.clear()
    with caplog.at_level("INFO"):
        assert train.main([*args, "runner.max_epochs=2", f"runner.resume_dir={log / 'checkpoints'}"]) == 0
    assert "reusing the bootstrap SFT checkpoint" in caplog.text
    assert [r["step"] for r in _metrics(log)] == [1, 2]
    # A bootstrap dir copied into another run's log dir is reused too (the recipe does not hold --out).
    other = tmp_path / "other"
    shutil.copytree(log / "bootstrap", other / "bootstrap")
    caplog.clear()
    with caplog.at_level("INFO"):
        assert train.main([*args[:2], f"runner.logger.log_path={other}", *args[3:], "runner.max_epochs=1"]) == 0
    assert f"reusing the bootstrap SFT checkpoint {other / 'bootstrap'}" in caplog.text
    # Eval of a run's checkpoint into another log dir reuses that run's bootstrap (read only) instead of redoing it.
    caplog.clear()
    with caplog.at_level("INFO"):
        assert eval_cli.main([*args[:2], f"runner.logger.log_path={tmp_path / 'eval'}", *args[3:], *EVAL_SMALL,
                              f"runner.ckpt_path={log / 'checkpoints' / 'global_step_2'}"]) == 0
    assert f"reusing the bootstrap SFT checkpoint {step_dir}" in caplog.text
    assert not (tmp_path / "eval" / "bootstrap").exists()


def test_bootstrap_config_errors(tmp_path, capsys):
    assert train.main(["--config-name", "embedded_reach_ppo_gr00t_tiny", "actor.model.model_path=/x"]) == 2
    assert "actor.model.bootstrap" in capsys.readouterr().err
    assert train.main(["--config-name", "embedded_reach_ppo_gr00t_tiny", "actor.model.bootstrap.sft_lr=0"]) == 2
    assert "sft_lr=0" in capsys.readouterr().err
    # Checked before the bootstrap SFT runs (nothing is written), with the prompt length of the processor it makes.
    assert train.main(["--config-name", "embedded_reach_ppo_gr00t_tiny", f"runner.logger.log_path={tmp_path}",
                       "actor.model.rl_head_config.padding_value=40", "actor.model.bootstrap.sft_steps=3",
                       *SMALL]) == 2
    assert "padding_value=40 is shorter than the prompt (47 tokens" in capsys.readouterr().err
    assert not (tmp_path / "bootstrap").exists()
    # A model_path checkpoint is checked against its own processor.
    boot = tmp_path / "boot"
    assert train.main(["--config-name", "embedded_reach_ppo_gr00t_tiny", f"runner.logger.log_path={boot}",
                       *RANDOM_INIT, *SMALL, "runner.max_epochs=1"]) == 0
    assert train.main(["--config-name", "embedded_reach_ppo_gr00t_tiny", f"runner.logger.log_path={tmp_path / 'x'}",
                       "actor.model.bootstrap=null", f"actor.model.model_path={boot / 'bootstrap' / 'global_step_0'}",
                       "actor.model.rl_head_config.padding_value=40", *SMALL]) == 2
    assert "padding_value=40 is shorter than the prompt (47 tokens" in capsys.readouterr().err


def test_stack_state_task_small_gr00t_bootstrap_then_ppo_on_parallel_env(tmp_path):
    """The GPU proof's path at toy size: the state-based stack task (20-dim state with the cube poses), the small
    architecture bootstrapped without image jitter, PPO stepping the simulator in 2 worker processes."""
    from jaxrl_isaac.models.gr00t_policy import read_converted_assets

    log = tmp_path / "run"
    args = ["--config-name", "embedded_stack_cube_ppo_gr00t", f"runner.logger.log_path={log}",
            "env.train.total_num_envs=8", "env.train.num_workers=2", "env.train.rollout_epoch=1",
            "env.train.max_episode_steps=16", "env.train.max_steps_per_rollout_epoch=16",
            "actor.global_batch_size=8", "actor.micro_batch_size=2", "algorithm.update_epoch=1",
            "runner.save_interval=-1", "runner.val_check_interval=-1", "runner.max_epochs=1",
            "actor.model.bootstrap.sft_steps=2", "actor.model.bootstrap.sft_episodes=1",
            "actor.optim.critic_warmup_steps=0"]
    assert train.main(args) == 0
    recipe = json.loads((log / "bootstrap" / "bootstrap.json").read_text())
    assert "--no-augment" in recipe and recipe[recipe.index("--model-config") + 1] == "small"
    assert "--tiled-rendering" in recipe  # the demos are rendered as the config's tiled RL env renders
    assert recipe[recipe.index("--tiny-tokenizer") + 1] == "bytes"  # the config keeps the recorded GPU recipe's
    _, assets = read_converted_assets(log / "bootstrap" / "global_step_2")
    head = assets["gr00t_config"]["action_head"]
    assert (head["hidden_size"], head["max_state_dim"]) == (128, 20)
    assert "cube_pos" in json.dumps(assets["modality_layout"]) and "cube_yaw" in json.dumps(assets["modality_layout"])
    (row,) = _metrics(log)
    assert row["step"] == 1 and np.isfinite(row["actor/loss"]) and row["env/num_trajectories"] == 8
