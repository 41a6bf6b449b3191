"""A ``VecEnv`` that runs in a process of its own: how IsaacLab's train and eval envs coexist.

Kit (Isaac Sim) runs one stage per process, so one process cannot hold IsaacLab's train env and its eval env
(RLinf starts every IsaacLab env in a subprocess for the same reason). The runner keeps the train env in its own
process, where the DLPack bridge hands its tensors to JAX without a copy, and builds the eval env behind
``EnvProcess``: same API (``reset``, ``step``, ``close``, ``num_envs``, ``device``, ``action_dim``, ``quat_order``,
``task_description``), the env itself in a spawned child.

Transport. Every tensor of a reply (obs terms, reward, flags, extras) lands in a buffer that the child allocates
once per tree path, on the env's device, and hands to the parent once, through torch's multiprocessing reductions
(CUDA IPC on a GPU, shared memory on the CPU). After that a step is: the parent writes the action into a shared
buffer, sends "step"; the child steps, copies each output into its buffer (one device-side copy), synchronizes the
device and replies with the tree's structure and its non-tensor leaves. The parent reads the same buffers every
step, so the returned tensors are reused in place, exactly as IsaacLab's own buffers are (the contract already
tells consumers to copy what they keep). A lazy obs group (cameras rendered on read) is read in full in the child.

Failures. An error the env raises in the child is re-raised in the parent if it pickles and is a
``ValueError`` (``EnvInputError``, ``EnvOutputError``: bad input stays a one-line error naming the culprit); anything
else, and a child that dies, becomes ``EnvProcessError`` with the child's one-line reason, and the child is shut
down. Actions are validated in the parent, before anything is sent.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection
import pickle
import signal
import weakref
from collections.abc import Mapping
from typing import Any, Callable

import torch
import torch.multiprocessing  # noqa: F401 - registers torch's tensor reductions for multiprocessing pipes

from jaxrl_isaac.envs.contract import validate_action

# Attributes of the child's env mirrored on the parent's proxy (those that exist there).
MIRRORED_ATTRIBUTES = ("num_envs", "action_dim", "quat_order", "task_description", "task_id", "api_version",
                       "step_dt", "max_episode_length", "max_episode_steps", "group_size")
_REPLY_POLL_S = 1.0  # how often a waiting parent checks that the child is still alive


class EnvProcessError(RuntimeError):
    """The env process failed or died; it has been shut down."""


def describe_error(err: BaseException) -> str:
    """``Type: first line of the message`` (errors are reported on one line)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def picklable_value_error(err: BaseException) -> ValueError | None:
    """``err`` if the parent should raise it as is (a ValueError, e.g. ``EnvInputError``: bad input, named) and it
    pickles."""
    if not isinstance(err, ValueError):
        return None
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:  # noqa: BLE001 - an odd exception type only loses its type, not its message
        return None
    return err


# --- tree packing: tensors -> buffer references -------------------------------------------------------------------

class _BufferRef(tuple):
    """Stands for the tensor in buffer ``path`` inside a packed reply."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _ChildBuffers:
    """The child's output buffers, one per tree path; a new shape or dtype at a path gets a new buffer."""

    def __init__(self):
        self.buffers: dict[tuple, torch.Tensor] = {}

    def pack(self, tree: Any, path: tuple = ()) -> tuple[Any, dict[tuple, torch.Tensor]]:
        """(tree with every tensor replaced by a ``_BufferRef``, the buffers the parent does not have yet)."""
        new: dict[tuple, torch.Tensor] = {}
        return self._pack(tree, path, new), new

    def _pack(self, node: Any, path: tuple, new: dict) -> Any:
        if isinstance(node, torch.Tensor):
            buf = self.buffers.get(path)
            if buf is None or buf.shape != node.shape or buf.dtype != node.dtype or buf.device != node.device:
                buf = torch.empty_like(node, memory_format=torch.contiguous_format)
                self.buffers[path] = buf
                new[path] = buf
            buf.copy_(node)
            return _BufferRef(path)
        if isinstance(node, Mapping):  # dicts and lazy obs groups alike: read every term now
            return {key: self._pack(node[key], (*path, key), new) for key in list(node.keys())}
        if isinstance(node, (tuple, list)):
            return type(node)(self._pack(x, (*path, i), new) for i, x in enumerate(node))
        return node


def _unpack(node: Any, buffers: dict[tuple, torch.Tensor]) -> Any:
    if isinstance(node, _BufferRef):
        return buffers[tuple(node)]
    if isinstance(node, dict):
        return {key: _unpack(value, buffers) for key, value in node.items()}
    if isinstance(node, (tuple, list)):
        return type(node)(_unpack(x, buffers) for x in node)
    return node


# --- child ---------------------------------------------------------------------------------------------------------

def _child_main(conn: mp.connection.Connection, make_env: Callable[[], Any]) -> None:
    """Entry point of the env process: build the env, report its attributes, then serve commands until "close"."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the parent shuts the child down
    try:
        env = make_env()
        device = torch.device(env.device)
        action = torch.zeros((int(env.num_envs), int(env.action_dim)), dtype=torch.float32, device=device)
        attrs = {name: getattr(env, name) for name in MIRRORED_ATTRIBUTES if hasattr(env, name)}
        attrs["device"] = str(device)
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", describe_error(err), picklable_value_error(err)))
        return
    conn.send(("ok", attrs, action))  # the action buffer is shared with the parent once
    buffers = _ChildBuffers()
    try:
        while True:
            command, *args = conn.recv()
            if command == "close":
                break
            try:
                if command == "reset":
                    out = env.reset(*args)
                elif command == "step":
                    out = env.step(action)
                else:
                    raise RuntimeError(f"unknown env-process command {command!r}")
                packed, new = buffers.pack(out)
                _sync(device)
                conn.send(("ok", packed, new))
            except Exception as err:  # noqa: BLE001 - the parent raises it; this process stays usable for close
                conn.send(("error", describe_error(err), picklable_value_error(err)))
    except (EOFError, OSError):  # the parent is gone
        pass
    finally:
        with contextlib.suppress(Exception):
            env.close()
        with contextlib.suppress(Exception):
            conn.send(("closed",))


# --- parent --------------------------------------------------------------------------------------------------------

class _Handle:
    """Process and pipe; no reference to the proxy, so a finalizer can shut it down."""

    def __init__(self, process: mp.process.BaseProcess, conn: mp.connection.Connection, name: str):
        self.process, self.conn, self.name, self.closed = process, conn, name, False
        self.buffers: dict[tuple, torch.Tensor] = {}
        self.action: torch.Tensor | None = None  # the child's action buffer, written here

    def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        # Drop our views of the shared buffers before the child (their producer) exits; torch warns about CUDA
        # tensors still referenced then (a caller may also still hold the last obs).
        self.buffers, self.action = {}, None
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(("close",))
            if self.conn.poll(30.0):
                self.conn.recv()
        self.process.join(timeout=30.0)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class EnvProcess:
    """The env ``make_env()`` builds, run in a spawned process behind the env contract.

    Args:
      make_env: a picklable zero-argument callable (e.g. ``functools.partial(factory.make_env, split_cfg)``) that
        builds the env in the child.
      name: how errors name this env (e.g. "env.eval").
    Raises:
      EnvProcessError: the child could not build the env (with its reason), or died while doing so; a bad config
        the env's constructor rejects is re-raised as its own ``ValueError``.
    """

    def __init__(self, make_env: Callable[[], Any], *, name: str = "env"):
        ctx = mp.get_context("spawn")  # the parent holds torch/JAX/CUDA state: fork is unsafe
        parent_end, child_end = ctx.Pipe(duplex=True)
        process = ctx.Process(target=_child_main, args=(child_end, make_env), daemon=True,
                              name=f"jaxrl-isaac-{name}-process")
        process.start()
        child_end.close()  # only the child holds it now, so its death reads as EOF here
        self._handle = _Handle(process, parent_end, name)
        self._finalizer = weakref.finalize(self, self._handle.shutdown)  # no child outlives the proxy
        attrs, self._handle.action = self._request(None)
        for key, value in attrs.items():
            setattr(self, key, value)
        self.device = torch.device(attrs["device"])

    @property
    def pid(self) -> int | None:
        return self._handle.process.pid

    def _request(self, message: tuple | None) -> tuple:
        handle = self._handle
        if handle.closed:
            raise EnvProcessError(f"the {handle.name} process is closed")
        try:
            if message is not None:
                handle.conn.send(message)
            while not handle.conn.poll(_REPLY_POLL_S):
                if not handle.process.is_alive():
                    raise EOFError
            status, *payload = handle.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            handle.process.join(timeout=5.0)
            code = handle.process.exitcode
            self._finalizer()
            raise EnvProcessError(f"the {handle.name} process (pid {handle.process.pid}) exited unexpectedly "
                                  f"(exit code {code})") from None
        if status == "error":
            reason, err = payload
            if err is not None and message is not None:  # bad input: the env stays up, as an in-process env would
                raise err
            self._finalizer()
            if err is not None:
                raise err
            raise EnvProcessError(f"the {handle.name} process failed: {reason}; it was shut down")
        return tuple(payload)

    def _reply(self, message: tuple) -> Any:
        packed, new = self._request(message)
        self._handle.buffers.update(new)
        return _unpack(packed, self._handle.buffers)

    def reset(self, seed: int | None = None, env_ids: Any = None, options: dict | None = None):
        """``env.reset(seed, env_ids, options)`` in the child; obs and extras live in shared buffers."""
        if isinstance(env_ids, torch.Tensor):
            env_ids = env_ids.cpu()
        return self._reply(("reset", seed, env_ids, options))

    def step(self, action: torch.Tensor):
        """``env.step(action)`` in the child, action validated here first; outputs are reused in place."""
        action = validate_action(action, self.num_envs, self.action_dim, self.device)
        if self._handle.closed:
            raise EnvProcessError(f"the {self._handle.name} process is closed")
        self._handle.action.copy_(action)
        _sync(self.device)
        return self._reply(("step",))

    def close(self) -> None:
        """Closes the env in the child, then ends the child. Idempotent."""
        self._finalizer()
