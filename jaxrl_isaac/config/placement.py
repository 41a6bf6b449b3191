"""RLinf placement strings -> device ids and world sizes per component.

Syntax (RLinf ``cluster.component_placement``; a key may join several components with commas):

    env: 0-3                      # one process per device, devices 0..3
    rollout: 0,2,5                # devices 0, 2 and 5
    actor: 0-1,4                  # devices 0, 1 and 4
    env,rollout,actor: all        # every visible device, shared by the three components
    env: 2                        # an int is one device
    rollout: {node_group: rollout, placement: 0-3}
    actor: 0-1:0-3                # RLinf's resources:processes form: processes 0..3 spread over devices 0..1

A comma-separated string is a list of segments ``resources[:processes]``. Without ``:processes`` a segment gets one
process per device, numbered after the previous segment's. Process ranks must cover 0..N-1 exactly once; N is the
component's world size (RLinf's number of worker processes, which its batch-divisibility rules use).

Modes: ``collocated`` when all components use the same devices, ``disaggregated`` when no two share a device,
``hybrid`` otherwise (e.g. the seed guide's ``env: 0-3, rollout: 4-7, actor: 0-7``).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any, Iterable, Literal, Mapping

from jaxrl_isaac.config.schema import COMPONENTS, ConfigError

PLACEMENT_KEY = "cluster.component_placement"
# RLinf reserves these node-group labels: "cluster" (every node) and "node" (node ranks as resources).
RESERVED_NODE_GROUPS = ("cluster", "node")

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


class PlacementError(ConfigError):
    """A malformed or inconsistent placement; the message starts with the dotted key at fault (also ``.key``)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclasses.dataclass(frozen=True)
class ComponentDevices:
    """Where one component runs."""

    name: str  # "env", "rollout" or "actor"
    device_ids: tuple[int, ...]  # devices in rank order, each once
    world_size: int  # RLinf process count; len(device_ids) unless the resources:processes form says otherwise
    node_group: str = "cluster"
    spec: str = ""  # the placement as written, for messages


@dataclasses.dataclass(frozen=True)
class ComponentPlacement:
    """Parsed ``cluster.component_placement``."""

    env: ComponentDevices
    rollout: ComponentDevices
    actor: ComponentDevices
    mode: Literal["collocated", "disaggregated", "hybrid"]

    @property
    def components(self) -> dict[str, ComponentDevices]:
        return {name: getattr(self, name) for name in COMPONENTS}

    def device_ids(self, component: str) -> tuple[int, ...]:
        return self._get(component).device_ids

    def world_size(self, component: str) -> int:
        return self._get(component).world_size

    @property
    def all_device_ids(self) -> tuple[int, ...]:
        """Every device some component uses, sorted."""
        return tuple(sorted({d for c in self.components.values() for d in c.device_ids}))

    def _get(self, component: str) -> ComponentDevices:
        if component not in COMPONENTS:
            raise PlacementError("component", f"unknown component {component!r}{_did_you_mean(component, COMPONENTS)} "
                                              f"(known: {', '.join(COMPONENTS)})")
        return getattr(self, component)


def parse_ranks(spec: str | int, *, num_devices: int | None = None, key: str = PLACEMENT_KEY,
                allow_all: bool = True) -> tuple[int, ...]:
    """Parse a rank list: "0-3", "0,2,5", "0-1,4", "all" or an int.

    Args:
      spec: the rank list as written in YAML.
      num_devices: visible devices; "all" means range(num_devices), and 1 device when None.
      key: dotted key named in errors.
    Returns:
      Ranks in the written order, each once.
    """
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise PlacementError(key, f"{key}={spec!r} must be a rank list such as '0-3', '0,2,5', 'all' or an int")
    if isinstance(spec, int):
        if spec < 0:
            raise PlacementError(key, f"{key}={spec} must be a non-negative device rank")
        return (spec,)
    text = spec.strip()
    if text == "all":
        if not allow_all:
            raise PlacementError(key, f"{key}={spec!r}: 'all' is not allowed here")
        return tuple(range(1 if num_devices is None else num_devices))
    ranks: list[int] = []
    for part in text.split(","):
        match = _RANGE.match(part.strip())
        if match is None:
            raise PlacementError(key, f"{key}={spec!r}: malformed range {part.strip()!r} "
                                      f"(expected 'a', 'a-b' with integers a <= b, or 'all')")
        start = int(match.group(1))
        end = start if match.group(2) is None else int(match.group(2))
        if end < start:
            raise PlacementError(key, f"{key}={spec!r}: range {part.strip()!r} ends before it starts")
        ranks.extend(range(start, end + 1))
    duplicates = sorted({r for r in ranks if ranks.count(r) > 1})
    if duplicates:
        raise PlacementError(key, f"{key}={spec!r} lists rank(s) {duplicates} more than once")
    return tuple(ranks)


def _parse_segments(spec: str | int, *, num_devices: int | None, key: str) -> tuple[tuple[int, ...], int]:
    """Split "resources[:processes],..." into (device ids, world size), checking RLinf's process-rank rules."""
    if isinstance(spec, int) or ":" not in str(spec):
        devices = parse_ranks(spec, num_devices=num_devices, key=key)
        return devices, len(devices)
    devices: list[int] = []
    processes: list[int] = []
    for segment in str(spec).split(","):
        resource_part, _, process_part = segment.partition(":")
        seg_devices = parse_ranks(resource_part, num_devices=num_devices, key=key)
        if process_part:
            seg_processes = parse_ranks(process_part, key=key, allow_all=False)
        else:  # implicit: one process per device, numbered after the previous segment's
            first = max(processes) + 1 if processes else 0
            seg_processes = tuple(range(first, first + len(seg_devices)))
        big, small = max(len(seg_devices), len(seg_processes)), min(len(seg_devices), len(seg_processes))
        if big % small:
            raise PlacementError(key, f"{key}={spec!r}: segment {segment.strip()!r} maps {len(seg_processes)} "
                                      f"processes to {len(seg_devices)} devices; one count must be a multiple of "
                                      f"the other")
        devices.extend(d for d in seg_devices if d not in devices)
        processes.extend(seg_processes)
    if sorted(processes) != list(range(len(processes))):
        raise PlacementError(key, f"{key}={spec!r}: process ranks {sorted(processes)} must be "
                                  f"0..{len(processes) - 1}, each exactly once")
    return tuple(devices), len(processes)


def _entry_fields(value: Any, key: str) -> tuple[str | int, str]:
    """(placement, node_group) of a short-form or dict-form entry."""
    if isinstance(value, Mapping):
        unknown = set(value) - {"placement", "node_group"}
        if unknown:
            raise PlacementError(key, f"{key} has unknown field(s) {sorted(unknown)} (allowed: node_group, placement)")
        if "placement" not in value:
            raise PlacementError(key, f"{key} needs a 'placement' field next to node_group")
        return value["placement"], value.get("node_group", "cluster")
    if hasattr(value, "placement") and hasattr(value, "node_group"):  # schema.NodeGroupPlacement
        return value.placement, value.node_group
    return value, "cluster"


def parse_component_placement(component_placement: Mapping[str, Any], *, num_devices: int | None = None,
                              node_group_labels: Iterable[str] = ()) -> ComponentPlacement:
    """Parse ``cluster.component_placement`` into device ids, world sizes and a mode.

    Args:
      component_placement: component key ("env" or "env,rollout,actor") -> int, string or
        ``{node_group, placement}``.
      num_devices: visible devices; resolves "all" and bounds the ids (None: "all" = 1 device, no bound).
      node_group_labels: labels declared in ``cluster.node_groups``.
    Raises:
      PlacementError naming the offending key.
    """
    if not isinstance(component_placement, Mapping) or not component_placement:
        raise PlacementError(PLACEMENT_KEY, f"{PLACEMENT_KEY} must map components ({', '.join(COMPONENTS)}) "
                                            f"to placements")
    labels = tuple(node_group_labels) + RESERVED_NODE_GROUPS
    parsed: dict[str, ComponentDevices] = {}
    for raw_key, value in component_placement.items():
        key = f"{PLACEMENT_KEY}.{raw_key}"
        names = [n.strip() for n in str(raw_key).split(",")]
        for name in names:
            if name not in COMPONENTS:
                raise PlacementError(key, f"{key}: unknown component {name!r}{_did_you_mean(name, COMPONENTS)} "
                                          f"(known: {', '.join(COMPONENTS)})")
            if name in parsed:
                raise PlacementError(key, f"{key}: component {name!r} is placed twice")
        if value is None:
            raise PlacementError(key, f"{key} has no placement (null); in a YAML flow mapping quote comma-joined "
                                      f"keys: {{\"env,rollout,actor\": all}}")
        spec, node_group = _entry_fields(value, key)
        if node_group not in labels:
            raise PlacementError(key, f"{key}: node_group {node_group!r} is not declared in cluster.node_groups"
                                      f"{_did_you_mean(node_group, labels)} (known: {', '.join(labels)})")
        devices, world_size = _parse_segments(spec, num_devices=num_devices, key=key)
        if num_devices is not None and devices and max(devices) >= num_devices:
            raise PlacementError(key, f"{key}={spec!r} uses device {max(devices)} but only {num_devices} device(s) "
                                      f"are visible (ids 0..{num_devices - 1})")
        for name in names:
            parsed[name] = ComponentDevices(name=name, device_ids=devices, world_size=world_size,
                                            node_group=node_group, spec=str(spec))
    missing = [name for name in COMPONENTS if name not in parsed]
    if missing:
        raise PlacementError(PLACEMENT_KEY, f"{PLACEMENT_KEY} has no placement for {', '.join(map(repr, missing))} "
                                            f"(every one of {', '.join(COMPONENTS)} needs one)")
    return ComponentPlacement(**parsed, mode=_mode([set(parsed[n].device_ids) for n in COMPONENTS]))


def _mode(device_sets: list[set[int]]) -> Literal["collocated", "disaggregated", "hybrid"]:
    if all(s == device_sets[0] for s in device_sets):
        return "collocated"
    if all(not (a & b) for i, a in enumerate(device_sets) for b in device_sets[i + 1:]):
        return "disaggregated"
    return "hybrid"


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
