"""The torch <-> JAX DLPack bridge: what aliases, what copies, what is isolated, and the memory knob.

Zero-copy is proven by buffer pointers (``jax.Array.unsafe_buffer_pointer()`` == ``Tensor.data_ptr()``);
every conversion is also checked by value. Runs on CPU (jax 0.10.2 CPU shares memory with torch CPU).
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxrl_isaac import bridge
from jaxrl_isaac.envs.contract import validate_action
from jaxrl_isaac.jax_setup import (DEPRECATED_MEM_FRACTION_VAR, MEM_FRACTION_VAR, PREALLOCATE_VAR,
                                   configure_jax_determinism, configure_jax_memory)


def _aliases(j: jax.Array, t: torch.Tensor) -> bool:
    return j.unsafe_buffer_pointer() == t.data_ptr()


def _assert_same_values(j: jax.Array, t: torch.Tensor) -> None:
    np.testing.assert_array_equal(np.asarray(j), t.detach().cpu().numpy().astype(np.asarray(j).dtype))


# ---------------------------------------------------------------------------------------------
# torch -> JAX: zero-copy


@pytest.mark.parametrize("make", [
    pytest.param(lambda: torch.randn(64, 9), id="float32"),
    pytest.param(lambda: torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8), id="uint8-image-NHW3"),
    pytest.param(lambda: torch.rand(257) > 0.5, id="bool"),
    pytest.param(lambda: torch.arange(-50, 50, dtype=torch.int32), id="int32"),
])
def test_torch_to_jax_is_zero_copy_for_kept_dtypes(make):
    t = make()
    j = bridge.torch_to_jax(t)
    assert _aliases(j, t)
    assert j.dtype == np.dtype(str(t.dtype).removeprefix("torch."))
    assert j.shape == tuple(t.shape)
    _assert_same_values(j, t)


def test_requires_grad_is_detached_without_copy():
    t = torch.randn(16, 3, requires_grad=True)
    j = bridge.torch_to_jax(t)
    assert _aliases(j, t)
    _assert_same_values(j, t)


def test_row_slice_with_aligned_offset_stays_zero_copy():
    base = torch.randn(8, 16)  # rows of 64 bytes
    view = base[1:]
    j = bridge.torch_to_jax(view)
    assert _aliases(j, view)
    _assert_same_values(j, view)


# ---------------------------------------------------------------------------------------------
# torch -> JAX: what copies (once, on the torch side) and still gives the right values


@pytest.mark.parametrize("make", [
    pytest.param(lambda: torch.randn(32, 64)[:, :16], id="column-slice"),
    pytest.param(lambda: torch.randn(32, 1).expand(32, 5), id="expand-stride-0"),
    pytest.param(lambda: torch.randn(16, 24).T, id="transpose"),
    pytest.param(lambda: torch.randint(0, 256, (2, 8, 8, 4), dtype=torch.uint8)[..., :3], id="rgba-to-rgb-view"),
])
def test_non_row_major_inputs_become_correct_row_major_arrays(make):
    t = make()
    j = bridge.torch_to_jax(t)
    assert j.shape == tuple(t.shape)
    _assert_same_values(j, t)
    assert not _aliases(j, t)  # the contiguous copy is exported, never a strided view


def test_int64_and_float64_are_narrowed_explicitly_on_the_torch_side():
    ints = torch.arange(-1000, 1000, dtype=torch.int64)
    floats = torch.randn(100, 3, dtype=torch.float64)
    j_int, j_float = bridge.torch_to_jax(ints), bridge.torch_to_jax(floats)
    assert j_int.dtype == jnp.int32 and j_float.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(j_int), ints.numpy())
    np.testing.assert_allclose(np.asarray(j_float), floats.numpy(), rtol=1e-7)
    # The cast is a torch-side copy: the JAX array owns it, so writes to the source do not leak in.
    ints.zero_()
    assert int(j_int[-1]) == 999


def test_strict_dtypes_refuses_to_narrow():
    with pytest.raises(bridge.BridgeError, match=r"^obs/episode_len: dtype torch.int64 would be narrowed"):
        bridge.torch_to_jax(torch.arange(4), strict_dtypes=True, name="obs/episode_len")


def test_misaligned_cpu_slice_is_cloned_into_an_aligned_buffer():
    # jax 0.10.2's CPU import needs 64-byte aligned data; x[1:] starts 4 bytes in. The bridge clones it
    # itself (deterministic, no "not aligned" fallback inside JAX) and the result works under jit.
    flat = torch.randn(1 << 12)
    view = flat[1:]
    assert view.data_ptr() % bridge.CPU_ALIGNMENT_BYTES != 0
    j = bridge.torch_to_jax(view)
    assert j.unsafe_buffer_pointer() % bridge.CPU_ALIGNMENT_BYTES == 0
    assert not _aliases(j, view)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda a: a * 2.0)(j)), 2.0 * view.numpy())
    flat.zero_()  # the clone is the bridge's own buffer
    assert float(jnp.abs(j).sum()) > 0.0


# ---------------------------------------------------------------------------------------------
# ownership: IsaacLab rewrites reward / terminated / truncated in place on every step


def _isaaclab_like_step(num_envs: int = 8):
    obs = {"policy": {"table_cam": torch.randint(0, 256, (num_envs, 16, 16, 3), dtype=torch.uint8),
                      "eef_pos": torch.randn(num_envs, 3)}}
    reward = torch.randn(num_envs)
    terminated = torch.tensor([True, False] * (num_envs // 2))
    truncated = torch.tensor([False, False, True, False] * (num_envs // 4))
    return {"obs": obs, "reward": reward, "terminated": terminated, "truncated": truncated}


def _overwrite_in_place(step) -> None:
    """What the next ``env.step()`` does to IsaacLab's persistent buffers."""
    step["reward"].fill_(-7.0)
    step["terminated"][:] = False
    step["truncated"] |= True


def test_owned_step_buffers_survive_in_place_overwrite_and_obs_stay_zero_copy():
    step = _isaaclab_like_step()
    before = {k: step[k].clone() for k in ("reward", "terminated", "truncated")}
    out = bridge.tree_torch_to_jax(step, own=lambda path: path in ("reward", "terminated", "truncated"))
    assert set(out) == set(step) and set(out["obs"]["policy"]) == {"table_cam", "eef_pos"}
    for key in before:
        assert not _aliases(out[key], step[key])
    assert _aliases(out["obs"]["policy"]["table_cam"], step["obs"]["policy"]["table_cam"])
    _overwrite_in_place(step)
    for key, value in before.items():
        _assert_same_values(out[key], value)


def test_unowned_conversion_aliases_the_source_by_design():
    step = _isaaclab_like_step()
    out = bridge.tree_torch_to_jax(step, own=False)
    _overwrite_in_place(step)
    # The stored JAX arrays now show the *new* values: unowned arrays are valid only until the next write.
    np.testing.assert_array_equal(np.asarray(out["reward"]), np.full(8, -7.0, np.float32))
    assert not bool(out["terminated"].any()) and bool(out["truncated"].all())


def test_single_tensor_own_clones():
    reward = torch.randn(8)
    kept = reward.clone()
    j = bridge.torch_to_jax(reward, own=True)
    reward.fill_(0.0)
    _assert_same_values(j, kept)


def test_tree_keeps_lists_tuples_and_names_a_bad_leaf():
    out = bridge.tree_torch_to_jax({"a": [torch.ones(2), (torch.zeros(3),)]})
    assert isinstance(out["a"], list) and isinstance(out["a"][1], tuple) and out["a"][1][0].shape == (3,)
    with pytest.raises(bridge.BridgeError, match=r"^obs/policy/joint_pos/1: expected a torch.Tensor .* got float$"):
        bridge.tree_torch_to_jax({"obs": {"policy": {"eef_pos": torch.ones(2, 3), "joint_pos": [torch.ones(2), 0.2]}}})


def test_packed_small_terms_round_trip_under_jit_and_do_not_alias():
    num_envs = 6
    terms = {"eef_pos": torch.randn(num_envs, 3), "joint_vel": torch.randn(num_envs, 9)[:, :7],
             "reward": torch.randn(num_envs), "terminated": torch.rand(num_envs) > 0.5,
             "truncated": torch.rand(num_envs) > 0.5, "episode_len": torch.arange(num_envs)}
    expected = {k: v.clone() for k, v in terms.items()}
    buffers, layout = bridge.torch_to_jax_packed(terms)
    assert {k: v.shape for k, v in buffers.items()} == {"float32": (num_envs * 11,), "bool": (2 * num_envs,),
                                                         "int32": (num_envs,)}
    for t in terms.values():
        t.zero_()  # packing copied: nothing aliases the sources
    unpacked = jax.jit(layout.unpack)(buffers)
    assert set(unpacked) == set(terms)
    for key, value in expected.items():
        assert unpacked[key].shape == tuple(value.shape)
        _assert_same_values(unpacked[key], value)
    assert hash(layout) == hash(bridge.torch_to_jax_packed(expected)[1])  # static jit argument


# ---------------------------------------------------------------------------------------------
# JAX -> torch


def test_jax_to_torch_is_zero_copy_for_float32_and_bool():
    action = jnp.linspace(-1.0, 1.0, 4 * 16 * 7, dtype=jnp.float32).reshape(4, 16, 7)
    done = jnp.arange(10) % 3 == 0
    t_action, t_done = bridge.jax_to_torch(action), bridge.jax_to_torch(done)
    assert t_action.data_ptr() == action.unsafe_buffer_pointer()
    assert t_done.data_ptr() == done.unsafe_buffer_pointer() and t_done.dtype == torch.bool
    np.testing.assert_array_equal(t_action.numpy(), np.asarray(action))
    np.testing.assert_array_equal(t_done.numpy(), np.asarray(done))


def test_action_chunk_round_trip_reaches_the_env_contract():
    num_envs, horizon, action_dim = 4, 16, 7
    chunk = jax.jit(lambda k: jax.random.uniform(k, (num_envs, horizon, action_dim), minval=-1, maxval=1))(
        jax.random.key(0))
    chunk_t = bridge.jax_to_torch(chunk)  # once per policy call; the env steps through it
    for k in (0, horizon - 1):
        action = validate_action(chunk_t[:, k], num_envs, action_dim, "cpu")
        assert action.shape == (num_envs, action_dim) and action.dtype == torch.float32
        np.testing.assert_array_equal(action.numpy(), np.asarray(chunk[:, k]))
    # And back into JAX (e.g. the executed actions) without a copy.
    back = bridge.torch_to_jax(chunk_t)
    assert back.unsafe_buffer_pointer() == chunk.unsafe_buffer_pointer()


def test_jax_to_torch_tensor_outlives_the_jax_array():
    a = jnp.full((1 << 16,), 3.0)
    t = bridge.jax_to_torch(a)
    del a
    gc.collect()
    churn = [jnp.full((1 << 16,), float(i)) for i in range(8)]
    jax.block_until_ready(churn)
    assert bool((t == 3.0).all())


def test_sharded_array_needs_an_explicit_gather():
    mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
    x = jnp.arange(32.0).reshape(8, 4)
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
    with pytest.raises(bridge.BridgeError, match=r"^actions: is sharded over 4 devices .* pass device="):
        bridge.jax_to_torch(sharded, name="actions")
    gathered = bridge.jax_to_torch(sharded, device=jax.devices()[0])
    np.testing.assert_array_equal(gathered.numpy(), np.asarray(x))
    # A replicated array exports its shard on the requested device, without a copy.
    replicated = jax.device_put(x, NamedSharding(mesh, PartitionSpec()))
    shard = next(s.data for s in replicated.addressable_shards if s.device == jax.devices()[2])
    t = bridge.jax_to_torch(replicated, device=jax.devices()[2])
    assert t.data_ptr() == shard.unsafe_buffer_pointer()


def test_bad_inputs_fail_with_one_line_naming_them():
    with pytest.raises(bridge.BridgeError, match=r"^reward: expected a torch.Tensor, got ndarray$"):
        bridge.torch_to_jax(np.zeros(3), name="reward")
    with pytest.raises(bridge.BridgeError, match=r"^actions: expected a jax.Array, got Tensor$"):
        bridge.jax_to_torch(torch.zeros(3), name="actions")
    with pytest.raises(bridge.BridgeError, match=r"^sync must be one of"):
        bridge.torch_to_jax(torch.zeros(3), sync="stream")
    with pytest.raises(bridge.BridgeError, match=r"^mask: only dense tensors"):
        bridge.torch_to_jax(torch.zeros(3, 3).to_sparse(), name="mask")
    with pytest.raises(bridge.BridgeError, match=r"^actions: is a traced value"):
        jax.jit(lambda a: bridge.jax_to_torch(a, name="actions"))(jnp.ones(2))
    with pytest.raises(bridge.BridgeError, match=r"^eef_pos: is on cpu, the other packed tensors are on meta"):
        bridge.torch_to_jax_packed({"reward": torch.zeros(2, device="meta"), "eef_pos": torch.zeros(2, 3)})
    deleted = jnp.ones(3)
    deleted.delete()
    with pytest.raises(bridge.BridgeError, match=r"^array: the jax.Array was deleted"):
        bridge.jax_to_torch(deleted)


# ---------------------------------------------------------------------------------------------
# JAX's GPU memory pool


def test_configure_jax_memory_sets_only_the_new_fraction_name():
    env: dict[str, str] = {}
    settings = configure_jax_memory(0.4, preallocate=False, environ=env)
    # jaxlib raises (and falls back to the CPU) when both fraction names are set: only one is written.
    assert env == {MEM_FRACTION_VAR: "0.4", PREALLOCATE_VAR: "false"}
    assert settings == {MEM_FRACTION_VAR: "0.4", DEPRECATED_MEM_FRACTION_VAR: None, PREALLOCATE_VAR: "false"}
    assert configure_jax_memory(None, environ=(untouched := {})) and untouched == {}


def test_configure_jax_memory_lets_an_exported_value_win_with_a_warning():
    env = {DEPRECATED_MEM_FRACTION_VAR: ".3"}
    with pytest.warns(UserWarning, match=r"XLA_PYTHON_CLIENT_MEM_FRACTION=.3 from the environment overrides"):
        configure_jax_memory(0.5, environ=env)
    assert env == {DEPRECATED_MEM_FRACTION_VAR: ".3"}


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1, True, "0.5"])
def test_configure_jax_memory_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match=r"^jax memory fraction must be a number in \(0, 1\]"):
        configure_jax_memory(fraction, environ={})


def test_configure_jax_memory_rejects_both_fraction_names():
    with pytest.raises(ValueError, match=r"^both XLA_CLIENT_MEM_FRACTION and XLA_PYTHON_CLIENT_MEM_FRACTION"):
        configure_jax_memory(0.5, environ={MEM_FRACTION_VAR: "0.5", DEPRECATED_MEM_FRACTION_VAR: "0.5"})


def test_configure_jax_determinism_appends_the_flag_and_lets_an_exported_setting_win():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    assert configure_jax_determinism(True, environ=env) == \
        "--xla_force_host_platform_device_count=4 --xla_gpu_deterministic_ops=true"
    assert configure_jax_determinism(True, environ=env) == env["XLA_FLAGS"]  # idempotent: not added twice
    assert env["XLA_FLAGS"].count("deterministic") == 1
    exported = {"XLA_FLAGS": "--xla_gpu_deterministic_ops=false"}
    configure_jax_determinism(True, environ=exported)
    assert exported == {"XLA_FLAGS": "--xla_gpu_deterministic_ops=false"}
    configure_jax_determinism(False, environ=(untouched := {}))
    assert untouched == {}
    fresh: dict[str, str] = {}
    configure_jax_determinism(True, environ=fresh)
    assert fresh == {"XLA_FLAGS": "--xla_gpu_deterministic_ops=true"}


def test_an_entry_point_sets_the_deterministic_ops_flag_before_jax_starts_and_a_cpu_jax_accepts_it():
    # start_jax is what train/eval call first; XLA aborts a process on an unknown flag, so the GPU flag must also be
    # harmless where there is no GPU.
    script = textwrap.dedent("""
        import os
        from jaxrl_isaac.config import load_config
        from jaxrl_isaac.entrypoint import start_jax
        assert start_jax(load_config("embedded_reach_ppo_baseline", overrides=["cluster.deterministic_gpu_ops=true"]))
        assert "--xla_gpu_deterministic_ops=true" in os.environ["XLA_FLAGS"], os.environ["XLA_FLAGS"]
        import jax.numpy as jnp
        print(float((jnp.ones(3) + 1).sum()))
    """)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0 and done.stdout.strip().endswith("6.0"), done.stderr[-2000:]


def test_configure_jax_memory_is_too_late_once_jax_runs():
    jax.devices()  # this test process has long initialised JAX's backends
    with pytest.raises(RuntimeError, match=r"^configure_jax_memory was called after JAX initialised"):
        configure_jax_memory(0.5)


def test_configure_jax_memory_in_a_fresh_process_does_not_import_jax():
    script = textwrap.dedent("""
        import os, sys
        from jaxrl_isaac.jax_setup import configure_jax_memory
        print(configure_jax_memory(0.45))
        assert "jax" not in sys.modules, "configure_jax_memory imported jax"
        import jax
        assert os.environ["XLA_CLIENT_MEM_FRACTION"] == "0.45" and jax.devices()
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k not in (MEM_FRACTION_VAR, DEPRECATED_MEM_FRACTION_VAR)}
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")


# ---------------------------------------------------------------------------------------------
# CUDA only (skipped on CPU machines; the GPU probe is `python -m jaxrl_isaac.bench bridge`)


def _jax_has_cuda() -> bool:
    try:
        return bool(jax.devices("cuda"))
    except RuntimeError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and _jax_has_cuda()), reason="needs CUDA in torch and JAX")
def test_side_stream_producer_is_ordered_by_the_default_sync():
    side = torch.cuda.Stream()
    weights = torch.rand(4096, 4096, device="cuda")
    for value in (1.0, 2.0, 3.0):
        with torch.cuda.stream(side):
            out = weights @ weights
            out.fill_(value)
        j = bridge.torch_to_jax(out)  # sync="device": waits for the side stream's work
        assert float(jnp.min(j)) == value == float(jnp.max(j))
        (jax_device,) = j.devices()
        assert jax_device.local_hardware_id == out.device.index
