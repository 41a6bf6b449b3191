"""One named device mesh for the learner: axes ("data", "fsdp").

Today the learner is data-parallel (params replicated, samples split over "data"); "fsdp" has size 1 and is
where GR00T's parameter sharding goes next, without touching the callers: they only ask for
``replicated(mesh)`` / ``batch_sharded(mesh)`` and pass them to ``jax.jit``. The rollout policy runs on one
device of ``cluster.component_placement``'s rollout set (``rollout_device``).
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS, FSDP_AXIS = "data", "fsdp"


def make_mesh(device_ids: Sequence[int] | None = None, fsdp: int = 1) -> Mesh:
    """A (data, fsdp) mesh over the given local device ids (all devices if None)."""
    devices = jax.devices()
    if device_ids is None:
        chosen = devices
    else:
        by_id = {i: d for i, d in enumerate(devices)}
        unknown = [i for i in device_ids if i not in by_id]
        if unknown:
            raise ValueError(f"cluster.component_placement names device(s) {unknown} but JAX sees only "
                             f"{len(devices)} device(s) ({devices[0].platform})")
        chosen = [by_id[i] for i in device_ids]
    if len(chosen) % fsdp:
        raise ValueError(f"{len(chosen)} devices cannot form an fsdp axis of size {fsdp}")
    grid = np.asarray(chosen, dtype=object).reshape(len(chosen) // fsdp, fsdp)
    return Mesh(grid, (DATA_AXIS, FSDP_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (sample) axis split over "data"."""
    return NamedSharding(mesh, P(DATA_AXIS))


def data_size(mesh: Mesh) -> int:
    return mesh.shape[DATA_AXIS]


def rollout_device(cfg) -> jax.Device:
    """The device the rollout policy runs on: the first of ``cluster.component_placement``'s rollout devices.

    Not where a CPU simulator's tensors land in JAX: on an H100 host that put the small stack-cube GR00T on the
    CPU, 131 ms per call of batch 64 (BENCHMARKS.md, "Learning on the GPU"). An env on the same GPU (IsaacLab)
    still hands its tensors over without a copy; a CPU env's observations are copied to the device.
    """
    from jaxrl_isaac.config.placement import parse_component_placement
    placement = parse_component_placement(cfg.cluster.component_placement, num_devices=jax.device_count(),
                                          node_group_labels=[g.label for g in cfg.cluster.node_groups])
    return jax.devices()[placement.device_ids("rollout")[0]]
