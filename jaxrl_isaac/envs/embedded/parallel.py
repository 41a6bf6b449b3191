"""Process-parallel stepping of the embedded Franka env: ``EmbeddedFrankaEnv``'s API over ``num_workers`` processes.

One Python thread steps ~3k sub-env control steps/s (MuJoCo and the batched IK hold the GIL), so
``ParallelFrankaEnv`` splits the N sub-envs into ``num_workers`` contiguous shards and gives each shard an
``EmbeddedFrankaEnv`` in its own process.

Transport. Workers are started with the "spawn" method (torch/JAX/CUDA state in the parent makes fork unsafe). Each
worker has a duplex pipe for commands and replies, which carry only tiny messages (a command name, reset ids and
options, the ``extras["log"]`` floats). Arrays travel through one shared memory block (an anonymous ``memfd``
whose descriptor is handed to every worker over its pipe, so nothing is ever left behind in /dev/shm and Docker's
small /dev/shm limit does not apply). The block holds one (N, ...) region per array (the action, every low-dim obs
term, reward, flags, episode counters, and one region per camera); worker k reads and writes only its rows, so
the shards land in sub-env order without any concatenation, and the parent makes one copy per returned tensor.
A step is: write actions, send "step" to every worker, then wait for every reply (workers run concurrently).

Seeding. Worker k's env is built with ``seed + 1000003 * k`` (``WORKER_SEED_STRIDE``: a large prime, so worker
seeds do not collide with the small offsets callers add per env process, e.g. ``seed + rank``), and
``reset(seed=s)`` reseeds worker k with ``s + 1000003 * k``. Rollouts are therefore deterministic for a given (seed, num_workers), and with
``num_workers=1`` they equal ``EmbeddedFrankaEnv``'s with the same seed exactly. A different ``num_workers`` gives
different (equally valid) episode starts.

Cameras stay lazy: reading a camera of the returned obs asks every worker to render its shard (in parallel) into
the shared block.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import tempfile
import traceback
import weakref
from multiprocessing import reduction
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from jaxrl_isaac.envs.contract import CAMERA_KEYS, POLICY_GROUP, EnvInputError, validate_action
from jaxrl_isaac.envs.embedded import diff_ik, scene, tasks
from jaxrl_isaac.envs.embedded.franka_env import RESET_OPTION_KEYS, EmbeddedFrankaEnv, check_env_args
from jaxrl_isaac.envs.embedded.observations import LazyObsGroup
from jaxrl_isaac.envs.env_process import describe_error, picklable_value_error

WORKER_SEED_STRIDE = 1000003  # worker k's seed = seed + WORKER_SEED_STRIDE * k
_OPTION_SIZES = {"joint_pos": 9, "cube_positions": 9, "cube_orientations": 12, "target_pos": 3}
# Thread pools a worker does not need: its numpy work is batched 6x6 algebra, and N workers each starting a
# core-count-sized BLAS/OpenMP pool would oversubscribe the host. Applied only where the user has not chosen.
_SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_STEP_OUTPUTS = {"reward": np.float32, "terminated": np.bool_, "truncated": np.bool_, "success": np.bool_,
                 "dropped": np.bool_, "episode_len": np.int64}
_ALIGN = 64  # bytes; every region starts on a cache line


# --- shared memory layout -----------------------------------------------------------------------------------------

Layout = dict[str, tuple[int, tuple[int, ...], str]]  # name -> (byte offset, full shape (N, ...), numpy dtype str)


def _make_layout(num_envs: int, obs_spec: dict[str, tuple[tuple[int, ...], str]],
                 camera_hw: dict[str, tuple[int, int]]) -> tuple[Layout, int]:
    """Regions of the shared block and its total size in bytes.

    Args:
      obs_spec: low-dim obs term -> (per-sub-env shape, dtype str), as a worker reported it.
      camera_hw: camera term -> (height, width).
    """
    arrays: dict[str, tuple[tuple[int, ...], str]] = {
        "action": ((EmbeddedFrankaEnv.action_dim,), np.dtype(np.float32).str),
        "episode_length_buf": ((), np.dtype(np.int64).str),
        **{name: ((), np.dtype(dtype).str) for name, dtype in _STEP_OUTPUTS.items()},
        **{f"obs/{key}": spec for key, spec in obs_spec.items()},
        **{f"cam/{name}": ((*hw, 3), np.dtype(np.uint8).str) for name, hw in camera_hw.items()},
    }
    layout: Layout = {}
    offset = 0
    for name, (row_shape, dtype) in arrays.items():
        shape = (num_envs, *row_shape)
        layout[name] = (offset, shape, dtype)
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        offset += -(-nbytes // _ALIGN) * _ALIGN
    return layout, max(offset, _ALIGN)


def _views(buffer: mmap.mmap, layout: Layout, rows: slice = slice(None)) -> dict[str, np.ndarray]:
    """Numpy views of every region (restricted to ``rows`` of the sub-env axis)."""
    views = {}
    for name, (offset, shape, dtype) in layout.items():
        count = int(np.prod(shape))
        views[name] = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(shape)[rows]
    return views


def _shared_fd(size: int) -> int:
    """An anonymous shared file of ``size`` bytes (memfd on Linux: no name, freed when the last fd closes)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("jaxrl-embedded-env", os.MFD_CLOEXEC)
    else:  # other POSIX systems: an already-unlinked temporary file
        with tempfile.TemporaryFile() as file:
            fd = os.dup(file.fileno())
    os.ftruncate(fd, size)
    return fd


# --- messages ------------------------------------------------------------------------------------------------------

def _dumps(message: tuple) -> bytes:
    """A pipe message as ``Connection.send`` pickles it (so ``recv`` reads it back)."""
    return bytes(reduction.ForkingPickler.dumps(message))


# --- worker process ------------------------------------------------------------------------------------------------

class _Worker:
    """The worker side: an ``EmbeddedFrankaEnv`` of one shard, serving commands from the parent's pipe."""

    def __init__(self, conn: mp.connection.Connection, env_kwargs: dict[str, Any]):
        self.conn = conn
        self.env = EmbeddedFrankaEnv(**env_kwargs, device="cpu")
        # The term spec (keys, shapes, dtypes) is only known from an obs. A full reset with the constructor's seed
        # re-creates its Generator and redraws the very start the constructor drew, so the env state is unchanged.
        self.obs, _ = self.env.reset(seed=env_kwargs["seed"])
        self.views: dict[str, np.ndarray] = {}
        self.buffer: mmap.mmap | None = None

    def obs_spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        group = self.obs[POLICY_GROUP]
        return {key: (tuple(group[key].shape[1:]), group[key].numpy().dtype.str)
                for key in group if key not in CAMERA_KEYS}

    def serve(self) -> None:
        """Answer commands until "close" (or until the parent goes away)."""
        while True:
            try:
                command, *args = self.conn.recv()
            except (EOFError, OSError):
                return  # the parent died or closed the pipe: nothing left to serve
            if command == "close":
                self.env.close()
                return
            try:
                reply = ("ok", getattr(self, f"cmd_{command}")(*args))
            except Exception as err:  # noqa: BLE001 - every failure is reported to the parent, on one line
                reply = ("error", describe_error(err), traceback.format_exc())
            try:
                self.conn.send(reply)
            except OSError:
                return  # the parent is gone

    def cmd_attach(self, layout: Layout, rows: tuple[int, int]) -> None:
        fd = reduction.recv_handle(self.conn)
        self.buffer = mmap.mmap(fd, 0)
        os.close(fd)  # the mapping keeps the memory alive
        self.views = _views(self.buffer, layout, slice(*rows))
        self._write_obs()

    def cmd_step(self) -> dict[str, float]:
        action = torch.from_numpy(self.views["action"].copy())
        self.obs, reward, terminated, truncated, extras = self.env.step(action)
        outputs = {"reward": reward, "terminated": terminated, "truncated": truncated, "success": extras["success"],
                   "dropped": extras["dropped"], "episode_len": extras["episode_len"]}
        for name, tensor in outputs.items():
            np.copyto(self.views[name], tensor.numpy())
        self._write_obs()
        return extras["log"]

    def cmd_reset(self, seed: int | None, env_ids: np.ndarray | None, options: dict[str, np.ndarray]) -> None:
        self.obs, _ = self.env.reset(seed=seed, env_ids=env_ids, options=options or None)
        self._write_obs()

    def cmd_seed(self, seed: int) -> None:
        # reset(seed=..., env_ids=...) of the parent reseeds every worker, also those owning none of the ids; this
        # is the reseeding line of EmbeddedFrankaEnv.reset, without a reset.
        self.env._rng = np.random.default_rng(seed)

    def cmd_render(self, camera: str) -> int:
        np.copyto(self.views[f"cam/{camera}"], self.obs[POLICY_GROUP][camera].numpy())
        return self.env.render_count

    def cmd_raise(self, message: str) -> None:
        """Fail on purpose (tests of the error path)."""
        raise RuntimeError(message)

    def _write_obs(self) -> None:
        group = self.obs[POLICY_GROUP]
        for key in group:
            if key not in CAMERA_KEYS:
                np.copyto(self.views[f"obs/{key}"], group[key].numpy())
        np.copyto(self.views["episode_length_buf"], self.env.episode_length_buf.numpy())


def _worker_main(conn: mp.connection.Connection, env_kwargs: dict[str, Any]) -> None:
    """Entry point of a worker process: build the shard's env, report its obs spec, then serve commands."""
    # Ctrl-C reaches the whole process group; the parent handles it and shuts the workers down (no K tracebacks).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    try:
        worker = _Worker(conn, env_kwargs)
    except Exception as err:  # noqa: BLE001 - reported to the parent, which re-raises it
        conn.send(("error", describe_error(err), picklable_value_error(err)))
        return
    conn.send(("ok", worker.obs_spec()))
    worker.serve()


# --- parent side ---------------------------------------------------------------------------------------------------

class WorkerError(RuntimeError):
    """A worker failed or died; the pool has been shut down."""


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Spawned children copy the parent's environment at start: cap their BLAS/OpenMP pools while starting them."""
    saved = {name: os.environ.get(name) for name in _SINGLE_THREAD_ENV}
    for name, value in saved.items():
        if value is None:
            os.environ[name] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)


class _WorkerPool:
    """Processes, pipes and the shared block. Holds no reference to the env, so a finalizer can shut it down."""

    def __init__(self, shards: list[tuple[int, int]], env_kwargs: list[dict[str, Any]]):
        self.shards = shards
        self.closed = False
        self.views: dict[str, np.ndarray] = {}
        self.buffer: mmap.mmap | None = None
        self._fd = -1
        ctx = mp.get_context("spawn")
        self.conns: list[mp.connection.Connection] = []
        self.processes: list[mp.process.BaseProcess] = []
        try:
            with _single_threaded_children():
                for k, kwargs in enumerate(env_kwargs):
                    parent_end, child_end = ctx.Pipe(duplex=True)  # a socketpair: it can also carry the fd
                    process = ctx.Process(target=_worker_main, args=(child_end, kwargs), daemon=True,
                                          name=f"embedded-env-worker-{k}")
                    self.conns.append(parent_end)
                    process.start()
                    self.processes.append(process)
                    child_end.close()  # only the child holds it now, so its death reads as EOF here
        except BaseException:
            self.shutdown()
            raise

    def attach(self, layout: Layout, size: int) -> None:
        """Create the shared block and map it in every worker."""
        self._fd = _shared_fd(size)
        self.buffer = mmap.mmap(self._fd, size)
        self.views = _views(self.buffer, layout)
        for k, (conn, process) in enumerate(zip(self.conns, self.processes)):
            self._send(k, _dumps(("attach", layout, self.shards[k])))
            reduction.send_handle(conn, self._fd, process.pid)
        self.gather(range(len(self.conns)))

    def request(self, messages: dict[int, tuple]) -> dict[int, Any]:
        """Send each worker its command, then collect the replies (the workers run concurrently)."""
        for k, message in messages.items():
            self._send(k, _dumps(message))
        return self.gather(messages)

    def broadcast(self, message: tuple) -> list[Any]:
        """The same command to every worker (pickled once); their replies in worker order."""
        data = _dumps(message)
        for k in range(len(self.conns)):
            self._send(k, data)
        replies = self.gather(range(len(self.conns)))
        return [replies[k] for k in range(len(self.conns))]

    def gather(self, workers: Iterable[int]) -> dict[int, Any]:
        """Replies of ``workers`` (in order); the first failure shuts the pool down and raises ``WorkerError``."""
        replies, failure = {}, None
        for k in workers:
            try:
                status, *payload = self.conns[k].recv()
            except (EOFError, OSError):
                failure = failure or self._failure(k, f"exited unexpectedly (exit code {self._exitcode(k)})")
                continue
            except BaseException:  # e.g. Ctrl-C mid-exchange: replies are left unread, the pool cannot go on
                self.shutdown()
                raise
            if status == "ok":
                replies[k] = payload[0]
            else:
                failure = failure or self._failure(k, payload[0], payload[1])
        if failure is not None:
            self.shutdown()
            raise failure
        return replies

    def _send(self, k: int, data: bytes) -> None:
        try:
            self.conns[k].send_bytes(data)
        except (BrokenPipeError, ConnectionResetError, OSError):
            error = self._failure(k, f"exited unexpectedly (exit code {self._exitcode(k)})")
            self.shutdown()
            raise error from None

    def _failure(self, k: int, message: str, cause: Any = None) -> Exception:
        """The parent-side error for worker k: its own ValueError (bad constructor input), else ``WorkerError``."""
        if isinstance(cause, ValueError):
            return cause
        lo, hi = self.shards[k]
        return WorkerError(f"embedded env worker {k} (sub-envs {lo}..{hi - 1}) failed: {message}; "
                           f"the worker pool was shut down")

    def _exitcode(self, k: int) -> int | None:
        self.processes[k].join(timeout=2.0)
        return self.processes[k].exitcode

    def shutdown(self) -> None:
        """Stop every worker (politely, then by force) and free the shared block; idempotent."""
        if self.closed:
            return
        self.closed = True
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("close",))
        for process in self.processes:
            process.join(timeout=10.0)
            if process.is_alive():
                process.terminate()
                process.join(timeout=2.0)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self.conns:
            conn.close()
        self.views = {}  # the views export the mmap's buffer; drop them before closing it
        if self.buffer is not None:
            with contextlib.suppress(BufferError):
                self.buffer.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def shard_bounds(num_envs: int, num_workers: int, group_size: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) sub-env ranges, sizes as even as possible; each must hold whole GRPO groups."""
    if not isinstance(num_workers, int) or not 1 <= num_workers <= num_envs:
        raise ValueError(f"num_workers must be an int in [1, num_envs={num_envs}], got {num_workers!r}")
    sizes = [num_envs // num_workers + (k < num_envs % num_workers) for k in range(num_workers)]
    if any(size % group_size for size in sizes):
        raise ValueError(f"num_envs={num_envs} split over num_workers={num_workers} gives shards of {sizes} "
                         f"sub-envs, which must all be divisible by group_size={group_size}")
    bounds = np.cumsum([0, *sizes])
    return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def merge_logs(logs: list[dict[str, float]], num_ended_key: str = "Episode/num_ended") -> dict[str, float]:
    """Merge the workers' ``extras["log"]``: "*_mean" entries are means over the ended episodes of all shards
    (weighted by each shard's ``num_ended_key``), every other entry (counts) is summed."""
    if len(logs) == 1:
        return dict(logs[0])  # exactly the single env's numbers (a weighted mean of one could round differently)
    if not logs or not logs[0]:
        return {}
    weights = [log.get(num_ended_key, 0.0) for log in logs]
    total = sum(weights)
    merged = {}
    for key in logs[0]:
        if key.endswith("_mean"):
            merged[key] = float(sum(w * log[key] for w, log in zip(weights, logs)) / total) if total else 0.0
        else:
            merged[key] = float(sum(log[key] for log in logs))
    return merged


class ParallelFrankaEnv:
    """``EmbeddedFrankaEnv`` (same API, attributes and outputs) with its sub-envs stepped in worker processes.

    Args:
      task_id, num_envs, device, table_cam, wrist_cam, max_episode_steps, group_size, reward_type: as
        ``EmbeddedFrankaEnv``.
      seed: non-negative int; worker k's env is built with ``seed + 1000003 * k``.
      num_workers: K processes; worker k owns a contiguous shard of the sub-envs (sizes as even as possible, each
        divisible by ``group_size``).
    """

    action_dim = EmbeddedFrankaEnv.action_dim
    quat_order = EmbeddedFrankaEnv.quat_order

    def __init__(self, task_id: str, num_envs: int, device: str | torch.device = "cpu", seed: int = 0,
                 table_cam: tuple[int, int] = (200, 200), wrist_cam: tuple[int, int] = (200, 200),
                 max_episode_steps: int = 600, group_size: int = 1, reward_type: str = "sparse",
                 num_workers: int = 2, tiled_rendering: bool = False):
        # Cheap checks first: a bad input should not cost K process starts.
        if not isinstance(tiled_rendering, bool):
            raise ValueError(f"tiled_rendering must be a bool, got {tiled_rendering!r}")
        self.task = tasks.get_task(task_id)
        self.device = check_env_args(num_envs, group_size, max_episode_steps, reward_type, table_cam, wrist_cam, device)
        _check_seed(seed)
        self._shards = shard_bounds(num_envs, num_workers, group_size)
        self.task_id = task_id
        self.num_envs = num_envs
        self.num_workers = num_workers
        self.group_size = group_size
        self.max_episode_steps = max_episode_steps
        self.reward_type = reward_type
        self.task_description = self.task.description
        self.spec = self.task
        self.step_dt = scene.CONTROL_DT
        self.ik = diff_ik.DiffIKConfig()  # the workers' IK settings (the scripted experts read the action scale)

        common = dict(task_id=task_id, table_cam=table_cam, wrist_cam=wrist_cam,
                      max_episode_steps=max_episode_steps, group_size=group_size, reward_type=reward_type,
                      tiled_rendering=tiled_rendering)  # each worker tiles its own shard
        self._pool = _WorkerPool(self._shards, [
            dict(common, num_envs=hi - lo, seed=self._worker_seed(seed, k)) for k, (lo, hi) in enumerate(self._shards)])
        self._finalizer = weakref.finalize(self, self._pool.shutdown)  # no worker outlives the env (or the process)
        specs = self._pool.gather(range(num_workers))
        camera_hw = {"table_cam": tuple(map(int, table_cam)), "wrist_cam": tuple(map(int, wrist_cam))}
        layout, size = _make_layout(num_envs, specs[0], camera_hw)
        self._pool.attach(layout, size)
        self._obs_keys = tuple(specs[0])
        self._episode_len = self._pool.views["episode_length_buf"].copy()
        self._render_counts = [0] * num_workers
        self._obs_version = 0

    # --- public API -------------------------------------------------------------------------------------------

    @property
    def render_count(self) -> int:
        """Camera images rendered so far, summed over the workers."""
        return sum(self._render_counts)

    @property
    def episode_length_buf(self) -> torch.Tensor:
        """(N,) int64 control steps taken in each sub-env's current episode."""
        return torch.from_numpy(self._episode_len.copy()).to(self.device)

    @property
    def worker_pids(self) -> tuple[int | None, ...]:
        """Process ids of the workers."""
        return tuple(p.pid for p in self._pool.processes)

    def reset(self, seed: int | None = None, env_ids: Any = None, options: dict | None = None
              ) -> tuple[dict[str, LazyObsGroup], dict]:
        """Start new episodes; returns ``(obs, extras)`` as ``EmbeddedFrankaEnv.reset``.

        Args:
          seed: non-negative int; reseeds worker k with ``seed + 1000003 * k`` (every worker, also with env_ids).
          env_ids: None (all sub-envs, group-shared starts) or indices / a bool mask; each goes to its worker.
          options: start overrides as ``EmbeddedFrankaEnv.reset``; batched ones are split with the ids.
        """
        self._check_open()
        if seed is not None:
            _check_seed(seed)
        ids = np.arange(self.num_envs) if env_ids is None else _parse_env_ids(env_ids, self.num_envs)
        overrides = _parse_options(options, len(ids))
        messages = {}
        for k, (lo, hi) in enumerate(self._shards):
            worker_seed = None if seed is None else self._worker_seed(seed, k)
            mine = (ids >= lo) & (ids < hi)
            if mine.any():
                local_ids = None if env_ids is None else ids[mine] - lo
                # Batched options (count, D) follow their ids; unbatched ones (D,) go to every worker as they are.
                local_options = {key: v[mine] if v.ndim == 2 else v for key, v in overrides.items()}
                messages[k] = ("reset", worker_seed, local_ids, local_options)
            elif worker_seed is not None:
                messages[k] = ("seed", worker_seed)
        self._pool.request(messages)
        obs = self._read_obs()
        zeros = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        extras = {"success": zeros, "dropped": zeros.clone(),
                  "episode_len": torch.zeros(self.num_envs, dtype=torch.int64, device=self.device), "log": {}}
        return obs, extras

    def step(self, action: torch.Tensor) -> tuple[dict[str, LazyObsGroup], torch.Tensor, torch.Tensor,
                                                  torch.Tensor, dict]:
        """One control step of every sub-env (workers in parallel); outputs as ``EmbeddedFrankaEnv.step``.

        Args:
          action: (N, 7) float on ``device``.
        Returns:
          obs, reward (N,) f32, terminated (N,) bool, truncated (N,) bool, extras ("success", "dropped",
          "episode_len" (N,), "log" merged over the workers).
        """
        action = validate_action(action, self.num_envs, self.action_dim, self.device)
        self._check_open()
        np.copyto(self._pool.views["action"], action.detach().cpu().numpy())
        logs = self._pool.broadcast(("step",))
        obs = self._read_obs()
        to = self._tensor
        extras = {"success": to("success"), "dropped": to("dropped"), "episode_len": to("episode_len"),
                  "log": merge_logs(logs)}
        return obs, to("reward"), to("terminated"), to("truncated"), extras

    def close(self) -> None:
        """Stop the workers and free the shared memory; idempotent. The env cannot be used afterwards."""
        self._finalizer()

    # --- helpers -----------------------------------------------------------------------------------------------

    @staticmethod
    def _worker_seed(seed: int, k: int) -> int:
        return int(seed) + WORKER_SEED_STRIDE * k

    def _check_open(self) -> None:
        if self._pool.closed:
            raise RuntimeError("the env is closed")

    def _tensor(self, name: str) -> torch.Tensor:
        """A fresh tensor on ``device`` holding the shared region ``name`` (the region is rewritten next step)."""
        return torch.from_numpy(self._pool.views[name]).to(self.device, copy=True)

    def _read_obs(self) -> dict[str, LazyObsGroup]:
        self._episode_len = self._pool.views["episode_length_buf"].copy()
        terms = {key: self._tensor(f"obs/{key}") for key in self._obs_keys}
        self._obs_version += 1
        return {POLICY_GROUP: LazyObsGroup(terms, CAMERA_KEYS, self._render_camera, self._obs_version)}

    def _render_camera(self, camera: str, version: int) -> torch.Tensor:
        if version != self._obs_version:
            raise RuntimeError(f"{camera!r} was read from an observation the env has already stepped past; read "
                               f"camera terms before the next step()/reset()")
        self._check_open()
        self._render_counts = self._pool.broadcast(("render", camera))
        return self._tensor(f"cam/{camera}")


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int (worker k uses seed + {WORKER_SEED_STRIDE} * k), "
                         f"got {seed!r}")


def _parse_env_ids(env_ids: Any, num_envs: int) -> np.ndarray:
    """Sub-env indices from a sequence/array/tensor of ints or a bool mask (checked as ``EmbeddedFrankaEnv``)."""
    if isinstance(env_ids, torch.Tensor):
        env_ids = env_ids.detach().cpu().numpy()
    ids = np.asarray(env_ids).reshape(-1)
    if ids.dtype == bool:
        if ids.shape[0] != num_envs:
            raise EnvInputError(f"env_ids mask has {ids.shape[0]} entries, expected num_envs={num_envs}")
        ids = np.flatnonzero(ids)
    if ids.size == 0 or not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= num_envs:
        raise EnvInputError(f"env_ids must be non-empty integer indices in [0, {num_envs}), got {env_ids!r}")
    if len(np.unique(ids)) != len(ids):
        raise EnvInputError(f"env_ids contains duplicates: {ids.tolist()}")
    return ids.astype(np.int64)


def _parse_options(options: dict | None, count: int) -> dict[str, np.ndarray]:
    """Reset options as float64 arrays, (D,) unbatched or (count, D) batched, checked as ``EmbeddedFrankaEnv``."""
    if not options:
        return {}
    parsed = {}
    for key, value in options.items():
        if key not in _OPTION_SIZES:
            raise EnvInputError(f"unknown reset option {key!r}; known: {', '.join(RESET_OPTION_KEYS)}")
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        size = _OPTION_SIZES[key]
        array = np.asarray(value, dtype=np.float64)
        if array.shape not in ((size,), (count, size)) or not np.all(np.isfinite(array)):
            raise EnvInputError(f"reset option {key!r} must be finite with shape ({size},) or ({count}, {size}), "
                                f"got shape {array.shape}")
        parsed[key] = array
    return parsed
