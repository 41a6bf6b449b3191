"""``EnvProcess`` (an env in a spawned process behind the contract) against the same env in this process.

It is how an IsaacLab eval env runs beside an IsaacLab train env (Kit runs one stage per process). Checked here over
the embedded simulator and over the CPU test double of IsaacLab: identical outputs step for step, buffers reused in
place, errors and a dead child reported in one line, and the runner's in-training eval with both splits on IsaacLab.
"""

import functools
import json
import os
import signal
import types

import numpy as np
import pytest
import torch

import isaaclab_double
from isaaclab_double import VISUOMOTOR, FakeIsaacLab
from jaxrl_isaac import train
from jaxrl_isaac.envs import embedded, factory
from jaxrl_isaac.envs.contract import CAMERA_KEYS, EnvInputError, VecEnv
from jaxrl_isaac.envs.embedded import tasks
from jaxrl_isaac.envs.env_process import EnvProcess, EnvProcessError
from jaxrl_isaac.envs.isaaclab import launcher, make_isaaclab_env

V3_VISUOMOTOR = f"IsaacContrib-{VISUOMOTOR}"
SCRIPT = {2: {"success": [1]}, 3: {"cube_2_dropping": [2]}}  # env 1 stacks on step 2, env 2 drops a cube on 3


def make_embedded():
    return embedded.make(tasks.STACK_ID, num_envs=3, seed=5, table_cam=(8, 8), wrist_cam=(8, 8), max_episode_steps=6)


def make_double(api_version="3.0"):
    task = V3_VISUOMOTOR if api_version == "3.0" else f"Isaac-{VISUOMOTOR}-v0"
    return make_isaaclab_env(task, modules=FakeIsaacLab(api_version, script=SCRIPT), num_envs=4, device="cpu",
                             seed=0, table_cam=(8, 12), wrist_cam=(8, 8), max_episode_steps=4)


def fails_to_build(kind):
    if kind == "value":
        raise ValueError("init_params.table_cam must have positive int height and width, got 0x8")
    raise RuntimeError("Kit could not find an RTX GPU")


def actions(steps, num_envs, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(0, 0.4, size=(steps, num_envs, 7)).astype(np.float32))


def tensors(tree, path=()):
    """{path: tensor} of every tensor in a reply (dicts, tuples, lazy obs groups read in full)."""
    if isinstance(tree, torch.Tensor):
        return {path: tree}
    if hasattr(tree, "keys"):
        return {p: t for key in list(tree.keys()) for p, t in tensors(tree[key], (*path, key)).items()}
    if isinstance(tree, (tuple, list)):
        return {p: t for i, x in enumerate(tree) for p, t in tensors(x, (*path, i)).items()}
    return {}


def non_tensors(tree):
    if isinstance(tree, torch.Tensor):
        return None
    if hasattr(tree, "keys"):
        return {key: non_tensors(tree[key]) for key in list(tree.keys())}
    if isinstance(tree, (tuple, list)):
        return [non_tensors(x) for x in tree]
    return tree


def assert_same(a, b):
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for path in ta:
        assert ta[path].dtype == tb[path].dtype and ta[path].device == tb[path].device, path
        assert torch.equal(ta[path], tb[path]), path
    assert non_tensors(a) == non_tensors(b)


def alive(pid):
    return os.path.exists(f"/proc/{pid}")


@pytest.mark.parametrize("make", [make_embedded, make_double, functools.partial(make_double, "2.x")],
                         ids=["embedded", "isaaclab-3.0", "isaaclab-2.x"])
def test_outputs_equal_the_in_process_env_step_for_step_and_are_reused_in_place(make):
    local, remote = make(), EnvProcess(make, name="env.eval")
    try:
        assert isinstance(remote, VecEnv) and remote.pid != os.getpid() and alive(remote.pid)
        for name in ("num_envs", "action_dim", "quat_order", "task_description"):
            assert getattr(remote, name) == getattr(local, name), name
        assert remote.device == local.device
        assert_same(remote.reset(seed=3), local.reset(seed=3))
        first_reward = None
        for k, action in enumerate(actions(7, local.num_envs)):  # past the episode length: auto-resets too
            out_remote, out_local = remote.step(action), local.step(action)
            assert_same(out_remote, out_local)
            first_reward = out_remote[1] if first_reward is None else first_reward
            assert out_remote[1] is first_reward  # the same shared buffer every step, as IsaacLab's own
        assert_same(remote.reset(seed=4, env_ids=torch.tensor([0, 2])), local.reset(seed=4, env_ids=torch.tensor([0, 2])))
    finally:
        local.close()
        remote.close()
    assert not alive(remote.pid)
    remote.close()  # idempotent


def test_a_camera_read_through_the_process_equals_the_lazy_local_render():
    local, remote = make_embedded(), EnvProcess(make_embedded)
    try:
        obs_local, _ = local.reset(seed=1)
        obs_remote, _ = remote.reset(seed=1)
        for key in CAMERA_KEYS:
            assert obs_remote["policy"][key].shape == (3, 8, 8, 3)
            assert torch.equal(obs_remote["policy"][key], obs_local["policy"][key])
    finally:
        local.close()
        remote.close()


def test_a_bad_action_is_rejected_here_and_the_env_stays_usable():
    remote = EnvProcess(make_embedded)
    try:
        remote.reset(seed=0)
        with pytest.raises(EnvInputError, match=r"action has shape \(2, 7\), expected \(3, 7\)"):
            remote.step(torch.zeros(2, 7))
        with pytest.raises(EnvInputError, match=r"NaN or inf in env\(s\) \[1\]"):
            remote.step(torch.tensor([[0.0] * 7, [float("nan")] * 7, [0.0] * 7]))
        remote.step(torch.zeros(3, 7))
    finally:
        remote.close()


def test_an_error_inside_the_child_step_keeps_its_type_and_message():
    remote = EnvProcess(make_embedded)
    try:
        with pytest.raises(ValueError, match="reset option"):  # the env's own check, raised in the child
            remote.reset(seed=0, options={"no_such_option": 1})
        remote.reset(seed=0)  # still serving
    finally:
        remote.close()


@pytest.mark.parametrize("kind, error, message", [
    ("value", ValueError, "init_params.table_cam must have positive int height and width"),
    ("runtime", EnvProcessError, r"the env.eval process failed: RuntimeError: Kit could not find an RTX GPU; "
                                 r"it was shut down"),
])
def test_a_child_that_cannot_build_its_env_fails_in_one_line(kind, error, message):
    with pytest.raises(error, match=message):
        EnvProcess(functools.partial(fails_to_build, kind), name="env.eval")


def test_a_child_that_dies_is_reported_with_its_exit_code():
    remote = EnvProcess(make_embedded, name="env.eval")
    remote.reset(seed=0)
    os.kill(remote.pid, signal.SIGKILL)
    with pytest.raises(EnvProcessError, match=r"the env.eval process \(pid \d+\) exited unexpectedly \(exit code -9\)"):
        remote.step(torch.zeros(3, 7))
    with pytest.raises(EnvProcessError, match="is closed"):
        remote.step(torch.zeros(3, 7))


# ---- the runner: in-training eval with train and eval on IsaacLab -------------------------------------------------

def test_the_double_refuses_a_second_app_in_one_process_as_kit_does():
    lab = FakeIsaacLab("3.0")
    env = make_isaaclab_env(V3_VISUOMOTOR, modules=lab, num_envs=2, device="cpu")
    with pytest.raises(RuntimeError, match="already running in this process"):
        make_isaaclab_env(V3_VISUOMOTOR, modules=lab, num_envs=2, device="cpu")
    env.close()


ISAACLAB_RUN = [
    "--config-name", "embedded_stack_cube_ppo_baseline",
    *(f"env.{split}.{key}" for split in ("train", "eval") for key in (
        "env_type=isaaclab", "device=cpu", f"init_params.id={V3_VISUOMOTOR}", "init_params.reward_type=sparse",
        "init_params.table_cam.height=16", "init_params.table_cam.width=16", "init_params.wrist_cam.height=16",
        "init_params.wrist_cam.width=16", "max_episode_steps=8", "max_steps_per_rollout_epoch=8", "rollout_epoch=1")),
    "env.train.total_num_envs=4", "env.eval.total_num_envs=4", "actor.model.num_action_chunks=4",
    "actor.model.baseline.image_size=16", "actor.global_batch_size=8", "actor.micro_batch_size=2",
    "algorithm.update_epoch=1", "runner.max_epochs=2", "runner.val_check_interval=1", "runner.save_interval=-1",
]


def test_in_training_eval_runs_the_isaaclab_eval_env_in_its_own_process(monkeypatch, tmp_path):
    lab = FakeIsaacLab("3.0", script=SCRIPT)  # this process's install: the train env only
    monkeypatch.setattr(launcher, "default_module_source", lambda: lab)
    children = []

    def make_env_process(split_cfg, *, name="env", **kwargs):
        assert split_cfg.env_type == "isaaclab" and split_cfg.total_num_envs == 4 and name == "env.eval"
        proc = EnvProcess(functools.partial(isaaclab_double.make_env_in_child, split_cfg, "3.0", SCRIPT), name=name)
        children.append(proc)
        return proc

    monkeypatch.setattr(factory, "make_env_process", make_env_process)
    log = tmp_path / "run"
    assert train.main([*ISAACLAB_RUN, f"runner.logger.log_path={log}"]) == 0
    rows = [json.loads(line) for line in (log / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/success_once" in r]
    assert [r["step"] for r in evals] == [1, 2] and all(r["eval/num_trajectories"] == 4 for r in evals)
    assert evals[0]["eval/success_once"] == 0.25  # env 1 stacks on step 2 (the script), env 2 drops a cube
    assert len(lab.made_envs) == 1 and len(children) == 1 and not alive(children[0].pid)  # closed with the run


def test_the_eval_env_stays_in_process_when_the_train_env_is_not_isaaclab():
    isaac = types.SimpleNamespace(env_type="isaaclab")
    assert factory.needs_own_process(isaac, isaac)
    assert not factory.needs_own_process(isaac, types.SimpleNamespace(env_type="embedded"))
    assert not factory.needs_own_process(types.SimpleNamespace(env_type="embedded"), isaac)
    assert not factory.needs_own_process(isaac, None)


def make_double_on_cuda():
    return make_isaaclab_env(V3_VISUOMOTOR, modules=FakeIsaacLab("3.0", script=SCRIPT), num_envs=4, device="cuda:0",
                             seed=0, table_cam=(64, 64), wrist_cam=(64, 64), max_episode_steps=4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_outputs_arrive_through_cuda_ipc_and_feed_jax_by_dlpack():
    """The IsaacLab case: the child's tensors live on the GPU, the parent reads them in place (CUDA IPC)."""
    import jax
    from jaxrl_isaac import bridge
    local, remote = make_double_on_cuda(), EnvProcess(make_double_on_cuda, name="env.eval")
    try:
        assert remote.device == torch.device("cuda:0")
        assert_same(remote.reset(seed=3), local.reset(seed=3))
        table_ptr = None
        for action in actions(6, 4).cuda():
            out_remote, out_local = remote.step(action), local.step(action)
            assert_same(out_remote, out_local)
            table = out_remote[0]["policy"]["table_cam"]
            assert table.is_cuda and (table_ptr is None or table.data_ptr() == table_ptr)  # one buffer, reused
            table_ptr = table.data_ptr()
            if any(d.platform == "gpu" for d in jax.devices()):
                as_jax = bridge.torch_to_jax(table)
                assert np.array_equal(np.asarray(as_jax), out_local[0]["policy"]["table_cam"].cpu().numpy())
    finally:
        local.close()
        remote.close()


def test_bench_env_puts_the_own_process_column_beside_the_in_process_one(capsys):
    from jaxrl_isaac.bench import env as bench_env
    bench_env.main(["--task", tasks.REACH_ID, "--num-envs", "2", "--modes", "cameras_every_step", "--camera-steps",
                    "2", "--cam-size", "16", "--env-process"])
    out = capsys.readouterr().out
    assert "| num_envs | 2 cams 16² every step, 1 worker | 2 cams 16² every step, 1 worker, own process |" in out
    assert "\n| 2 | " in out and "x) |" in out
