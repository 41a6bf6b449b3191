"""The embedded MuJoCo Franka env against IsaacLab's vectorised contract (small N, 64x64 cameras)."""

import numpy as np
import pytest
import torch

from jaxrl_isaac.envs import embedded
from jaxrl_isaac.envs.contract import CAMERA_KEYS, PROPRIO_KEYS, EnvInputError, VecEnv
from jaxrl_isaac.envs.embedded import scene, tasks

CAM = (64, 64)
EDGE = scene.CUBE_EDGE
REST = tasks.CUBE_REST_Z


def make(task_id=tasks.STACK_ID, num_envs=2, **kwargs):
    kwargs.setdefault("table_cam", CAM)
    kwargs.setdefault("wrist_cam", CAM)
    return embedded.make(task_id, num_envs=num_envs, **kwargs)


def low_dim(obs):
    group = obs["policy"]
    return {k: group[k].clone() for k in group if k not in CAMERA_KEYS}


def tower(x=0.5, y=0.12, order=(0, 1, 2)):
    """cube_positions (9,) with the cubes stacked at (x, y), bottom to top in ``order``."""
    pos = np.zeros((3, 3))
    for level, cube in enumerate(order):
        pos[cube] = [x, y, REST + level * EDGE]
    return pos.reshape(9)


@pytest.mark.parametrize("task_id", embedded.TASK_IDS)
def test_contract_shapes_dtypes_devices(task_id):
    env = make(task_id, num_envs=2)
    assert isinstance(env, VecEnv) and env.action_dim == 7 and env.quat_order == "xyzw"
    obs, extras = env.reset(seed=0)
    group = obs["policy"]
    expected = {"actions": 7, "joint_pos": 9, "joint_vel": 9, "eef_pos": 3, "eef_quat": 4, "gripper_pos": 2,
                "cube_positions": 9, "cube_orientations": 12}
    if task_id == tasks.REACH_ID:
        expected["target_pos"] = 3
    assert set(group) == set(expected) | set(CAMERA_KEYS) and set(PROPRIO_KEYS) <= set(group)
    for _ in range(2):
        for key, width in expected.items():
            assert group[key].shape == (2, width) and group[key].dtype == torch.float32, key
            assert group[key].device == env.device
        for cam in CAMERA_KEYS:
            assert group[cam].shape == (2, *CAM, 3) and group[cam].dtype == torch.uint8
        torch.testing.assert_close(group["eef_quat"].norm(dim=-1), torch.ones(2))
        obs, reward, terminated, truncated, extras = env.step(torch.zeros(2, 7))
        group = obs["policy"]
        assert reward.shape == (2,) and reward.dtype == torch.float32
        assert terminated.dtype == torch.bool and truncated.dtype == torch.bool and terminated.shape == (2,)
        assert extras["success"].dtype == torch.bool and extras["dropped"].dtype == torch.bool
        assert all(isinstance(v, float) for v in extras["log"].values())
    # Fingers open at the start: gripper_pos = [finger1, -finger2] = [0.04, -0.04]; arm near the default pose.
    torch.testing.assert_close(group["gripper_pos"], torch.tensor([[0.04, -0.04]] * 2), atol=1e-3, rtol=0)
    assert group["joint_pos"].abs().max() < 0.15
    assert env.task_description == embedded.task_description(task_id)
    env.close()


def test_default_pose_puts_the_tcp_above_the_workspace_pointing_down():
    env = make(tasks.STACK_ID, num_envs=1)
    obs, _ = env.reset(seed=0, options={"joint_pos": scene.DEFAULT_JOINT_POS})
    eef = obs["policy"]["eef_pos"][0]
    assert 0.4 < eef[0] < 0.5 and abs(eef[1]) < 0.05 and 0.2 < eef[2] < 0.3
    x, y, z, w = obs["policy"]["eef_quat"][0].tolist()  # 180 deg about ~x: the gripper points down
    assert abs(x) > 0.95


def test_relative_pose_action_moves_the_tcp_the_commanded_way():
    env = make(tasks.STACK_ID, num_envs=1)
    obs, _ = env.reset(seed=0)
    start = obs["policy"]["eef_pos"][0].clone()
    for _ in range(10):
        obs, *_ = env.step(torch.tensor([[0.1, 0.0, -0.1, 0.0, 0.0, 0.0, 1.0]]))
    moved = obs["policy"]["eef_pos"][0] - start
    assert moved[0] > 0.03 and moved[2] < -0.03 and abs(moved[1]) < 0.01
    for _ in range(5):
        obs, *_ = env.step(torch.tensor([[0.0] * 6 + [-1.0]]))
    assert obs["policy"]["gripper_pos"][0, 0] < 0.005  # closed on nothing


def test_same_seed_same_rollout_different_seed_different_start():
    actions = torch.from_numpy(np.random.default_rng(0).normal(0, 0.3, size=(6, 3, 7)).astype(np.float32))

    def rollout(seed):
        env = make(tasks.STACK_ID, num_envs=3, seed=seed)
        obs, _ = env.reset()
        trace = [low_dim(obs)]
        for action in actions:
            obs, reward, *_ = env.step(action)
            trace.append(low_dim(obs) | {"reward": reward.clone()})
        return trace

    first, again, other = rollout(7), rollout(7), rollout(8)
    for a, b in zip(first, again):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert not torch.equal(first[0]["cube_positions"], other[0]["cube_positions"])


def test_reset_seed_reseeds_and_partial_reset_touches_only_given_envs():
    env = make(tasks.STACK_ID, num_envs=3)
    a = low_dim(env.reset(seed=3)[0])
    b = low_dim(env.reset(seed=3)[0])
    assert torch.equal(a["cube_positions"], b["cube_positions"])
    c = low_dim(env.reset(env_ids=[1])[0])
    assert torch.equal(c["cube_positions"][[0, 2]], b["cube_positions"][[0, 2]])
    assert not torch.equal(c["cube_positions"][1], b["cube_positions"][1])


def test_same_step_auto_reset_on_success():
    env = make(tasks.REACH_ID, num_envs=2)
    obs, _ = env.reset(seed=0)
    eef = obs["policy"]["eef_pos"]
    # Env 0's target is where its TCP already is; env 1's is far away.
    env.reset(env_ids=[0], options={"target_pos": eef[0], "joint_pos": obs["policy"]["joint_pos"][0] +
                                    torch.from_numpy(scene.DEFAULT_JOINT_POS).float()})
    obs, _ = env.reset(env_ids=[1], options={"target_pos": [0.6, 0.25, 0.1]})
    old_target = obs["policy"]["target_pos"].clone()
    action = torch.tensor([[0.0] * 6 + [1.0], [0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    obs, reward, terminated, truncated, extras = env.step(action)
    assert terminated.tolist() == [True, False] and truncated.tolist() == [False, False]
    assert extras["success"].tolist() == [True, False] and reward.tolist() == [1.0, 0.0]
    assert extras["episode_len"].tolist() == [1, 0]
    assert extras["log"]["Episode_Termination/success"] == 1.0
    # Env 0's returned obs is the first obs of a fresh episode: new target, counters and last action cleared.
    assert env.episode_length_buf.tolist() == [0, 1]
    assert not torch.equal(obs["policy"]["target_pos"][0], old_target[0])
    assert torch.equal(obs["policy"]["target_pos"][1], old_target[1])
    assert obs["policy"]["actions"][0].abs().sum() == 0 and torch.equal(obs["policy"]["actions"][1], action[1])


def test_truncation_at_max_episode_steps():
    env = make(tasks.STACK_ID, num_envs=2, max_episode_steps=3)
    obs, _ = env.reset(seed=0)
    start = obs["policy"]["cube_positions"].clone()
    for step in range(1, 4):
        obs, reward, terminated, truncated, extras = env.step(torch.zeros(2, 7))
        assert truncated.tolist() == [step == 3] * 2 and not terminated.any()
    assert extras["episode_len"].tolist() == [3, 3] and extras["log"]["Episode_Termination/time_out"] == 2.0
    assert env.episode_length_buf.tolist() == [0, 0]
    assert not torch.allclose(obs["policy"]["cube_positions"], start, atol=1e-3)


def test_group_size_shares_starts_within_groups_only():
    env = make(tasks.STACK_ID, num_envs=4, group_size=2)
    obs, _ = env.reset(seed=1)
    actions = torch.from_numpy(np.random.default_rng(1).normal(0, 0.3, size=(3, 1, 7)).astype(np.float32))
    for t in range(4):
        state = low_dim(obs)
        for key in ("joint_pos", "cube_positions", "cube_orientations", "eef_pos"):
            assert torch.equal(state[key][0], state[key][1]) and torch.equal(state[key][2], state[key][3]), key
        assert not torch.equal(state["cube_positions"][0], state["cube_positions"][2])
        if t < 3:  # identical actions within a group keep the sub-envs bit-identical
            obs, *_ = env.step(actions[t].expand(4, 7).contiguous())
    obs, _ = env.reset(env_ids=[1])  # a single-env reset draws a fresh start
    assert not torch.equal(obs["policy"]["cube_positions"][0], obs["policy"]["cube_positions"][1])
    with pytest.raises(ValueError, match="group_size"):
        make(tasks.STACK_ID, num_envs=4, group_size=3)


def test_cameras_render_only_when_read_and_show_the_cubes():
    env = make(tasks.STACK_ID, num_envs=2)
    spread = np.array([[0.45, -0.08, REST], [0.55, 0.0, REST], [0.45, 0.08, REST]]).reshape(9)
    obs, _ = env.reset(seed=0, options={"cube_positions": spread})
    for _ in range(3):
        obs, *_ = env.step(torch.zeros(2, 7))
    assert env.render_count == 0
    table = obs["policy"]["table_cam"]
    assert env.render_count == 2
    assert obs["policy"]["table_cam"] is table and env.render_count == 2  # cached for this step
    wrist = obs["policy"]["wrist_cam"]
    assert env.render_count == 4
    for image in (table, wrist):
        r, g, b = (image[..., c].int() for c in range(3))
        red = (r > 150) & (g < 110) & (b < 110)
        blue = (b > 150) & (r < 110) & (g < 150)
        assert red.sum(dim=(1, 2)).min() > 10 and blue.sum(dim=(1, 2)).min() > 10
    stale, *_ = env.step(torch.zeros(2, 7))
    assert obs["policy"]["wrist_cam"] is wrist  # images already read outlive the step
    env.step(torch.zeros(2, 7))
    assert env.render_count == 4
    with pytest.raises(RuntimeError, match="stepped past"):  # images of a past state cannot be rendered
        stale["policy"]["wrist_cam"]


def test_small_cameras_get_coarser_primitives_that_draw_nearly_the_same_pixels():
    import mujoco
    small = mujoco.MjModel.from_xml_string(scene.build_mjcf(scene.SceneConfig((32, 32), (32, 32))))
    large = mujoco.MjModel.from_xml_string(scene.build_mjcf(scene.SceneConfig((200, 200), (96, 96))))
    assert (small.vis.quality.numslices, small.vis.quality.numstacks) == (12, 6)
    assert (large.vis.quality.numslices, large.vis.quality.numstacks) == (28, 16)  # MuJoCo's defaults
    env = make(tasks.STACK_ID, num_envs=3, table_cam=(32, 32), wrist_cam=(32, 32))
    obs, _ = env.reset(seed=0)
    coarse = {key: obs["policy"][key].numpy().astype(int) for key in CAMERA_KEYS}
    env.model.vis.quality.numslices, env.model.vis.quality.numstacks = 28, 16
    fine_renderer = type(env._renderer)(env.model, {key: (32, 32) for key in CAMERA_KEYS})
    for key in CAMERA_KEYS:
        diff = np.abs(coarse[key] - fine_renderer.render(key, env._datas).astype(int))
        assert diff.mean() < 0.5 and np.quantile(diff, 0.99) <= 8, key  # levels of 255


def test_tiled_rendering_draws_the_per_frame_pixels_in_every_tile_and_pass(monkeypatch):
    """Tiles of one buffer (init_params.tiled_rendering) against one frame per sub-env: the same images up to a lone
    edge pixel the rasterizer rounds differently at a tile's offset, in every tile position and in a second pass."""
    from jaxrl_isaac.envs.embedded import rendering
    assert rendering.tile_grid(64, (32, 32)) == (1, 64)
    assert rendering.tile_grid(100, (200, 200)) == (10, 10)  # 10 x 10 tiles of 200 px fit 2048: a second pass
    assert rendering.tile_grid(3, (32, 48)) == (1, 3)
    with pytest.raises(ValueError, match="does not fit"):
        rendering.tile_grid(1, (4096, 32))
    monkeypatch.setattr(rendering, "MAX_TILED_BUFFER", 96)  # 3 x 3 tiles of 32 px: 11 sub-envs need 2 passes
    actions = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (4, 11, 7)).astype(np.float32))
    images = {}
    for tiled in (False, True):
        env = make(tasks.STACK_ID, num_envs=11, seed=3, table_cam=(32, 32), wrist_cam=(32, 32),
                   tiled_rendering=tiled)
        obs, _ = env.reset(seed=3)
        for action in actions:
            obs, *_ = env.step(action)
        images[tiled] = {key: obs["policy"][key].numpy().astype(int) for key in CAMERA_KEYS}
        assert env.render_count == 22
        env.close()
    for key in CAMERA_KEYS:
        differ = np.abs(images[True][key] - images[False][key]).max(axis=-1) > 0  # (N, H, W)
        assert differ.mean() < 1e-3 and differ.sum(axis=(1, 2)).max() <= 2, key
        assert images[True][key].std(axis=0).mean() > 1.0, key  # the sub-envs' images differ: not one tile copied
    with pytest.raises(ValueError, match="tiled_rendering must be a bool"):
        make(tasks.STACK_ID, num_envs=1, tiled_rendering="yes")


def test_reach_marker_is_visible():
    env = make(tasks.REACH_ID, num_envs=1)
    obs, _ = env.reset(seed=0, options={"target_pos": [0.5, -0.2, 0.15]})
    image = obs["policy"]["table_cam"][0].int()
    orange = (image[..., 0] > 200) & (image[..., 1] > 60) & (image[..., 1] < 180) & (image[..., 2] < 60)
    assert orange.sum() > 5


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(2, 6), "shape"),
    (torch.zeros(2, 7, dtype=torch.int64), "dtype"),
    (torch.zeros(2, 7, device="meta"), "device"),
    (torch.tensor([[0.0] * 7, [float("nan")] + [0.0] * 6]), "NaN"),
    (np.zeros((2, 7), np.float32), "torch.Tensor"),
])
def test_bad_actions_raise_before_the_sim_moves(bad, message):
    env = make(tasks.STACK_ID, num_envs=2)
    env.reset(seed=0)
    env.step(torch.full((2, 7), 0.2))
    qpos = [d.qpos.copy() for d in env._datas]
    with pytest.raises(EnvInputError, match=message):
        env.step(bad)
    assert env.episode_length_buf.tolist() == [1, 1]
    assert all(np.array_equal(q, d.qpos) for q, d in zip(qpos, env._datas))


def test_bad_constructor_and_reset_inputs():
    with pytest.raises(ValueError) as info:
        embedded.make("Isaac-Stack-Cube-Franka-IK-Rel-Visuomotor-v0", num_envs=1)
    assert all(task_id in str(info.value) for task_id in embedded.TASK_IDS) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="reward_type"):
        make(reward_type="dense")
    env = make(num_envs=2)
    with pytest.raises(EnvInputError, match="cube_pos"):
        env.reset(options={"cube_pos": np.zeros(9)})
    with pytest.raises(EnvInputError, match="env_ids"):
        env.reset(env_ids=[2])
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.step(torch.zeros(2, 7))


def test_cubes_stacked_detector_on_hand_made_states():
    stacked = tower().reshape(1, 3, 3)
    still, opened = np.zeros((1, 3, 3)), np.full((1, 2), 0.04)
    assert tasks.cubes_stacked(stacked, still, opened).tolist() == [True]
    assert tasks.cubes_stacked(stacked, still, np.full((1, 2), 0.023)).tolist() == [False]  # holding
    assert tasks.cubes_stacked(stacked, still, np.array([[0.04, 0.0398]])).tolist() == [False]  # not fully open
    assert tasks.cubes_stacked(tower(order=(1, 0, 2)).reshape(1, 3, 3), still, opened).tolist() == [False]
    moving = still.copy()
    moving[0, 2, 2] = -0.1
    assert tasks.cubes_stacked(stacked, moving, opened).tolist() == [False]
    shifted = stacked.copy()
    shifted[0, 2, 0] += 0.045
    assert tasks.cubes_stacked(shifted, still, opened).tolist() == [False]


def test_stack_success_in_sim_needs_order_and_an_open_gripper():
    env = make(tasks.STACK_ID, num_envs=3)
    open_arm = scene.DEFAULT_JOINT_POS.copy()
    closed_arm = open_arm.copy()
    closed_arm[7:] = 0.0
    env.reset(seed=0, options={
        "cube_positions": np.stack([tower(), tower(), tower(order=(1, 0, 2))]),
        "joint_pos": np.stack([open_arm, closed_arm, open_arm])})
    gripper = torch.tensor([1.0, -1.0, 1.0])
    successes = torch.zeros(3, dtype=torch.int64)
    for _ in range(6):
        _, reward, terminated, _, extras = env.step(torch.cat([torch.zeros(3, 6), gripper[:, None]], dim=1))
        assert torch.equal(reward, extras["success"].float()) and torch.equal(terminated, extras["success"])
        successes += extras["success"].long()
        if successes[0]:
            break
    assert successes.tolist() == [1, 0, 0]


def test_dropped_cube_terminates_without_success():
    env = make(tasks.LIFT_ID, num_envs=2)
    off_table = np.array([[0.45, -0.1, REST], [0.5, 0.0, REST], [1.12, 0.0, REST]]).reshape(9)
    env.reset(seed=0, env_ids=[0], options={"cube_positions": off_table})
    dropped_at = None
    for step in range(1, 20):
        _, reward, terminated, _, extras = env.step(torch.zeros(2, 7))
        if extras["dropped"][0]:
            dropped_at = step
            break
    assert dropped_at is not None and terminated[0] and not extras["success"][0] and reward[0] == 0.0
    assert extras["log"]["Episode_Termination/cube_dropping"] == 1.0


def test_shaped_reward_is_dense_and_sparse_reward_is_not():
    rewards = {}
    for reward_type in ("sparse", "shaped"):
        env = make(tasks.LIFT_ID, num_envs=2, reward_type=reward_type)
        obs, _ = env.reset(seed=0)
        total = torch.zeros(2)
        for _ in range(5):
            obs, reward, *_ = env.step(torch.tensor([[0.1, 0.0, -0.2, 0, 0, 0, 1.0]] * 2))
            total += reward.abs()
        rewards[reward_type] = total
    assert torch.all(rewards["sparse"] == 0) and torch.all(rewards["shaped"] > 0)


def test_gl_backend_choice(monkeypatch):
    from jaxrl_isaac.envs.embedded import gl_backend
    monkeypatch.setattr(gl_backend, "GL_CHOSEN_BEFORE_CONFIG", gl_backend.GL_CHOSEN_BEFORE_CONFIG)
    monkeypatch.setattr(gl_backend, "mujoco_gl_already_read", lambda: False)
    for gpu, expected in ((True, "egl"), (False, "osmesa")):
        monkeypatch.delenv("MUJOCO_GL", raising=False)
        monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
        monkeypatch.setattr(gl_backend, "_cuda_gpu_visible", lambda gpu=gpu: gpu)
        assert gl_backend.configure_gl_backend() == expected
        assert gl_backend.os.environ["PYOPENGL_PLATFORM"] == expected
    monkeypatch.setenv("MUJOCO_GL", "glfw")
    assert gl_backend.configure_gl_backend() == "glfw"  # the user's choice wins


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_outputs():
    env = make(tasks.STACK_ID, num_envs=2, device="cuda")
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, extras = env.step(torch.zeros(2, 7, device="cuda"))
    assert reward.is_cuda and terminated.is_cuda and obs["policy"]["eef_pos"].is_cuda
    assert obs["policy"]["table_cam"].is_cuda
    with pytest.raises(EnvInputError, match="device"):
        env.step(torch.zeros(2, 7))


def test_bench_prints_a_markdown_table(capsys):
    from jaxrl_isaac.bench import env as bench_env
    bench_env.main(["--num-envs", "2", "--steps", "3", "--camera-steps", "2", "--cam-size", "32", "--chunk", "2"])
    out = capsys.readouterr().out
    assert "| num_envs | no cameras |" in out and "\n| 2 | " in out
    bench_env.main(["--num-envs", "2", "--steps", "2", "--cam-size", "16", "--chunk", "1", "--modes",
                    "cameras_every_chunk", "--rendering", "per_frame", "tiled"])
    assert "every 1 steps, 1 worker, tiled |" in capsys.readouterr().out


def test_render_bench_splits_a_frame_and_tiles_the_same_pixels(capsys):
    from jaxrl_isaac.bench import render as bench_render
    result = bench_render.measure("Embedded-Reach-Franka-IK-Rel-v0", num_envs=20, cam_size=32, camera="wrist_cam",
                                  repeats=1)
    assert all(result[k] > 0 for k in ("mjr_render", "per_frame_total", "tiled_total"))
    assert result["tiled_mean_abs_diff"] < 0.01  # 20 tiles of 32 px wrap into a second row of the buffer
    bench_render.main(["--num-envs", "2", "--cam-size", "32", "--repeats", "1"])
    assert "| 2 | 32 | " in capsys.readouterr().out


def test_importing_triton_after_osmesa_rendering_does_not_crash():
    """OSMesa and triton each bring an LLVM; triton imported after an OSMesa context used to segfault the process
    (transformers imports it through torch._dynamo). The package preloads triton; check it in a fresh process."""
    import importlib.util
    import os
    import subprocess
    import sys
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    code = ("from jaxrl_isaac.envs import embedded\n"
            "env = embedded.make('Embedded-Reach-Franka-IK-Rel-v0', num_envs=1, table_cam=(16, 16), wrist_cam=(16, 16))\n"
            "obs, _ = env.reset(seed=0)\n"
            "assert obs['policy']['table_cam'].shape == (1, 16, 16, 3)\n"
            "import triton\n")
    env = {**os.environ, "MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
