"""The IsaacLab backend (launcher, registry, adapter, factory) against the IsaacLab test double."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import textwrap
import types

import pytest
import torch

import jaxrl_isaac.envs.isaaclab
from isaaclab_double import COSMOS, REWARDED, VISUOMOTOR, FakeIsaacLab, FakeTask
from jaxrl_isaac.envs import factory
from jaxrl_isaac.envs.contract import CAMERA_KEYS, POLICY_GROUP, PROPRIO_KEYS, EnvInputError, VecEnv
from jaxrl_isaac.envs.isaaclab import (IsaacLabNotInstalled, IsaacLabTaskSpec, ObsTermNames, detect_api_version,
                                       get_isaaclab_task, id_in_convention, launcher, make_isaaclab_env, registry,
                                       register_isaaclab_task)
from jaxrl_isaac.envs.obs_mapping import quat_to_axis_angle

V2_VISUOMOTOR, V3_VISUOMOTOR = f"Isaac-{VISUOMOTOR}-v0", f"IsaacContrib-{VISUOMOTOR}"
V2_COSMOS, V3_COSMOS = f"Isaac-{COSMOS}-v0", f"IsaacContrib-{COSMOS}"
V2_REWARDED = f"Isaac-{REWARDED}-v0"
N = 4
# Env 1 stacks on step 2; env 2 drops cube 2 on step 3; env 3 "stacks" and drops at once on step 4.
SCRIPT = {2: {"success": [1]}, 3: {"cube_2_dropping": [2]}, 4: {"success": [3], "cube_1_dropping": [3]}}


def make(lab: FakeIsaacLab, task_id: str, **kwargs):
    kwargs = {"num_envs": N, "device": "cpu", "seed": 3, "table_cam": (24, 32), "wrist_cam": (16, 16), **kwargs}
    return make_isaaclab_env(task_id, modules=lab, **kwargs)


def zero_action(env) -> torch.Tensor:
    return torch.zeros(env.num_envs, env.action_dim)


@pytest.fixture
def scratch_registry(monkeypatch):
    """User registrations made by a test vanish after it."""
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))


# --- lazy import and the not-installed error ------------------------------------------------------------------------

def test_importing_the_backend_imports_no_isaaclab():
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("isaaclab", "isaaclab_tasks", "isaacsim", "omni", "carb", "pxr", "gymnasium"):
                    raise ImportError("imported " + name)
        sys.meta_path.insert(0, Block())
        import jaxrl_isaac.envs.factory, jaxrl_isaac.envs.obs_mapping
        from jaxrl_isaac.envs.isaaclab import get_isaaclab_task, IsaacLabTaskSpec, register_isaaclab_task
        register_isaaclab_task("My-Task-v0", IsaacLabTaskSpec(task_description="do it"))
        assert get_isaaclab_task("My-Task-v0").success_term == "success"
        print("no isaaclab import")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "no isaaclab import" in result.stdout, result.stderr[-2000:]


def test_missing_isaaclab_is_one_line_naming_module_and_install():
    with pytest.raises(IsaacLabNotInstalled) as info:
        make(FakeIsaacLab(installed=False), V3_VISUOMOTOR)
    message = str(info.value)
    assert "\n" not in message
    for needle in ("module 'isaaclab' is not importable", "Python 3.12", "RTX GPU", "isaaclab[isaacsim,all]==3.0.0",
                   "pypi.nvidia.com", "./isaaclab.sh --install", "env_type=embedded"):
        assert needle in message, needle


@pytest.mark.skipif(importlib.util.find_spec("isaaclab") is not None, reason="IsaacLab is installed here")
def test_factory_without_isaaclab_installed_raises_not_installed():
    with pytest.raises(IsaacLabNotInstalled, match="env_type=isaaclab needs IsaacLab"):
        factory.make_env(split_cfg())


# --- versions and ids -----------------------------------------------------------------------------------------------

def test_detect_api_version():
    assert detect_api_version("3.0.0", None) == "3.0"
    assert detect_api_version("2.3.2.post1", None) == "2.x"
    assert detect_api_version(None, types.SimpleNamespace(launch_simulation=object())) == "3.0"
    assert detect_api_version(None, types.SimpleNamespace(AppLauncher=object())) == "2.x"


def test_id_in_convention_both_ways():
    assert id_in_convention(V2_VISUOMOTOR, "3.0") == V3_VISUOMOTOR
    assert id_in_convention(V3_COSMOS, "2.x") == V2_COSMOS
    assert id_in_convention(V3_VISUOMOTOR, "3.0") == V3_VISUOMOTOR  # already 3.0
    assert id_in_convention(V2_VISUOMOTOR, "2.x") == V2_VISUOMOTOR
    assert id_in_convention("Isaac-Lift-Cube-Franka-v1", "3.0") == "Isaac-Lift-Cube-Franka-v1"  # only -v0 renamed


def test_2x_id_on_3_0_maps_to_the_renamed_id_with_a_log_line(caplog):
    lab = FakeIsaacLab("3.0")
    with caplog.at_level(logging.INFO, logger=launcher.__name__):
        env = make(lab, V2_VISUOMOTOR)
    assert lab.parse_calls[0]["task_name"] == V3_VISUOMOTOR
    assert f"registers '{V2_VISUOMOTOR}' as '{V3_VISUOMOTOR}'" in caplog.text
    assert env.task_id == V2_VISUOMOTOR and env.quat_order == "xyzw"
    env.close()


def test_3_0_id_on_2x_maps_back():
    lab = FakeIsaacLab("2.x")
    env = make(lab, V3_COSMOS)
    assert lab.parse_calls[0]["task_name"] == V2_COSMOS and env.quat_order == "wxyz"
    env.close()


def test_rewarded_id_on_stock_isaaclab_names_the_rlinf_fork_and_closes_the_app():
    lab = FakeIsaacLab("2.x")
    with pytest.raises(ValueError, match="RLinf's IsaacLab fork") as info:
        make(lab, V2_REWARDED)
    assert "\n" not in str(info.value)
    assert not lab.app_running and lab.app_closes == 1


def test_unknown_task_id_lists_registered_ids():
    with pytest.raises(KeyError, match=f"unknown IsaacLab task id 'Isaac-Nope-v0'; registered: .*{V3_COSMOS}"):
        get_isaaclab_task("Isaac-Nope-v0")


# --- launching and the env cfg --------------------------------------------------------------------------------------

def test_3_0_launch_sets_cfg_and_builds_inside_launch_simulation(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":1")
    lab = FakeIsaacLab("3.0")
    env = make(lab, V3_VISUOMOTOR, num_envs=3, seed=11, table_cam=(24, 32), wrist_cam=(16, 20), max_episode_steps=5)
    cfg = lab.env.cfg
    assert (cfg.scene.num_envs, cfg.seed, cfg.sim.device) == (3, 11, "cpu")
    assert (cfg.scene.table_cam.height, cfg.scene.table_cam.width) == (24, 32)
    assert (cfg.scene.wrist_cam.height, cfg.scene.wrist_cam.width) == (16, 20)
    assert lab.env.max_episode_length == 5 and env.max_episode_length == 5
    assert lab.parse_calls == [{"task_name": V3_VISUOMOTOR, "device": "cpu", "num_envs": 3}]
    assert lab.app_launches == [{"enable_cameras": True, "device": "cpu"}] and lab.display_at_launch == [None]
    assert lab.env.made_inside_app and lab.app_running
    env.close()
    env.close()  # idempotent
    assert lab.env.closed and not lab.app_running and lab.app_closes == 1


def test_2x_launch_starts_app_headless_with_cameras_before_importing_tasks(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":1")
    lab = FakeIsaacLab("2.x")
    env = make(lab, V2_VISUOMOTOR)
    assert lab.app_launches == [{"headless": True, "enable_cameras": True, "device": "cpu"}]
    assert lab.display_at_launch == [None]
    assert lab.imported.index("isaaclab.app") < lab.imported.index("isaaclab_tasks")
    assert env.api_version == "2.x" and env.quat_order == "wxyz"
    env.close()
    assert lab.app_closes == 1


def test_max_episode_steps_truncates_exactly_then_auto_resets():
    lab = FakeIsaacLab("3.0")
    env = make(lab, V3_VISUOMOTOR, max_episode_steps=448)
    assert env.max_episode_length == 448  # not 449 from 448 * 0.05 / 0.05 rounding up
    env.close()
    lab = FakeIsaacLab("3.0")
    env = make(lab, V3_VISUOMOTOR, max_episode_steps=3)
    env.reset(seed=0)
    for _ in range(2):
        _, _, _, truncated, _ = env.step(zero_action(env))
        assert not truncated.any()
    _, _, terminated, truncated, extras = env.step(zero_action(env))
    assert truncated.all() and not terminated.any() and not extras["success"].any()
    assert (lab.env.episode_length_buf == 0).all()  # same-step auto-reset
    env.close()


# --- the adapter contract -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("api_version, task_id, quat_order", [("3.0", V3_VISUOMOTOR, "xyzw"),
                                                              ("2.x", V2_VISUOMOTOR, "wxyz")])
def test_adapter_contract(api_version, task_id, quat_order):
    lab = FakeIsaacLab(api_version)
    env = make(lab, task_id)
    assert isinstance(env, VecEnv)
    assert (env.num_envs, env.action_dim, env.device, env.quat_order) == (N, 7, torch.device("cpu"), quat_order)
    assert env.step_dt == pytest.approx(0.05)
    obs, extras = env.reset(seed=5)
    assert not extras["success"].any() and not extras["dropped"].any()
    action = torch.linspace(-1, 1, N * 7).reshape(N, 7)
    obs, reward, terminated, truncated, extras = env.step(action)
    torch.testing.assert_close(lab.env.action_manager.action, action)  # passed through untouched
    policy = obs[POLICY_GROUP]
    for key in CAMERA_KEYS:
        assert policy[key].dtype == torch.uint8 and policy[key].device == env.device
    assert policy["table_cam"].shape == (N, 24, 32, 3) and policy["wrist_cam"].shape == (N, 16, 16, 3)
    for key, width in zip(PROPRIO_KEYS, (3, 4, 2, 9, 9)):
        assert policy[key].shape == (N, width) and policy[key].dtype == torch.float32
    assert reward.shape == (N,) and reward.dtype == torch.float32
    assert terminated.dtype == truncated.dtype == extras["success"].dtype == extras["dropped"].dtype == torch.bool
    assert "log" in extras and "subtask_terms" in obs
    # eef_quat arrives in the version's order; the model state is the same rotation either way.
    truth = lab.env.last_eef_quat_xyzw
    expected = truth if quat_order == "xyzw" else truth[:, [3, 0, 1, 2]]
    torch.testing.assert_close(policy["eef_quat"], expected)
    inputs = env.model_inputs(obs)
    torch.testing.assert_close(inputs["state"][:, 3:6], quat_to_axis_angle(truth))
    assert inputs["task_description"] == [registry.STACK_CUBE_TASK_DESCRIPTION] * N
    env.close()


def test_bad_action_is_rejected_before_the_simulator():
    lab = FakeIsaacLab("3.0")
    env = make(lab, V3_VISUOMOTOR)
    with pytest.raises(EnvInputError, match=r"shape \(4, 6\), expected \(4, 7\)"):
        env.step(torch.zeros(N, 6))
    with pytest.raises(EnvInputError, match="NaN or inf in env"):
        env.step(torch.full((N, 7), float("nan")))
    assert lab.env.step_calls == 0
    env.close()


def run_script(env, steps: int = 4) -> list[tuple]:
    """Steps ``env`` and returns cloned (reward, terminated, success, dropped) per step."""
    env.reset(seed=0)
    out = []
    for _ in range(steps):
        _, reward, terminated, _, extras = env.step(zero_action(env))
        out.append((reward.clone(), terminated.clone(), extras["success"], extras["dropped"]))
    return out


def test_sparse_success_reward_when_the_task_has_no_reward_terms():
    lab = FakeIsaacLab("3.0", script=SCRIPT)
    env = make(lab, V3_VISUOMOTOR)
    steps = run_script(env)
    assert lab.env.reward_buf.abs().sum() == 0  # stock IsaacLab: rewards=None, reward always 0
    reward, terminated, success, _ = steps[1]  # step 2: env 1 stacks
    assert reward.tolist() == [0.0, 1.0, 0.0, 0.0] and success.tolist() == [False, True, False, False]
    assert terminated.tolist() == [False, True, False, False]
    assert lab.env.episode_index[1] == 2  # one episode from reset(), a second from the same-step auto-reset
    assert all(r.sum() == 0 for i, (r, *_) in enumerate(steps) if i != 1)
    env.close()


def test_a_dropped_cube_is_never_success():
    lab = FakeIsaacLab("2.x", script=SCRIPT)
    env = make(lab, V2_VISUOMOTOR)
    steps = run_script(env)
    reward, terminated, success, dropped = steps[2]  # step 3: env 2 drops a cube
    assert terminated[2] and dropped[2] and not success[2] and reward[2] == 0
    reward, terminated, success, dropped = steps[3]  # step 4: env 3's success term fires with a drop
    assert terminated[3] and dropped[3] and not success[3] and reward[3] == 0
    # RLinf's old `success_once |= terminations` would have counted both envs.
    assert sum(int(s.sum()) for *_, s, _ in steps) == 1
    env.close()


def test_reward_terms_pass_through_on_rlinf_fork():
    lab = FakeIsaacLab("2.x", script=SCRIPT, rlinf_fork=True)
    env = make(lab, V2_REWARDED)
    env.reset(seed=0)
    env.step(zero_action(env))
    _, reward, _, _, extras = env.step(zero_action(env))
    assert reward is lab.env.reward_buf  # IsaacLab's own buffer, not ours
    assert reward.tolist() == [0.0, 1.0, 0.0, 0.0]  # RewTerm(cubes_stacked, weight=20) * dt 0.05
    assert extras["success"].tolist() == [False, True, False, False]
    env.close()


def test_spec_that_disagrees_with_the_env_fails_at_construction(scratch_registry):
    register_isaaclab_task(V3_VISUOMOTOR, IsaacLabTaskSpec(task_description="x", has_reward_terms=True,
                                                           failure_terms=registry.STACK_CUBE_FAILURE_TERMS),
                           replace=True)
    lab = FakeIsaacLab("3.0")
    with pytest.raises(ValueError, match=r"has_reward_terms=True but the env's reward terms are \[\]"):
        make(lab, V3_VISUOMOTOR)
    assert lab.env.closed and lab.app_closes == 1
    register_isaaclab_task(V3_COSMOS, IsaacLabTaskSpec(task_description="x", failure_terms=("cube_4_dropping",)),
                           replace=True)
    with pytest.raises(ValueError, match=r"termination terms \['cube_4_dropping'\]"):
        make(FakeIsaacLab("3.0"), V3_COSMOS)


def test_reward_and_dones_are_reused_in_place_so_callers_must_copy():
    for task_id, fork in ((V3_VISUOMOTOR, False), (V2_REWARDED, True)):
        lab = FakeIsaacLab("3.0" if not fork else "2.x", script=SCRIPT, rlinf_fork=fork)
        env = make(lab, task_id)
        env.reset(seed=0)
        env.step(zero_action(env))
        _, reward, terminated, truncated, _ = env.step(zero_action(env))  # env 1 succeeds
        kept_reward, kept_terminated = reward.clone(), terminated.clone()
        _, reward_next, terminated_next, truncated_next, _ = env.step(zero_action(env))
        assert reward_next is reward and terminated_next is terminated and truncated_next is truncated
        assert kept_reward[1] == 1.0 and reward[1] == 0.0  # the step-2 values were overwritten
        assert kept_terminated[1] and not terminated[1]
        env.close()


def test_reset_passes_seed_and_env_ids():
    lab = FakeIsaacLab("3.0")
    env = make(lab, V3_VISUOMOTOR)
    obs_a, _ = env.reset(seed=9)
    obs_b, _ = env.reset(seed=9)
    torch.testing.assert_close(obs_a[POLICY_GROUP]["table_cam"], obs_b[POLICY_GROUP]["table_cam"])
    env.reset(env_ids=torch.tensor([2]))
    assert lab.env.episode_index.tolist() == [2, 2, 3, 2]
    env.close()


# --- user tasks -----------------------------------------------------------------------------------------------------

LIFT_ID = "Isaac-Lift-Cube-Franka-Custom-v0"
LIFT_TASK = FakeTask(
    policy_terms={"front_rgb": "table_rgb", "hand_rgb": "wrist_rgb", "eef_pos": "eef_pos", "ee_quat": "eef_quat",
                  "gripper_pos": "gripper_pos", "joint_pos": "joint_pos", "joint_vel": "joint_vel"},
    camera_sensors=("front_cam", "hand_cam"), terminations=("time_out", "object_dropping", "lifted"),
    reward_weights={"lifted": 4.0})


def test_user_registered_task_with_its_own_names(scratch_registry):
    hook_calls = []
    spec = register_isaaclab_task(LIFT_ID, IsaacLabTaskSpec(
        task_description="Lift the cube.", success_term="lifted", failure_terms=("object_dropping",),
        has_reward_terms=True, camera_sensors=("front_cam", "hand_cam"),
        obs_terms=ObsTermNames(table_cam="front_rgb", wrist_cam="hand_rgb", eef_quat="ee_quat"),
        configure_env_cfg=lambda cfg: hook_calls.append(cfg.scene.num_envs)))
    assert get_isaaclab_task(LIFT_ID) is spec
    with pytest.raises(ValueError, match="already registered; pass replace=True"):
        register_isaaclab_task(LIFT_ID, IsaacLabTaskSpec(task_description="other"))
    lab = FakeIsaacLab("3.0", script={1: {"lifted": [0], "object_dropping": [1]}}, extra_tasks={LIFT_ID: LIFT_TASK})
    env = make(lab, LIFT_ID, task_description="Lift the red cube.")
    assert hook_calls == [N]
    assert (lab.env.cfg.scene.front_cam.height, lab.env.cfg.scene.hand_cam.width) == (24, 16)
    env.reset(seed=0)
    obs, reward, _, _, extras = env.step(zero_action(env))
    policy = obs[POLICY_GROUP]
    assert set(policy) >= {"table_cam", "wrist_cam", "eef_quat"} and "front_rgb" not in set(policy)
    assert policy["table_cam"].shape == (N, 24, 32, 3)
    assert extras["success"].tolist() == [True, False, False, False]
    assert extras["dropped"].tolist() == [False, True, False, False]
    assert reward.tolist() == [pytest.approx(0.2), 0.0, 0.0, 0.0]  # the task's own term: 4.0 * dt 0.05
    inputs = env.model_inputs(obs)
    assert inputs["task_description"] == ["Lift the red cube."] * N and inputs["state"].shape == (N, 8)
    env.close()


def test_bad_spec_fails_with_one_line():
    with pytest.raises(TypeError, match="failure_terms must be a tuple"):
        IsaacLabTaskSpec(task_description="x", failure_terms="cube_1_dropping")
    with pytest.raises(ValueError, match="both the success term and a failure term"):
        IsaacLabTaskSpec(task_description="x", failure_terms=("success",))


# --- factory --------------------------------------------------------------------------------------------------------

def split_cfg(**overrides) -> types.SimpleNamespace:
    init = dict(id=V3_VISUOMOTOR, task_description=None, max_episode_steps=None, table_cam=types.SimpleNamespace(height=24, width=32),
                wrist_cam=types.SimpleNamespace(height=16, width=16), reward_type=None)
    init.update(overrides.pop("init_params", {}))
    fields = dict(env_type="isaaclab", total_num_envs=N, max_episode_steps=448, seed=100, group_size=1, device="cpu",
                  init_params=types.SimpleNamespace(**init))
    fields.update(overrides)
    return types.SimpleNamespace(**fields)


def test_factory_builds_isaaclab_env(monkeypatch):
    lab = FakeIsaacLab("3.0")
    monkeypatch.setattr(launcher, "default_module_source", lambda: lab)
    env = factory.make_env(split_cfg(), seed_offset=7, num_envs=2)
    assert isinstance(env, VecEnv) and env.num_envs == 2 and lab.env.cfg.seed == 107
    assert lab.env.max_episode_length == 448 and lab.env.cfg.scene.table_cam.width == 32
    assert env.task_description == registry.STACK_CUBE_TASK_DESCRIPTION
    env.close()
    calls = []
    monkeypatch.setattr(jaxrl_isaac.envs.isaaclab, "make_isaaclab_env", lambda *a, **kw: calls.append((a, kw)))
    factory.make_env(split_cfg(device="cuda", init_params={"max_episode_steps": 16, "task_description": "go"}))
    assert calls == [((V3_VISUOMOTOR,), dict(num_envs=N, device="cuda:0", seed=100, table_cam=(24, 32),
                                             wrist_cam=(16, 16), max_episode_steps=16, task_description="go"))]


def test_factory_builds_embedded_env(monkeypatch):
    calls = []
    fake_embedded = types.SimpleNamespace(make=lambda *args, **kwargs: calls.append((args, kwargs)) or "env")
    monkeypatch.setitem(sys.modules, "jaxrl_isaac.envs.embedded", fake_embedded)
    cfg = split_cfg(env_type="embedded", group_size=2, init_params={"id": "franka-stack", "reward_type": "dense"})
    assert factory.make_env(cfg, seed_offset=1) == "env"
    assert calls == [(("franka-stack", N), dict(device="cpu", seed=101, table_cam=(24, 32), wrist_cam=(16, 16),
                                               max_episode_steps=448, group_size=2, reward_type="dense"))]


@pytest.mark.parametrize("overrides, message", [
    (dict(env_type="maniskill"), r"env_type must be one of \('embedded', 'isaaclab'\), got 'maniskill'"),
    (dict(group_size=8), "group_size=8 needs identical reset states"),
    (dict(init_params={"reward_type": "dense"}), "reward_type='dense', but task .* has no reward terms"),
    (dict(init_params={"table_cam": types.SimpleNamespace(height=0, width=32)}), "init_params.table_cam must have"),
    (dict(init_params={"id": "Isaac-Nope-v0"}), "unknown IsaacLab task id 'Isaac-Nope-v0'"),
])
def test_factory_rejects_bad_config_before_launching(monkeypatch, overrides, message):
    lab = FakeIsaacLab("3.0")
    monkeypatch.setattr(launcher, "default_module_source", lambda: lab)
    with pytest.raises((ValueError, KeyError), match=message):
        factory.make_env(split_cfg(**overrides))
    assert lab.app_launches == [] and lab.made_envs == []
