"""``ParallelFrankaEnv`` (sub-envs stepped in worker processes) against the single-process ``EmbeddedFrankaEnv``.

Few sub-envs, 8x8 cameras: starting a worker (a spawned interpreter importing torch and mujoco) dominates the time.
"""

import multiprocessing
import os

import numpy as np
import pytest
import torch

from jaxrl_isaac.envs import embedded
from jaxrl_isaac.envs.contract import CAMERA_KEYS, EnvInputError, VecEnv
from jaxrl_isaac.envs.embedded import parallel, scene, tasks
from jaxrl_isaac.envs.embedded.parallel import ParallelFrankaEnv

CAM = (8, 8)
REST = tasks.CUBE_REST_Z


def make(task_id=tasks.STACK_ID, num_envs=6, num_workers=2, **kwargs):
    kwargs.setdefault("table_cam", CAM)
    kwargs.setdefault("wrist_cam", CAM)
    return embedded.make(task_id, num_envs=num_envs, num_workers=num_workers, **kwargs)


def low_dim(obs):
    group = obs["policy"]
    return {k: group[k].clone() for k in group if k not in CAMERA_KEYS}


def random_actions(steps, num_envs, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(0, 0.4, size=(steps, num_envs, 7)).astype(np.float32))


def alive(pid):
    return os.path.exists(f"/proc/{pid}")


@pytest.fixture(scope="module")
def env():
    """6 stack sub-envs over 2 workers (shards 0..2 and 3..5)."""
    env = make()
    yield env
    env.close()


def assert_same_outputs(a, b):
    """Step outputs (obs, reward, terminated, truncated, extras) of two envs are identical, term by term."""
    obs_a, *rest_a, extras_a = a
    obs_b, *rest_b, extras_b = b
    assert list(obs_a["policy"]) == list(obs_b["policy"])
    for key, value in low_dim(obs_a).items():
        assert torch.equal(value, obs_b["policy"][key]), key
    for x, y in zip(rest_a, rest_b):
        assert x.dtype == y.dtype and torch.equal(x, y)
    assert extras_a.keys() == extras_b.keys() and extras_a["log"] == extras_b["log"]
    for key in ("success", "dropped", "episode_len"):
        assert extras_a[key].dtype == extras_b[key].dtype and torch.equal(extras_a[key], extras_b[key]), key


def test_one_worker_equals_the_single_process_env():
    kwargs = dict(num_envs=3, seed=5, table_cam=CAM, wrist_cam=CAM, max_episode_steps=6, reward_type="shaped")
    single = embedded.make(tasks.REACH_ID, **kwargs)
    par = ParallelFrankaEnv(tasks.REACH_ID, num_workers=1, **kwargs)
    try:
        actions = random_actions(20, 3, seed=1)
        # Before any reset both hold the constructor's episodes.
        assert_same_outputs(single.step(actions[0]), par.step(actions[0]))
        for s, p in zip(single.reset(), par.reset()):  # no seed: both continue their Generator
            assert s.keys() == p.keys()
        obs = {}
        for t, action in enumerate(actions[1:]):
            if t == 7:  # a partial reset with options and a reseed, mid-rollout
                options = {"target_pos": torch.tensor([[0.5, 0.1, 0.2], [0.4, -0.1, 0.3]])}
                a = single.reset(seed=9, env_ids=[2, 0], options=options)
                b = par.reset(seed=9, env_ids=[2, 0], options=options)
                assert_same_outputs((a[0], a[1]), (b[0], b[1]))
            obs["single"], *rest_s = single.step(action)
            obs["par"], *rest_p = par.step(action)
            assert_same_outputs((obs["single"], *rest_s), (obs["par"], *rest_p))
            assert torch.equal(single.episode_length_buf, par.episode_length_buf)
            if t % 6 == 0:
                for cam in CAMERA_KEYS:
                    assert torch.equal(obs["single"]["policy"][cam], obs["par"]["policy"][cam]), cam
        assert single.render_count == par.render_count > 0
        assert (par.episode_length_buf < 6).all()  # truncations (max 6 steps) auto-reset along the way
    finally:
        single.close()
        par.close()


def test_tiled_rendering_in_workers_equals_the_single_process_env_with_one_worker():
    """Each worker tiles its own shard: with one worker the images equal the in-process tiled env's exactly."""
    kwargs = dict(num_envs=3, seed=5, table_cam=(16, 16), wrist_cam=(16, 16), tiled_rendering=True)
    single = embedded.make(tasks.STACK_ID, **kwargs)
    par = ParallelFrankaEnv(tasks.STACK_ID, num_workers=1, **kwargs)
    two = ParallelFrankaEnv(tasks.STACK_ID, num_workers=3, **kwargs)
    try:
        for env in (single, par, two):
            env.reset(seed=2)
        for action in random_actions(3, 3, seed=4):
            a, b, c = single.step(action)[0]["policy"], par.step(action)[0]["policy"], two.step(action)[0]["policy"]
        for cam in CAMERA_KEYS:
            assert torch.equal(a[cam], b[cam]), cam
            assert c[cam].shape == a[cam].shape and c[cam].float().std() > 1.0, cam
        with pytest.raises(ValueError, match="tiled_rendering must be a bool"):
            ParallelFrankaEnv(tasks.STACK_ID, num_workers=1, num_envs=1, tiled_rendering=1)
    finally:
        for env in (single, par, two):
            env.close()


def test_make_picks_the_class_and_checks_num_workers():
    single = make(num_envs=2, num_workers=1)
    assert type(single) is embedded.EmbeddedFrankaEnv
    single.close()
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="num_workers must be a positive int"):
            make(num_workers=bad)
    with pytest.raises(ValueError) as info:  # shards of 3 cannot hold groups of 2; raised before any process starts
        make(num_envs=6, num_workers=2, group_size=2)
    assert "divisible by group_size=2" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"num_workers must be an int in \[1, num_envs=2\]"):
        make(num_envs=2, num_workers=3)
    with pytest.raises(ValueError, match="known ids"):
        make("Embedded-Push-v0")


def test_contract_shapes_dtypes_and_attributes_match_the_single_env(env):
    single = embedded.make(tasks.STACK_ID, num_envs=6, table_cam=CAM, wrist_cam=CAM)
    assert isinstance(env, VecEnv)
    for attr in ("num_envs", "device", "action_dim", "quat_order", "step_dt", "task", "spec", "task_id",
                 "task_description", "max_episode_steps", "group_size", "reward_type", "ik"):
        assert getattr(env, attr) == getattr(single, attr), attr
    def reset_then_step(e):
        reset = e.reset(seed=0)
        images = [reset[0]["policy"][cam] for cam in CAMERA_KEYS]  # read before the step makes them stale
        step = e.step(torch.zeros(6, 7))
        images += [step[0]["policy"][cam] for cam in CAMERA_KEYS]
        return (*reset, *step)

    outputs = {"single": reset_then_step(single), "par": reset_then_step(env)}
    flat = {name: {} for name in outputs}
    for name, (obs0, extras0, obs, reward, terminated, truncated, extras) in outputs.items():
        for key, value in obs0["policy"].items():
            flat[name][f"reset/{key}"] = value
        flat[name].update({f"reset/extras/{k}": v for k, v in extras0.items() if k != "log"})
        for key, value in obs["policy"].items():
            flat[name][f"step/{key}"] = value
        flat[name].update(reward=reward, terminated=terminated, truncated=truncated)
        flat[name].update({f"step/extras/{k}": v for k, v in extras.items() if k != "log"})
        flat[name]["log_keys"] = tuple(extras["log"])
        flat[name]["reset_log"] = extras0["log"]
    assert flat["single"].keys() == flat["par"].keys()
    for key, value in flat["single"].items():
        other = flat["par"][key]
        if isinstance(value, torch.Tensor):
            assert (value.shape, value.dtype, value.device) == (other.shape, other.dtype, other.device), key
        else:
            assert value == other, key
    assert env.episode_length_buf.dtype == torch.int64 and env.episode_length_buf.tolist() == [1] * 6
    single.close()


def test_partial_reset_routes_ids_and_options_to_their_rows(env):
    base = low_dim(env.reset(seed=0)[0])
    for _ in range(2):
        env.step(torch.zeros(6, 7))
    towers = np.zeros((2, 3, 3))
    towers[:, :, 0], towers[:, :, 1] = [[0.40], [0.60]], [[0.15], [-0.15]]
    towers[:, :, 2] = REST + scene.CUBE_EDGE * np.arange(3)
    # Rows given in the order of env_ids, [4, 1]: row 0 of the options belongs to sub-env 4 (worker 1).
    obs, _ = env.reset(env_ids=torch.tensor([4, 1]), options={"cube_positions": towers.reshape(2, 9),
                                                              "joint_pos": scene.DEFAULT_JOINT_POS})
    cubes = obs["policy"]["cube_positions"].reshape(6, 3, 3).double()
    torch.testing.assert_close(cubes[4], torch.from_numpy(towers[0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(cubes[1], torch.from_numpy(towers[1]), atol=1e-6, rtol=0)
    assert env.episode_length_buf.tolist() == [2, 0, 2, 2, 0, 2]
    assert obs["policy"]["joint_pos"][[1, 4]].abs().max() < 1e-6  # DEFAULT_JOINT_POS is the zero of joint_pos
    stepped = obs["policy"]["cube_positions"][[0, 2, 3, 5]]
    # Untouched sub-envs keep their episode (cubes at rest barely move in two steps).
    torch.testing.assert_close(stepped, base["cube_positions"][[0, 2, 3, 5]], atol=2e-3, rtol=0)
    mask = torch.zeros(6, dtype=torch.bool)
    mask[5] = True
    obs, _ = env.reset(env_ids=mask)
    assert env.episode_length_buf.tolist() == [2, 0, 2, 2, 0, 0]
    with pytest.raises(EnvInputError, match="env_ids"):
        env.reset(env_ids=[6])
    with pytest.raises(EnvInputError, match="cube_pos"):
        env.reset(options={"cube_pos": np.zeros(9)})
    with pytest.raises(EnvInputError, match=r"shape \(9,\) or \(2, 9\)"):
        env.reset(env_ids=[0, 3], options={"cube_positions": np.zeros((3, 9))})
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        env.reset(seed=-1)


def test_seeded_rollouts_are_deterministic_and_shards_draw_their_own_starts(env):
    actions = random_actions(8, 6, seed=2)

    def rollout(e):
        trace = [low_dim(e.reset(seed=4)[0])]
        for action in actions:
            obs, reward, *_ = e.step(action)
            trace.append(low_dim(obs) | {"reward": reward})
        return trace

    first = rollout(env)
    again = rollout(env)
    fresh = make(seed=123)  # another construction seed: reset(seed=4) still decides everything
    try:
        other = rollout(fresh)
    finally:
        fresh.close()
    for a, b, c in zip(first, again, other):
        for key in a:
            assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key]), key
    # Worker 1 is seeded 4 + 1000003, not 4: the shards do not repeat each other's starts.
    assert not torch.equal(first[0]["cube_positions"][:3], first[0]["cube_positions"][3:])


def test_cameras_are_lazy_per_worker_and_stale_reads_raise(env):
    spread = np.array([[0.45, -0.08, REST], [0.55, 0.0, REST], [0.45, 0.08, REST]]).reshape(9)
    # Every sub-env starts from the same state, so every row of an image must be the same picture.
    obs, _ = env.reset(seed=0, options={"cube_positions": spread, "cube_orientations": [0.0, 0.0, 0.0, 1.0] * 3,
                                        "joint_pos": scene.DEFAULT_JOINT_POS})
    before = env.render_count
    obs, *_ = env.step(torch.zeros(6, 7))
    assert env.render_count == before
    table = obs["policy"]["table_cam"]
    assert table.shape == (6, *CAM, 3) and table.dtype == torch.uint8 and env.render_count == before + 6
    assert obs["policy"]["table_cam"] is table and env.render_count == before + 6
    assert table[0].float().std() > 0 and all(torch.equal(table[0], table[i]) for i in range(1, 6))
    stale, *_ = env.step(torch.zeros(6, 7))
    env.step(torch.zeros(6, 7))
    with pytest.raises(RuntimeError, match="stepped past"):
        stale["policy"]["wrist_cam"]


def test_bad_action_raises_one_line_in_the_parent(env):
    env.reset(seed=0)
    env.step(torch.zeros(6, 7))
    for bad, message in ((torch.zeros(6, 6), "shape"), (torch.zeros(6, 7, dtype=torch.int64), "dtype"),
                         (torch.full((6, 7), float("nan")), "NaN"), (np.zeros((6, 7), np.float32), "torch.Tensor")):
        with pytest.raises(EnvInputError, match=message) as info:
            env.step(bad)
        assert "\n" not in str(info.value)
    assert env.episode_length_buf.tolist() == [1] * 6  # nothing reached the workers
    env.step(torch.zeros(6, 7))


def test_log_merge_weights_means_by_ended_episodes():
    logs = [{"Episode_Termination/success": 1.0, "Episode/num_ended": 1.0, "Episode/return_mean": 1.0,
             "Episode/length_mean": 10.0},
            {"Episode_Termination/success": 0.0, "Episode/num_ended": 3.0, "Episode/return_mean": 0.0,
             "Episode/length_mean": 2.0},
            {"Episode_Termination/success": 0.0, "Episode/num_ended": 0.0, "Episode/return_mean": 0.0,
             "Episode/length_mean": 0.0}]
    assert parallel.merge_logs(logs) == {"Episode_Termination/success": 1.0, "Episode/num_ended": 4.0,
                                         "Episode/return_mean": 0.25, "Episode/length_mean": 4.0}
    assert parallel.merge_logs([logs[2], logs[2]])["Episode/return_mean"] == 0.0
    assert parallel.merge_logs([{}, {}]) == {}


def test_groups_share_starts_within_shards_and_logs_merge():
    env = make(num_envs=6, num_workers=2, group_size=3, max_episode_steps=3, seed=1)
    try:
        obs, _ = env.reset(seed=1)
        cubes = obs["policy"]["cube_positions"]
        assert torch.equal(cubes[0], cubes[2]) and torch.equal(cubes[3], cubes[5])
        assert not torch.equal(cubes[0], cubes[3])
        for _ in range(3):
            obs, reward, terminated, truncated, extras = env.step(torch.zeros(6, 7))
        assert truncated.all() and extras["episode_len"].tolist() == [3] * 6
        log = extras["log"]
        assert log["Episode/num_ended"] == 6.0 and log["Episode_Termination/time_out"] == 6.0
        assert log["Episode/length_mean"] == 3.0 and log["Episode/return_mean"] == 0.0
        # Worker death: the next call names the worker, shuts the pool down, and the env reports closed after.
        os.kill(env.worker_pids[1], 9)
        with pytest.raises(RuntimeError, match=r"worker 1 \(sub-envs 3\.\.5\) failed: exited unexpectedly") as info:
            env.step(torch.zeros(6, 7))
        assert "\n" not in str(info.value) and not any(alive(pid) for pid in env.worker_pids)
        with pytest.raises(RuntimeError, match="closed"):
            env.reset()
    finally:
        env.close()


def test_worker_errors_surface_as_one_line_runtime_errors_and_stop_the_pool():
    with pytest.raises(ValueError, match="max_episode_steps must be a positive int"):  # the worker's own check
        make(num_envs=2, max_episode_steps=0)
    env = make(num_envs=4, num_workers=2)
    pids = env.worker_pids
    env.reset(seed=0)
    with pytest.raises(RuntimeError) as info:
        env._pool.request({0: ("render", "table_cam"), 1: ("raise", "boom\nsecond line")})
    message = str(info.value)
    assert "worker 1 (sub-envs 2..3) failed: RuntimeError: boom" in message and "\n" not in message
    assert not any(alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        env.step(torch.zeros(4, 7))
    env.close()  # idempotent after the failure


def test_scripted_reach_expert_succeeds():
    env = make(tasks.REACH_ID, num_envs=4, num_workers=2, seed=11, max_episode_steps=40)
    try:
        expert = embedded.make_expert(tasks.REACH_ID, env)
        obs, _ = env.reset(seed=11)
        ended = np.zeros(4, dtype=bool)
        success = np.zeros(4, dtype=bool)
        while not ended.all():
            obs, _, terminated, truncated, extras = env.step(expert(obs))
            new = (terminated | truncated).numpy() & ~ended
            success[new] = extras["success"].numpy()[new]
            ended |= new
        assert success.all()
    finally:
        env.close()


def test_close_is_idempotent_and_leaves_no_children(env):
    pids = env.worker_pids
    assert all(alive(pid) for pid in pids)
    env.close()
    env.close()
    assert not any(alive(pid) for pid in pids)
    assert not [p for p in multiprocessing.active_children() if p.pid in pids]
    with pytest.raises(RuntimeError, match="closed"):
        env.step(torch.zeros(6, 7))
