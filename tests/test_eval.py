"""Evaluation: episode semantics (success_once vs success_at_end, auto_reset, ignore_terminations) on scripted and
point-reaching envs, determinism, in-training eval at val_check_interval, runner.only_eval, and
``python -m jaxrl_isaac.eval`` end to end on the default embedded config."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
import torch

from jaxrl_isaac import eval as eval_mod
from jaxrl_isaac import train
from jaxrl_isaac.envs.contract import validate_action
from jaxrl_isaac.eval import EvalSettings, Evaluator
from jaxrl_isaac.models.baseline import BaselineConfig, BaselinePolicy
from jaxrl_isaac.video import read_video
from point_env import PointEnv


class _StatePolicy:
    """A deterministic policy over the point env's state: ``act`` moves toward the target (``gain`` > 0) or stays."""

    action_dim, num_action_chunks = 7, 2

    def __init__(self, gain: float):
        self.gain = gain

    def read_obs(self, group):
        return {"pos": group["eef_pos"][:, :2].clone(), "target": group["target_pos"][:, :2].clone()}

    def init(self, rng, obs):
        return {"gain": jnp.float32(self.gain)}

    def act(self, params, obs):
        step = jnp.clip(params["gain"] * (obs["target"] - obs["pos"]) / 0.05, -1.0, 1.0)
        action = jnp.concatenate([step, jnp.zeros((step.shape[0], 5))], axis=-1)
        return jnp.repeat(action[:, None], self.num_action_chunks, axis=1)


class _ScriptedEnv(PointEnv):
    """Outcomes by env step since the last full reset: ``script[step] = {env: "success" | "drop"}``. A terminated or
    time-limited sub-env restarts in the same step (per-env resets honour ``env_ids``); sparse reward 1 on success."""

    def __init__(self, script, num_envs=4, max_episode_steps=8):
        super().__init__(num_envs=num_envs, max_episode_steps=max_episode_steps)
        self.script, self.t, self.partial_resets = script, 0, []

    def reset(self, seed=None, env_ids=None, options=None):
        if env_ids is None:
            self.t = 0
            return super().reset(seed=seed)
        ids = torch.as_tensor(env_ids).flatten()
        self.partial_resets.append((self.t, ids.tolist()))
        self._reset_idx(ids)
        return self._obs(), {}

    def step(self, action):
        validate_action(action, self.num_envs, self.action_dim, self.device)
        self.t += 1
        self.elapsed += 1
        outcome = self.script.get(self.t, {})
        success = torch.tensor([outcome.get(i) == "success" for i in range(self.num_envs)])
        drop = torch.tensor([outcome.get(i) == "drop" for i in range(self.num_envs)])
        self.reward_buf[:] = success.float()
        self.terminated_buf[:] = success | drop
        self.truncated_buf[:] = (self.elapsed >= self.max_episode_steps) & ~self.terminated_buf
        self._reset_idx((self.terminated_buf | self.truncated_buf).nonzero().flatten())
        return self._obs(), self.reward_buf, self.terminated_buf, self.truncated_buf, {"success": success, "log": {}}


# env 0 succeeds mid-window, env 1 on the window's last step, env 2 drops its cube on the last step, env 3 idles.
SCRIPT = {3: {0: "success"}, 8: {1: "success", 2: "drop"}}


def _evaluate(env, policy, params=None, **kw):
    settings = EvalSettings(**{"num_action_chunks": 2, "chunk_steps": 4, "max_episode_steps": 8, **kw})
    evaluator = Evaluator(env, policy, settings)
    if params is None:
        params = evaluator.init_params(jax.random.PRNGKey(0))
    metrics = evaluator.evaluate(params, global_step=0)
    evaluator.close()
    return metrics


def test_rlinf_eval_semantics_success_once_vs_success_at_end():
    env = _ScriptedEnv(SCRIPT)
    m = _evaluate(env, _StatePolicy(0.0), auto_reset=True, ignore_terminations=True)
    assert m["eval/num_trajectories"] == 4 and m["eval/episode_len"] == 8  # terminations do not end episodes
    assert m["eval/success_once"] == 0.5          # envs 0 and 1
    assert m["eval/success_at_end"] == 0.25       # env 1 only; RLinf's termination flag would count env 2's drop
    assert m["eval/return"] == 0.5 and m["eval/reward"] == pytest.approx(0.5 / 8)
    # Env 0's simulator episode restarted at step 3, so at the window end only it needs an explicit reset.
    assert env.partial_resets == [(8, [0])]


def test_terminations_end_episodes_unless_ignored():
    # auto_reset: env 0's success at step 3 ends its episode; a second one runs to the window end (5 steps).
    m = _evaluate(_ScriptedEnv(SCRIPT), _StatePolicy(0.0), auto_reset=True, ignore_terminations=False)
    assert m["eval/num_trajectories"] == 5
    assert m["eval/episode_len"] == pytest.approx((3 + 5 + 8 + 8 + 8) / 5)
    assert m["eval/success_once"] == pytest.approx(2 / 5) and m["eval/success_at_end"] == pytest.approx(2 / 5)
    # No auto_reset: the first episode of each env only, each pass from a full reset.
    m = _evaluate(_ScriptedEnv(SCRIPT), _StatePolicy(0.0), auto_reset=False, ignore_terminations=False,
                  rollout_epoch=2)
    assert m["eval/num_trajectories"] == 8 and m["eval/success_at_end"] == 0.5
    assert m["eval/episode_len"] == pytest.approx((3 + 8 + 8 + 8) / 4)


def test_point_env_reaching_policy_succeeds_and_idle_policy_does_not():
    reach = _evaluate(PointEnv(num_envs=8, max_episode_steps=20), _StatePolicy(1.0), chunk_steps=10,
                      max_episode_steps=20, rollout_epoch=2, seed=3)
    assert reach["eval/success_once"] == 1.0 and reach["eval/num_trajectories"] == 16
    assert reach["eval/return"] > 1.0  # the env restarts after a success and the policy reaches again
    idle = _evaluate(PointEnv(num_envs=8, max_episode_steps=20), _StatePolicy(0.0), chunk_steps=10,
                     max_episode_steps=20, rollout_epoch=2, seed=3)
    assert idle["eval/success_once"] == 0.0 and idle["eval/success_at_end"] == 0.0 and idle["eval/return"] == 0.0


def test_eval_is_deterministic_given_params_and_seed():
    policy = BaselinePolicy(BaselineConfig(num_action_chunks=2, image_keys=(), state_keys=("eef_pos", "target_pos"),
                                           mlp_hidden=(16,)))
    params = policy.init(jax.random.PRNGKey(1), {"state": jnp.zeros((1, 6))})
    run = lambda seed: _evaluate(PointEnv(num_envs=4, max_episode_steps=8, shaped=True), policy, params,  # noqa
                                 seed=seed, rollout_epoch=2)
    first, again, other = run(5), run(5), run(6)
    keys = [k for k in first if k.startswith("eval/")]
    assert {k: first[k] for k in keys} == {k: again[k] for k in keys}
    assert first["eval/return"] != other["eval/return"]


def test_isaaclab_backend_through_the_adapter(tmp_path):
    """The same evaluator and video on the IsaacLab adapter (over the CPU test double of IsaacLab)."""
    from isaaclab_double import VISUOMOTOR, FakeIsaacLab
    from jaxrl_isaac.envs.isaaclab import make_isaaclab_env
    from jaxrl_isaac.video import VideoSettings
    # env 1 stacks mid-window, env 2 drops a cube, env 3 stacks on the window's last step.
    lab = FakeIsaacLab("3.0", script={2: {"success": [1]}, 3: {"cube_2_dropping": [2]}, 4: {"success": [3]}})
    env = make_isaaclab_env(f"IsaacContrib-{VISUOMOTOR}", modules=lab, num_envs=4, device="cpu", seed=0,
                            table_cam=(24, 32), wrist_cam=(16, 16), max_episode_steps=4)
    policy = BaselinePolicy(BaselineConfig(num_action_chunks=2, image_keys=("table_cam",), image_size=16,
                                           cnn_channels=(4,), state_keys=("eef_pos", "gripper_pos"), mlp_hidden=(8,)))
    evaluator = Evaluator(env, policy, EvalSettings(num_action_chunks=2, chunk_steps=2, max_episode_steps=4),
                          video=VideoSettings(video_dir=tmp_path), owns_env=True)
    m = evaluator.evaluate(evaluator.init_params(jax.random.PRNGKey(0)), global_step=7)
    evaluator.close()
    assert m["eval/num_trajectories"] == 4 and m["eval/episode_len"] == 4
    assert m["eval/success_once"] == 0.5 and m["eval/success_at_end"] == 0.25  # the drop counts in neither
    assert read_video(tmp_path / "global_step_7_epoch_0.mp4").shape[0] == 4


# ---- end to end on the default embedded config --------------------------------------------------------------

TINY = [
    "env.train.total_num_envs=4", "env.train.max_episode_steps=16", "env.train.max_steps_per_rollout_epoch=16",
    "actor.model.num_action_chunks=4", "actor.global_batch_size=8", "actor.micro_batch_size=2",
    "algorithm.update_epoch=2", "runner.save_interval=-1",
]
CONFIG = ["--config-name", "embedded_reach_ppo_baseline"]


def _rows(log: Path) -> list[dict]:
    return [json.loads(line) for line in (log / "metrics.jsonl").read_text().splitlines()]


def _eval_keys(row: dict) -> dict:
    return {k: v for k, v in row.items() if k.startswith("eval/")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """3 global steps with eval every 2 (so at steps 2 and 3, the last) and a checkpoint at step 3."""
    log = tmp_path_factory.mktemp("run") / "with_eval"
    assert train.main([*CONFIG, *TINY, "runner.max_epochs=3", "runner.val_check_interval=2",
                       f"runner.logger.log_path={log}"]) == 0
    return log


def test_in_training_eval_at_val_check_interval_leaves_training_unchanged(trained, tmp_path):
    rows = _rows(trained)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert not _eval_keys(rows[0]) and "time/eval" not in rows[0]
    for r in rows[1:]:
        assert set(_eval_keys(r)) == {"eval/success_once", "eval/success_at_end", "eval/return", "eval/episode_len",
                                      "eval/reward", "eval/num_trajectories"} and r["time/eval"] > 0
        assert r["eval/num_trajectories"] == 4 and r["eval/episode_len"] == 16
    assert rows[1]["eval/return"] != rows[2]["eval/return"]  # the params changed between the two evaluations
    # Eval has its own env and no RNG of the trainer's: the same run without eval trains identically.
    plain = tmp_path / "plain"
    assert train.main([*CONFIG, *TINY, "runner.max_epochs=2", f"runner.logger.log_path={plain}"]) == 0
    for with_eval, without in zip(rows[:2], _rows(plain)):
        for key in ("actor/loss", "actor/grad_norm", "env/return", "rollout/returns_mean"):
            assert with_eval[key] == without[key], key


def test_eval_cli_reproduces_in_training_eval_and_writes_video(trained, tmp_path, capsys):
    ckpt = trained / "checkpoints"
    out = tmp_path / "eval"
    args = [*CONFIG, *TINY, f"runner.ckpt_path={ckpt}", f"runner.logger.log_path={out}"]
    assert eval_mod.main([*args, "env.eval.video_cfg.save_video=true"]) == 0
    stdout = capsys.readouterr().out
    assert "eval/success_once" in stdout and "global step 3" in stdout
    assert eval_mod.main(args) == 0
    first, second = _rows(out)
    # Logged at the checkpoint's step; the same numbers twice, and the same as the training run's eval at step 3.
    assert first["step"] == second["step"] == 3
    assert _eval_keys(first) == _eval_keys(second) == _eval_keys(_rows(trained)[2])
    frames = read_video(out / "video" / "eval" / "global_step_3_epoch_0.mp4")
    assert frames.shape[0] == 16 and frames.shape[1] % 16 == 0  # one frame per env step, 2 x 2 tiles of 64 px x2

    # runner.only_eval through the training command: evaluation only, same numbers, no training rows.
    only = tmp_path / "only"
    assert train.main([*CONFIG, *TINY, "runner.only_eval=true", f"runner.ckpt_path={ckpt}/global_step_3",
                       f"runner.logger.log_path={only}"]) == 0
    (row,) = _rows(only)
    assert row["step"] == 3 and _eval_keys(row) == _eval_keys(first) and "actor/loss" not in row
    assert not (only / "checkpoints").exists()


@pytest.mark.parametrize("override, message", [
    ("runner.ckpt_path={tmp}/nope", "checkpoint path {tmp}/nope does not exist"),
    ("", "runner.ckpt_path is required"),
    ("runner.ckpt_path={ckpt} actor.model.baseline.mlp_hidden=[32]", "does not fit the configured model"),
])
def test_bad_checkpoint_is_one_line_rc2(trained, tmp_path, capsys, override, message):
    extra = override.format(tmp=tmp_path, ckpt=trained / "checkpoints").split()
    rc = eval_mod.main([*CONFIG, *TINY, f"runner.logger.log_path={tmp_path / 'out'}", *extra])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.format(tmp=tmp_path) in err[0], err
