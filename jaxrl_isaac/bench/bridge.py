"""Probe and benchmark of the torch <-> JAX bridge (``jaxrl_isaac.bridge``) on the machine at hand.

    python -m jaxrl_isaac.bench bridge [--num-envs 16 64 256] [--iters 200] [--device auto|cuda|cpu]

Checks (printed as a table, exit status 1 if a required one fails): zero-copy and values for float32,
uint8 images and bool in both directions; that ``own=True`` isolates the JAX array from in-place
writes to IsaacLab-style reused buffers; strided, 64-bit and misaligned inputs; and on CUDA the
device the array lands on, stream ordering with a producer on a side stream, JAX -> torch ordering,
what donation does to an exported array, and the memory JAX's pool leaves free.

Benchmark: the bridge cost of one IsaacLab camera step (obs = two (N, S, S, 3) uint8 images + six
small f32 terms, plus reward / terminated / truncated) and of the action chunk (N, 16, 7) going
back, against the naive ``.cpu().numpy()`` -> ``jnp.asarray`` path; median over many iterations.
Without a GPU it runs the same on the CPU and says so. The last line printed is one JSON object.

JAX is imported only after ``configure_jax_memory`` has capped its GPU pool (``--jax-mem-fraction``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

# Terms of the step the benchmark converts: IsaacLab's Franka cube-stack visuomotor "policy" group.
CAMERA_TERMS = ("table_cam", "wrist_cam")
SMALL_TERMS = {"eef_pos": 3, "eef_quat": 4, "gripper_pos": 2, "joint_pos": 9, "joint_vel": 9, "actions": 7}
REUSED_STEP_BUFFERS = ("reward", "terminated", "truncated")
ACTION_HORIZON, ACTION_DIM = 16, 7


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True  # informational checks record behaviour outside the bridge's guarantees


@dataclasses.dataclass(frozen=True)
class Timing:
    num_envs: int
    path: str
    exports: int  # DLPack exports (torch -> JAX) or imports (JAX -> torch) per call
    median_us: float
    p90_us: float
    speedup_vs_naive: float | None = None


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jaxrl_isaac.bench bridge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="auto: CUDA if torch sees a GPU, else CPU")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--image-size", type=int, default=256, help="camera height = width")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (default 200 on CUDA, 20 on CPU)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--jax-mem-fraction", type=float, default=0.5,
                        help="cap on JAX's GPU pool (share of total memory), set before JAX starts")
    parser.add_argument("--json-out", default=None, help="also write the JSON result to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    from jaxrl_isaac.jax_setup import configure_jax_memory

    try:
        memory_env = configure_jax_memory(args.jax_mem_fraction)
    except RuntimeError as err:  # JAX already running in this process (e.g. called from a notebook)
        print(f"note: {err}; keeping JAX's current memory settings")
        memory_env = {}
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bridge bench: --device cuda was asked for but torch sees no CUDA GPU; nothing to measure")
        return 1
    device = torch.device("cuda", torch.cuda.current_device()) if (
        args.device != "cpu" and torch.cuda.is_available()) else torch.device("cpu")
    if device.type == "cpu":
        print("bridge bench: no CUDA GPU in use: running the CPU variant (GPU-only checks are skipped, "
              "timings are CPU timings)")

    import jax

    if device.type == "cuda" and not _jax_has_cuda(jax):
        print(f"bridge bench: torch uses {device} but JAX has no CUDA backend (devices {jax.devices()}); "
              "install jax[cuda] matching this GPU")
        return 1

    iters = args.iters or (200 if device.type == "cuda" else 20)
    checks = run_checks(device)
    timings = run_timings(device, args.num_envs, args.image_size, iters, args.warmup)

    env = describe_environment(device, memory_env)
    print(render_markdown(env, checks, timings, iters))
    result = {
        "bench": "bridge",
        "env": env,
        "iters": iters,
        "image_size": args.image_size,
        "checks": [dataclasses.asdict(c) for c in checks],
        "timings": [dataclasses.asdict(t) for t in timings],
        "ok": all(c.ok for c in checks if c.required),
    }
    line = json.dumps(result, separators=(",", ":"))
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(line + "\n")
    print(line)
    return 0 if result["ok"] else 1


# ---------------------------------------------------------------------------------------------
# checks


def run_checks(device) -> list[Check]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from jaxrl_isaac import bridge

    checks: list[Check] = []

    def record(name: str, fn: Callable[[], tuple[bool, str]], required: bool = True) -> None:
        try:
            ok, detail = fn()
        except Exception as err:  # noqa: BLE001 - a probe that raises is a failed check, not a crash
            ok, detail = False, f"raised {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        checks.append(Check(name, bool(ok), detail, required))

    def same_values(j, t) -> bool:
        ref = t.detach().cpu().numpy()
        return bool(np.array_equal(np.asarray(j), ref.astype(np.asarray(j).dtype)))

    def zero_copy(t) -> tuple[bool, str]:
        j = bridge.torch_to_jax(t)
        aliased = j.unsafe_buffer_pointer() == t.data_ptr()
        values = same_values(j, t)
        return aliased and values and j.dtype == np.dtype(str(t.dtype).removeprefix("torch.")), (
            f"{t.dtype}{list(t.shape)} -> {j.dtype}: same buffer={aliased}, values ok={values}")

    gen = torch.Generator(device=device).manual_seed(0)
    record("torch->jax float32 zero-copy", lambda: zero_copy(torch.rand(256, 1024, device=device, generator=gen)))
    record("torch->jax uint8 image zero-copy", lambda: zero_copy(
        torch.randint(0, 256, (64, 256, 256, 3), dtype=torch.uint8, device=device, generator=gen)))
    record("torch->jax bool zero-copy", lambda: zero_copy(torch.rand(4096, device=device, generator=gen) > 0.5))
    record("torch->jax int32 zero-copy", lambda: zero_copy(torch.arange(4096, dtype=torch.int32, device=device)))

    def jax_to_torch_zero_copy() -> tuple[bool, str]:
        action = jnp.linspace(-1.0, 1.0, 256 * ACTION_HORIZON * ACTION_DIM).reshape(256, ACTION_HORIZON, ACTION_DIM)
        done = jnp.arange(512) % 3 == 0
        ta, td = bridge.jax_to_torch(action), bridge.jax_to_torch(done)
        aliased = ta.data_ptr() == action.unsafe_buffer_pointer() and td.data_ptr() == done.unsafe_buffer_pointer()
        values = (np.array_equal(ta.cpu().numpy(), np.asarray(action))
                  and np.array_equal(td.cpu().numpy(), np.asarray(done)))
        ok = aliased and values and td.dtype == torch.bool and ta.device == device
        return ok, (f"action {tuple(ta.shape)} {ta.dtype} on {ta.device}, done {td.dtype}: "
                    f"same buffers={aliased}, values ok={values}")

    record("jax->torch float32/bool zero-copy", jax_to_torch_zero_copy)

    def own_isolates() -> tuple[bool, str]:
        reward = torch.rand(256, device=device, generator=gen)
        terminated = torch.rand(256, device=device, generator=gen) > 0.5
        before_r, before_t = reward.cpu().numpy().copy(), terminated.cpu().numpy().copy()
        out = bridge.tree_torch_to_jax({"reward": reward, "terminated": terminated}, own=True)
        reward.fill_(-1.0)  # what IsaacLab's reward manager does to its buffer on the next step
        terminated[:] = False
        ok = (np.array_equal(np.asarray(out["reward"]), before_r)
              and np.array_equal(np.asarray(out["terminated"]), before_t))
        return ok, f"JAX copies unchanged after in-place overwrite of the torch buffers: {ok}"

    record("own=True isolates from in-place overwrite", own_isolates)

    def unowned_aliases() -> tuple[bool, str]:
        reward = torch.ones(256, device=device)
        j = bridge.torch_to_jax(reward)
        reward.mul_(0.0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        total = float(jnp.sum(j))
        return total == 0.0, f"own=False: JAX sum after torch zeroed the source = {total} (0 = aliased, by design)"

    record("own=False aliases the source", unowned_aliases, required=False)

    def strided_and_casts() -> tuple[bool, str]:
        base = torch.rand(128, 64, device=device, generator=gen)
        cases = {
            "column slice": base[:, :32],
            "transpose": base.T,
            "expand": base[:, :1].expand(128, 8),
            "int64": torch.arange(-500, 500, device=device),
            "float64": torch.rand(1000, dtype=torch.float64, device=device, generator=gen),
        }
        bad = []
        for label, t in cases.items():
            j = bridge.torch_to_jax(t)
            ref = t.cpu().numpy()
            if tuple(j.shape) != tuple(t.shape) or not np.allclose(np.asarray(j), ref.astype(np.asarray(j).dtype)):
                bad.append(label)
        return not bad, ("all correct: " + ", ".join(cases)) if not bad else f"wrong: {bad}"

    record("strided / int64 / float64 inputs give correct values", strided_and_casts)

    def misaligned_slice() -> tuple[bool, str]:
        flat = torch.rand(1 << 16, device=device, generator=gen)
        j = bridge.torch_to_jax(flat[1:])
        doubled = jax.jit(lambda a: a * 2.0)(j)
        ok = np.allclose(np.asarray(doubled), 2.0 * flat[1:].cpu().numpy())
        copied = j.unsafe_buffer_pointer() != flat[1:].data_ptr()
        return ok, f"x[1:] (4-byte offset) through the bridge, then jit: values ok={ok}, copied={copied}"

    record("misaligned 1-D slice usable in jit", misaligned_slice)

    def raw_misaligned_slice() -> tuple[bool, str]:
        flat = torch.rand(1 << 16, device=device, generator=gen)
        with _cuda_device_ctx(torch, device):
            j = jax.dlpack.from_dlpack(flat[1:])
        aliased = j.unsafe_buffer_pointer() == flat[1:].data_ptr()
        try:
            ok = np.allclose(np.asarray(jax.jit(lambda a: a * 2.0)(j)), 2.0 * flat[1:].cpu().numpy())
            return ok, f"raw jax.dlpack.from_dlpack(x[1:]): aliased={aliased}, jit values ok={ok}"
        except Exception as err:  # noqa: BLE001
            return False, (f"raw jax.dlpack.from_dlpack(x[1:]): aliased={aliased}, "
                           f"jit raised {str(err).splitlines()[0][:160]}")

    record("raw DLPack of a misaligned slice (no bridge)", raw_misaligned_slice, required=False)

    def keeps_jax_buffer_alive() -> tuple[bool, str]:
        a = jnp.full((1 << 20,), 3.0)
        t = bridge.jax_to_torch(a)
        del a
        gc.collect()
        churn = [jnp.full((1 << 20,), float(i)) for i in range(8)]
        jax.block_until_ready(churn)
        ok = bool((t == 3.0).all())
        return ok, f"tensor unchanged after the jax.Array was dropped and 8 arrays of the same size were made: {ok}"

    record("jax->torch tensor outlives the jax.Array", keeps_jax_buffer_alive)

    if device.type == "cuda":
        _cuda_checks(record, device, gen)
    return checks


def _cuda_checks(record, device, gen) -> None:
    import jax
    import jax.numpy as jnp
    import torch

    from jaxrl_isaac import bridge

    def device_match() -> tuple[bool, str]:
        t = torch.ones(8, device=device)
        (jax_device,) = bridge.torch_to_jax(t).devices()
        a = jax.device_put(jnp.ones(8), jax_device)
        back = bridge.jax_to_torch(a)
        ok = jax_device.local_hardware_id == device.index and back.device == device
        return ok, f"torch {device} -> JAX {jax_device} (hw id {jax_device.local_hardware_id}) -> torch {back.device}"

    record("device matching", device_match)

    side = torch.cuda.Stream(device=device)
    weights = torch.rand(4096, 4096, device=device, generator=gen)
    trials = 10

    def produce_on_side_stream(value: float):
        # A long matmul queued on the side stream delays the fill that JAX must observe.
        with torch.cuda.stream(side):
            out = weights @ weights
            out = out @ weights
            out.fill_(value)
        return out

    def side_stream(mode: str) -> tuple[bool, str]:
        correct = 0
        for k in range(trials):
            value = float(k + 1)
            if mode == "inside":
                with torch.cuda.stream(side):
                    out = weights @ weights
                    out = out @ weights
                    out.fill_(value)
                    j = bridge.torch_to_jax(out, sync="current_stream")
            else:
                out = produce_on_side_stream(value)
                if mode == "device":
                    j = bridge.torch_to_jax(out)
                elif mode == "device_own":
                    j = bridge.torch_to_jax(out, own=True)
                else:
                    j = bridge.torch_to_jax(out, sync="current_stream")
            correct += float(jnp.min(j)) == value and float(jnp.max(j)) == value
            torch.cuda.synchronize(device)
        return correct == trials, f"{correct}/{trials} correct"

    record("side-stream producer, default sync='device'", lambda: side_stream("device"))
    record("side-stream producer, sync='device', own=True", lambda: side_stream("device_own"))
    record("side-stream producer, sync='current_stream' inside the stream", lambda: side_stream("inside"))
    record("side-stream producer, sync='current_stream' outside (race)", lambda: side_stream("outside"),
           required=False)

    def jax_to_torch_ordering() -> tuple[bool, str]:
        x = jnp.ones((4096, 4096), jnp.float32)
        correct = 0
        for k in range(trials):
            y = (x @ x @ x) * 0.0 + float(k + 1)  # queued, not finished, when exported
            t = bridge.jax_to_torch(y, sync="current_stream")
            correct += float(t.min()) == k + 1 and float(t.max()) == k + 1
        return correct == trials, f"{correct}/{trials} correct (torch's current stream waits for JAX)"

    record("jax->torch ordering, sync='current_stream'", jax_to_torch_ordering)

    def donation() -> tuple[bool, str]:
        a = jnp.full((1 << 20,), 5.0)
        t = bridge.jax_to_torch(a)
        try:
            b = jax.jit(lambda v: v + 1.0, donate_argnums=0)(a)
            b.block_until_ready()
            reused = b.unsafe_buffer_pointer() == t.data_ptr()
            outcome = f"donation accepted, array deleted={a.is_deleted()}, reused buffer={reused}"
        except Exception as err:  # noqa: BLE001
            outcome = f"donation raised {type(err).__name__}: {str(err).splitlines()[0][:120]}"
        ok = bool((t == 5.0).all())
        return ok, f"{outcome}; exported tensor unchanged={ok}"

    record("donating an exported array", donation, required=False)

    def memory() -> tuple[bool, str]:
        jnp.ones(8).block_until_ready()
        free, total = torch.cuda.mem_get_info(device)
        return True, f"after JAX start-up torch sees {free / 2**30:.1f} of {total / 2**30:.1f} GiB free"

    record("GPU memory left to the simulator", memory, required=False)


def _cuda_device_ctx(torch, device):
    import contextlib

    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _jax_has_cuda(jax) -> bool:
    try:
        return bool(jax.devices("cuda"))
    except RuntimeError:
        return False


# ---------------------------------------------------------------------------------------------
# timings


def make_step(num_envs: int, image_size: int, device) -> dict[str, Any]:
    """Tensors of one IsaacLab camera step: {"obs": {"policy": {...}}, "reward", "terminated", "truncated"}."""
    import torch

    gen = torch.Generator(device=device).manual_seed(num_envs)
    policy = {cam: torch.randint(0, 256, (num_envs, image_size, image_size, 3), dtype=torch.uint8, device=device,
                                 generator=gen) for cam in CAMERA_TERMS}
    policy.update({term: torch.randn(num_envs, dim, device=device, generator=gen) for term, dim in SMALL_TERMS.items()})
    return {
        "obs": {"policy": policy},
        "reward": torch.randn(num_envs, device=device, generator=gen),
        "terminated": torch.rand(num_envs, device=device, generator=gen) > 0.9,
        "truncated": torch.rand(num_envs, device=device, generator=gen) > 0.95,
    }


def step_paths(step: dict[str, Any]) -> dict[str, tuple[int, Callable[[], Any]]]:
    """The torch -> JAX variants compared per step: name -> (exports per call, fn)."""
    import jax.numpy as jnp

    from jaxrl_isaac import bridge

    policy = step["obs"]["policy"]
    n_leaves = len(policy) + len(REUSED_STEP_BUFFERS)
    small = {**{k: policy[k] for k in SMALL_TERMS}, **{k: step[k] for k in REUSED_STEP_BUFFERS}}
    cams = {k: policy[k] for k in CAMERA_TERMS}

    def reused(path: str) -> bool:
        return path in REUSED_STEP_BUFFERS

    def packed():
        images = bridge.tree_torch_to_jax(cams)
        buffers, _ = bridge.torch_to_jax_packed(small)
        return images, buffers

    return {
        "tree, own=reward/dones, sync=device": (n_leaves, lambda: bridge.tree_torch_to_jax(step, own=reused)),
        "tree, own=reward/dones, sync=current_stream": (
            n_leaves, lambda: bridge.tree_torch_to_jax(step, own=reused, sync="current_stream")),
        "tree, own=all": (n_leaves, lambda: bridge.tree_torch_to_jax(step, own=True)),
        "images + packed small terms": (len(cams) + 2, packed),
        "naive .cpu().numpy() -> jnp.asarray": (
            0, lambda: {path: jnp.asarray(t.cpu().numpy()) for path, t in _leaves(step)}),
    }


def run_timings(device, num_envs_list: Sequence[int], image_size: int, iters: int, warmup: int) -> list[Timing]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from jaxrl_isaac import bridge

    def sync_all() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def measure(fn: Callable[[], Any]) -> tuple[float, float]:
        samples = []
        for i in range(warmup + iters):
            sync_all()
            start = time.perf_counter()
            out = fn()
            jax.block_until_ready([x for x in jax.tree.leaves(out) if isinstance(x, jax.Array)])
            sync_all()
            if i >= warmup:
                samples.append(time.perf_counter() - start)
            del out
        samples.sort()
        return statistics.median(samples) * 1e6, samples[min(len(samples) - 1, int(0.9 * len(samples)))] * 1e6

    timings: list[Timing] = []
    for num_envs in num_envs_list:
        step = make_step(num_envs, image_size, device)
        rows = []
        for path, (exports, fn) in step_paths(step).items():
            rows.append((path, exports, *measure(fn)))
        naive = rows[-1][2]
        timings += [Timing(num_envs, path, exports, med, p90, naive / med) for path, exports, med, p90 in rows]

        jax_device = bridge.torch_to_jax(step["reward"]).devices().pop()
        action = jax.device_put(jnp.zeros((num_envs, ACTION_HORIZON, ACTION_DIM), jnp.float32), jax_device)
        action_rows = [
            ("action jax_to_torch (N,16,7)", 1, *measure(lambda: bridge.jax_to_torch(action))),
            ("action naive np.array -> torch", 0,
             *measure(lambda: torch.from_numpy(np.array(action)).to(device))),
        ]
        naive = action_rows[-1][2]
        timings += [Timing(num_envs, path, exports, med, p90, naive / med) for path, exports, med, p90 in action_rows]
        del step
        gc.collect()
    return timings


def _leaves(tree: Any, prefix: str = ""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}/{key}" if prefix else key)
    else:
        yield prefix, tree


# ---------------------------------------------------------------------------------------------
# report


def describe_environment(device, memory_env: dict[str, str | None]) -> dict[str, Any]:
    import jax
    import torch

    return {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "jax": jax.__version__,
        "jax_devices": [str(d) for d in jax.devices()],
        "python": sys.version.split()[0],
        "jax_memory_env": {k: v for k, v in memory_env.items() if v is not None},
    }


def render_markdown(env: dict[str, Any], checks: Sequence[Check], timings: Sequence[Timing], iters: int) -> str:
    lines = [f"## torch <-> JAX bridge on {env['device']}" + (f" ({env['gpu']})" if env["gpu"] else ""),
             "", f"torch {env['torch']}, jax {env['jax']}, python {env['python']}, "
                 f"JAX memory env {env['jax_memory_env'] or '{}'}", "",
             "| check | result | detail |", "|---|---|---|"]
    for c in checks:
        result = ("pass" if c.ok else "**FAIL**") if c.required else ("info: yes" if c.ok else "info: no")
        lines.append(f"| {c.name} | {result} | {c.detail} |")
    lines += ["", f"Per call, median and p90 of {iters} iterations (µs); speed-up = naive median / this median.", "",
              "| N | path | DLPack calls | median µs | p90 µs | speed-up vs naive |", "|---|---|---|---|---|---|"]
    for t in timings:
        lines.append(f"| {t.num_envs} | {t.path} | {t.exports} | {t.median_us:.0f} | {t.p90_us:.0f} | "
                     f"{t.speedup_vs_naive:.1f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
