"""Zero-copy hand-off between the simulator's torch tensors and the policy's JAX arrays (DLPack).

torch -> JAX (``torch_to_jax``, ``tree_torch_to_jax``, ``torch_to_jax_packed``):

* Zero-copy (the JAX array aliases the torch buffer) for a contiguous, suitably aligned tensor of a
  dtype JAX keeps: float32, uint8 images, bool, int32 (also float16, int8/16, uint16/32, complex64).
* Copied once, on the torch side, before export (the JAX array then aliases a private buffer):
  - int64/float64 (and uint64/complex128) while JAX runs with x64 disabled, cast to int32/float32.
    JAX would otherwise copy and downcast silently; ``strict_dtypes=True`` raises instead.
  - non-row-major views (column slices, ``expand``, transposes): made contiguous. JAX raises on
    non-compact strides and would give a transposed view a non-default layout.
  - a misaligned start (a 1-D slice such as ``x[1:]``): JAX's CPU import needs 64-byte aligned data
    (jax 0.10.2 otherwise copies on its own, silently) and XLA's GPU executables check the alignment
    of their argument buffers (``CheckAlignment``; 16 bytes assumed here), so such a view is cloned
    into a fresh buffer, which torch's allocators align (64 B on CPU, 512 B on CUDA).
  - ``own=True``: a clone, so that the JAX array survives in-place writes to the source.
* ``requires_grad`` tensors are detached (no copy).

Ownership. Without ``own`` the JAX array aliases the simulator's memory: DLPack keeps the torch
storage alive, but nothing stops the simulator from overwriting it. IsaacLab rewrites ``reward``,
``terminated`` and ``truncated`` in place on every ``step()``; convert those with ``own=True`` (or
pack them, which copies) whenever the JAX array must outlive the next step (e.g. in a rollout
buffer). A JAX array made without ``own`` is only valid until its source is next written.

Stream ordering (CUDA). DLPack orders JAX after torch's *current* stream only. ``sync="device"``
(the default) waits on the host for all work queued on the tensor's GPU, whatever stream (a torch
side stream, Warp's stream inside IsaacLab) produced it. ``sync="current_stream"`` skips that wait and
is correct only when the data was produced on torch's current stream, or when the call runs inside
``with torch.cuda.stream(producer):``.

Devices. A CUDA tensor is exported while its own device is torch's current device (torch refuses
otherwise) and lands on the JAX GPU whose local hardware id equals the tensor's CUDA index: both
frameworks must see the same ``CUDA_VISIBLE_DEVICES``.

Cost model. Each exported tensor costs host time (measured ~125 us per tensor on an H100 through
``jax.dlpack.from_dlpack``, ~30 us on a CPU), independent of its size; the data is not touched.
Export a few large tensors rather than many small ones: ``torch_to_jax_packed`` concatenates the
small per-env terms (proprioception, reward, dones) into one buffer per dtype, costing one small
device copy and one export per dtype, and ``PackLayout.unpack`` splits them inside the jitted step.

JAX -> torch (``jax_to_torch``): zero-copy for a single-device array; torch orders its current
stream after the JAX computation. The DLPack capsule pins the JAX buffer for the tensor's lifetime,
so the tensor stays valid after the ``jax.Array`` is dropped. Never write into the tensor (JAX arrays
are immutable; an in-place write changes the JAX array too) and do not donate the array to a jitted
function while the tensor is in use. A sharded array has no single buffer: pass ``device=`` to gather
it onto one device (a copy), or take a replicated array's shard on that device (no copy).
``jax_to_torch_on`` copies to the host instead where a GPU policy drives a CPU simulator.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import torch

# Re-exported for entry points; importing it from ``jaxrl_isaac.jax_setup`` avoids importing jax/torch.
from jaxrl_isaac.jax_setup import configure_jax_memory  # noqa: F401

Sync = Literal["device", "current_stream"]
SYNC_MODES: tuple[str, ...] = ("device", "current_stream")

# Data-pointer alignment below which a tensor is cloned before export (see the module docstring).
CPU_ALIGNMENT_BYTES = 64
CUDA_ALIGNMENT_BYTES = 16

# What JAX turns each 64-bit dtype into while x64 is disabled (jax's canonical dtypes).
_NARROWED_WITHOUT_X64: dict[torch.dtype, torch.dtype] = {
    torch.int64: torch.int32,
    torch.float64: torch.float32,
    torch.uint64: torch.uint32,
    torch.complex128: torch.complex64,
}

OwnSpec = bool | Callable[[str], bool]

# Values inside jit/vmap have no buffer to export.
_TRACER_TYPES: tuple[type, ...] = (jax.core.Tracer,) if hasattr(jax.core, "Tracer") else ()


class BridgeError(ValueError):
    """A tensor or array cannot cross the torch <-> JAX bridge; the message names it."""


# ---------------------------------------------------------------------------------------------
# torch -> JAX


def torch_to_jax(t: torch.Tensor, *, own: bool = False, sync: Sync = "device", strict_dtypes: bool = False,
                 name: str = "tensor") -> jax.Array:
    """One torch tensor as a JAX array on the same device, without copying where possible.

    Args:
      t: any shape; CPU or CUDA.
      own: clone on the torch side first, so later in-place writes to ``t`` do not reach the result.
        Without it the caller promises not to overwrite ``t`` while the JAX array is in use.
      sync: ``"device"`` waits for all queued work on ``t``'s GPU first; ``"current_stream"`` relies
        on DLPack's ordering after torch's current stream (see the module docstring). No-op on CPU.
      strict_dtypes: raise instead of narrowing int64/float64 while JAX's x64 mode is off.
      name: how errors refer to ``t``.
    Returns:
      ``jax.Array`` with ``t``'s shape (int64 -> int32, float64 -> float32 unless x64 is enabled).
    """
    _check_sync(sync)
    if isinstance(t, torch.Tensor) and t.is_cuda and sync == "device":
        torch.cuda.synchronize(t.device)
    return _export(_prepare(t, own=own, strict_dtypes=strict_dtypes, name=name), name)


def tree_torch_to_jax(tree: Any, *, own: OwnSpec = False, sync: Sync = "device",
                      strict_dtypes: bool = False) -> Any:
    """``torch_to_jax`` over a nested structure (e.g. IsaacLab's ``{group: {term: tensor}}``).

    Every leaf is read first (a lazy observation group renders its cameras then), then each CUDA
    device involved is synchronised once (``sync="device"``), then the leaves are exported.

    Args:
      tree: a tensor, or Mappings / lists / tuples of them. Mappings come back as dicts.
      own: True/False for every leaf, or a predicate on the leaf's path ("policy/eef_pos",
        "reward"), e.g. ``lambda path: path in ("reward", "terminated", "truncated")`` for
        IsaacLab's in-place buffers.
      sync, strict_dtypes: as in ``torch_to_jax``.
    Returns:
      The same structure with ``jax.Array`` leaves.
    """
    _check_sync(sync)
    if not (isinstance(own, bool) or callable(own)):
        raise BridgeError(f"own must be a bool or a callable(path) -> bool, got {type(own).__name__}")
    leaves: list[tuple[str, torch.Tensor]] = []
    skeleton = _flatten(tree, "", leaves)
    if sync == "device":
        _synchronize(t.device for _, t in leaves)
    arrays = [
        _export(_prepare(t, own=bool(own(path)) if callable(own) else own, strict_dtypes=strict_dtypes,
                         name=path), path)
        for path, t in leaves
    ]
    return _unflatten(skeleton, arrays)


@dataclasses.dataclass(frozen=True)
class PackedSlot:
    """Where one packed tensor lives: ``buffers[buffer][offset:offset + size].reshape(shape)``."""

    key: str
    buffer: str  # dtype name of the packed buffer, e.g. "float32", "bool"
    offset: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclasses.dataclass(frozen=True)
class PackLayout:
    """Static (hashable) description of a ``torch_to_jax_packed`` result; pass it to jit as static."""

    slots: tuple[PackedSlot, ...]

    def unpack(self, buffers: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """Splits the packed 1-D buffers back into named arrays. Pure: call it inside the jitted step,
        where XLA fuses the slices into their consumers; called eagerly, every slice is a copy."""
        return {s.key: jnp.reshape(buffers[s.buffer][s.offset:s.offset + s.size], s.shape) for s in self.slots}


def torch_to_jax_packed(tensors: Mapping[str, torch.Tensor], *, sync: Sync = "device",
                        strict_dtypes: bool = False) -> tuple[dict[str, jax.Array], PackLayout]:
    """Packs many small tensors into one 1-D buffer per dtype and exports those (owned, no aliasing).

    Meant for the per-env terms of a step (proprioception (N, k) f32, reward (N,) f32, terminated /
    truncated (N,) bool): two exports instead of ten. Images are better exported on their own
    (``torch_to_jax``): packing would copy them.

    Args:
      tensors: flat ``{name: tensor}``, all on one device.
      sync, strict_dtypes: as in ``torch_to_jax``.
    Returns:
      ``({dtype_name: (total,) jax.Array}, layout)``; ``layout.unpack(buffers)`` gives ``{name: array}``
      with the original shapes (dtypes narrowed as in ``torch_to_jax``).
    """
    _check_sync(sync)
    if not isinstance(tensors, Mapping):
        raise BridgeError(f"torch_to_jax_packed takes a flat {{name: tensor}} mapping, got {type(tensors).__name__}")
    device = None
    groups: dict[str, list[torch.Tensor]] = {}
    offsets: dict[str, int] = {}
    slots = []
    for key, t in tensors.items():
        key = str(key)
        if not isinstance(t, torch.Tensor):
            raise BridgeError(f"{key}: expected a torch.Tensor, got {type(t).__name__}")
        if device is None:
            device = t.device
        elif t.device != device:
            raise BridgeError(f"{key}: is on {t.device}, the other packed tensors are on {device}")
        t = _narrow_dtype(t.detach(), strict_dtypes=strict_dtypes, name=key)
        buffer = str(t.dtype).removeprefix("torch.")
        groups.setdefault(buffer, []).append(t.reshape(-1))
        slots.append(PackedSlot(key=key, buffer=buffer, offset=offsets.get(buffer, 0), shape=tuple(t.shape)))
        offsets[buffer] = offsets.get(buffer, 0) + t.numel()
    if device is not None and device.type == "cuda" and sync == "device":
        torch.cuda.synchronize(device)
    # torch.cat always writes a fresh buffer, so the packed arrays never alias simulator memory.
    buffers = {buffer: _export(_prepare(torch.cat(parts), own=False, strict_dtypes=True, name=f"packed {buffer}"),
                               f"packed {buffer}")
               for buffer, parts in groups.items()}
    return buffers, PackLayout(tuple(slots))


# ---------------------------------------------------------------------------------------------
# JAX -> torch


def jax_to_torch(a: jax.Array, *, sync: Sync = "device", device: jax.Device | None = None,
                 name: str = "array") -> torch.Tensor:
    """A JAX array as a torch tensor on the same device, without copying.

    Args:
      a: a single-device ``jax.Array`` (e.g. an action chunk (N, horizon, action_dim)).
      sync: ``"device"`` waits until ``a`` is computed (then any stream, even a simulator's own, may
        read it); ``"current_stream"`` only orders torch's current stream after JAX's computation.
      device: gather ``a`` onto this JAX device first. Required for an array sharded over several
        devices (a copy; a fully replicated array instead exports its shard on ``device``, no copy).
      name: how errors refer to ``a``.
    Returns:
      A tensor aliasing ``a``'s buffer (keeps that buffer alive). Do not write into it.
    """
    _check_sync(sync)
    if isinstance(a, _TRACER_TYPES):
        raise BridgeError(f"{name}: is a traced value; call jax_to_torch outside jit on a concrete array")
    if not isinstance(a, jax.Array):
        raise BridgeError(f"{name}: expected a jax.Array, got {type(a).__name__}")
    if a.is_deleted():
        raise BridgeError(f"{name}: the jax.Array was deleted (donated to a jitted function?)")
    placed_on = a.sharding.device_set
    if device is not None and placed_on != {device}:
        if a.is_fully_replicated and device in placed_on:
            a = next(shard.data for shard in a.addressable_shards if shard.device == device)
        else:
            a = jax.device_put(a, device)
    elif len(placed_on) > 1:
        raise BridgeError(f"{name}: is sharded over {len(placed_on)} devices and DLPack exports one buffer; "
                          f"pass device=... to gather it onto one device (a copy)")
    if sync == "device":
        a.block_until_ready()
    (jax_device,) = a.devices()
    try:
        if jax_device.platform == "gpu":
            # torch hands JAX the current stream of its current device: make that the array's GPU.
            with torch.cuda.device(jax_device.local_hardware_id):
                return torch.from_dlpack(a)
        return torch.from_dlpack(a)
    except Exception as err:  # noqa: BLE001 - re-raised as one line naming the array
        raise BridgeError(f"{name}: torch.from_dlpack of {a.dtype}{list(a.shape)} on {jax_device} failed: "
                          f"{_first_line(err)}") from err


def jax_to_torch_on(a: jax.Array, device: torch.device | str, *, name: str = "array") -> torch.Tensor:
    """``a`` as a torch tensor on ``device`` (where the simulator wants its actions).

    Zero-copy (``jax_to_torch``) when ``a`` already lives on that kind of device; one device -> host copy when a
    policy on an accelerator drives a CPU simulator (the embedded MuJoCo env): DLPack cannot hand a GPU buffer
    to a CPU tensor, and the copy avoids needing a CUDA build of torch for it.
    """
    device = torch.device(device)
    if device.type == "cpu" and any(d.platform != "cpu" for d in a.devices()):
        # np.asarray of a device array is a read-only host view, which torch warns about; the actions are small,
        # so a writable copy costs nothing and the simulator may write into them.
        return torch.from_numpy(np.array(a))
    return jax_to_torch(a, name=name).to(device)


# ---------------------------------------------------------------------------------------------
# helpers


def _check_sync(sync: str) -> None:
    if sync not in SYNC_MODES:
        raise BridgeError(f"sync must be one of {SYNC_MODES}, got {sync!r}")


def _synchronize(devices: Iterable[torch.device]) -> None:
    for device in {d for d in devices if d.type == "cuda"}:
        torch.cuda.synchronize(device)


def _narrow_dtype(t: torch.Tensor, *, strict_dtypes: bool, name: str) -> torch.Tensor:
    narrow = _NARROWED_WITHOUT_X64.get(t.dtype)
    if narrow is None or jax.config.jax_enable_x64:
        return t
    if strict_dtypes:
        raise BridgeError(f"{name}: dtype {t.dtype} would be narrowed to {narrow} (JAX x64 is disabled); "
                          f"cast it on the torch side")
    # One copy that both casts and makes the result row-major.
    return t.to(narrow, memory_format=torch.contiguous_format)


def _prepare(t: Any, *, own: bool, strict_dtypes: bool, name: str) -> torch.Tensor:
    """Returns a tensor that DLPack can hand to JAX as is: detached, JAX-canonical dtype, row-major,
    aligned, and (if ``own``) not aliasing ``t``."""
    if not isinstance(t, torch.Tensor):
        raise BridgeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise BridgeError(f"{name}: only dense tensors can be exported, got layout {t.layout}")
    if t.requires_grad:
        t = t.detach()
    source = t
    t = _narrow_dtype(t, strict_dtypes=strict_dtypes, name=name)
    if not t.is_contiguous():
        t = t.contiguous()
    if own and t is source:
        t = t.clone()
    alignment = CUDA_ALIGNMENT_BYTES if t.is_cuda else CPU_ALIGNMENT_BYTES
    if t.numel() and t.data_ptr() % alignment:
        t = t.clone()  # a fresh allocation from torch's allocator is aligned (>= 64 B on CPU, 512 B on CUDA)
    return t


def _export(t: torch.Tensor, name: str) -> jax.Array:
    if t.is_cuda:
        _require_jax_gpu(name, str(t.device))
    try:
        if t.is_cuda:
            # torch refuses to export a tensor that is not on its current device.
            with torch.cuda.device(t.device):
                return jax.dlpack.from_dlpack(t)
        return jax.dlpack.from_dlpack(t)
    except Exception as err:  # noqa: BLE001 - re-raised as one line naming the tensor
        raise BridgeError(f"{name}: jax.dlpack.from_dlpack of {t.dtype}{list(t.shape)} on {t.device} failed: "
                          f"{_first_line(err)}") from err


@functools.cache
def _jax_has_gpu() -> bool:
    try:
        return bool(jax.devices("cuda"))
    except RuntimeError:
        return False


def _require_jax_gpu(name: str, torch_device: str) -> None:
    if not _jax_has_gpu():
        raise BridgeError(f"{name}: is on {torch_device} but JAX has no CUDA backend "
                          f"(jax devices: {jax.devices()}); install jax[cuda] or keep the simulator on the CPU")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


@dataclasses.dataclass(frozen=True)
class _Leaf:
    index: int


def _flatten(tree: Any, path: str, leaves: list[tuple[str, torch.Tensor]]) -> Any:
    """Replaces every tensor in ``tree`` by a ``_Leaf`` index into ``leaves`` (reading each leaf once)."""
    if isinstance(tree, torch.Tensor):
        leaves.append((path or "<root>", tree))
        return _Leaf(len(leaves) - 1)
    if isinstance(tree, Mapping):
        return {key: _flatten(value, f"{path}/{key}" if path else str(key), leaves) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        items = [_flatten(value, f"{path}/{i}" if path else str(i), leaves) for i, value in enumerate(tree)]
        if hasattr(tree, "_fields"):  # namedtuple
            return type(tree)(*items)
        return type(tree)(items)
    raise BridgeError(f"{path or '<root>'}: expected a torch.Tensor (or a dict/list/tuple of them), "
                      f"got {type(tree).__name__}")


def _unflatten(skeleton: Any, arrays: list[jax.Array]) -> Any:
    if isinstance(skeleton, _Leaf):
        return arrays[skeleton.index]
    if isinstance(skeleton, dict):
        return {key: _unflatten(value, arrays) for key, value in skeleton.items()}
    items = [_unflatten(value, arrays) for value in skeleton]
    return type(skeleton)(*items) if hasattr(skeleton, "_fields") else type(skeleton)(items)
