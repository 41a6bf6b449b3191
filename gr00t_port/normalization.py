"""State/action normalization of GR00T N1.5 from a checkpoint's ``experiment_cfg/metadata.json``.

The metadata file maps each embodiment tag to the statistics and modality shapes of its training data
(Isaac-GR00T ``gr00t/data/schema.py::DatasetMetadata``)::

    {"<tag>": {"statistics": {"state": {"<key>": {"min": [..], "max": [..], "mean": [..], "std": [..],
                                                   "q01": [..], "q99": [..]}, ...},
                              "action": {...}},
               "modalities": {"video": {"<key>": {"resolution": [W, H], "channels": 3, "fps": 20.0}},
                              "state": {"<key>": {"absolute": true, "rotation_type": null, "shape": [d],
                                                  "continuous": true}},
                              "action": {...}},
               "embodiment_tag": "<tag>"}}

Normalization is per key, before the keys are concatenated and zero-padded to ``max_state_dim`` (64) or
``max_action_dim`` (32). The arithmetic below follows ``gr00t/data/transform/state_action.py::Normalizer``
operation by operation (statistics rounded to float32 first, as ``torch.tensor(list)`` does, then cast to the
input's dtype), so results are bit-identical to the reference for float32 inputs:

    min_max   forward 2 * ((x - min) / (max - min)) - 1, 0 where min == max      inverse (x + 1) / 2 * (max - min) + min
    q99       forward clip(2 * ((x - q01) / (q99 - q01)) - 1, -1, 1), x kept       inverse (x + 1) / 2 * (q99 - q01) + q01
              (then clipped too) where q01 == q99
    mean_std  forward (x - mean) / std, x kept where std == 0                     inverse x * std + mean
    binary    forward x > 0.5                                                      inverse x > 0.5
    none      key passes through unchanged

Rotation conversions (``target_rotations``, pytorch3d) are not supported: no RLinf or LIBERO config uses them.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

NormalizationMode = Literal["min_max", "q99", "mean_std", "binary", "none"]
NORMALIZATION_MODES: tuple[str, ...] = ("min_max", "q99", "mean_std", "binary", "none")
_REQUIRED_STATISTICS = {"min_max": ("min", "max"), "q99": ("q01", "q99"), "mean_std": ("mean", "std"),
                        "binary": (), "none": ()}
STATISTIC_NAMES = ("min", "max", "mean", "std", "q01", "q99")

METADATA_RELATIVE_PATH = pathlib.Path("experiment_cfg") / "metadata.json"


# ----------------------------------------------------------------------------------------------------------------
# metadata.json
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VideoModality:
    """One camera: ``resolution`` is (width, height), as written by Isaac-GR00T."""

    resolution: tuple[int, int]
    channels: int
    fps: float


@dataclasses.dataclass(frozen=True)
class VectorModality:
    """One state or action key: a vector of ``dim`` values."""

    dim: int
    absolute: bool
    rotation_type: str | None
    continuous: bool


@dataclasses.dataclass(frozen=True)
class EmbodimentMetadata:
    """The ``metadata.json`` entry of one embodiment tag. Statistics are float32 arrays of shape (dim,)."""

    tag: str
    video: Mapping[str, VideoModality]
    state: Mapping[str, VectorModality]
    action: Mapping[str, VectorModality]
    state_statistics: Mapping[str, Mapping[str, np.ndarray]]
    action_statistics: Mapping[str, Mapping[str, np.ndarray]]
    source: str = "metadata.json"

    @classmethod
    def from_json_entry(cls, entry: Mapping[str, Any], tag: str, source: str = "metadata.json") -> EmbodimentMetadata:
        where = f"{source}[{tag!r}]"
        modalities = _require(entry, "modalities", where)
        statistics = _require(entry, "statistics", where)
        video = {
            key: VideoModality(
                resolution=_resolution(_require(spec, "resolution", f"{where}.modalities.video.{key}"),
                                       f"{where}.modalities.video.{key}.resolution"),
                channels=int(spec.get("channels", 3)),
                fps=float(spec.get("fps", 0.0)),
            )
            for key, spec in _require(modalities, "video", f"{where}.modalities").items()
        }
        vectors = {}
        stats = {}
        for group in ("state", "action"):
            specs = {}
            for key, spec in _require(modalities, group, f"{where}.modalities").items():
                shape = _require(spec, "shape", f"{where}.modalities.{group}.{key}")
                if len(shape) != 1:
                    raise ValueError(f"{where}.modalities.{group}.{key}.shape must be 1-D, got {list(shape)}")
                specs[key] = VectorModality(
                    dim=int(shape[0]),
                    absolute=bool(spec.get("absolute", True)),
                    rotation_type=spec.get("rotation_type"),
                    continuous=bool(spec.get("continuous", True)),
                )
            vectors[group] = specs
            group_stats = _require(statistics, group, f"{where}.statistics")
            # Keep whichever of the six statistics are present; a normalization mode checks for the ones it needs.
            stats[group] = {
                key: {name: np.asarray(values[name], dtype=np.float32) for name in STATISTIC_NAMES if name in values}
                for key, values in group_stats.items()
            }
        return cls(tag=tag, video=video, state=vectors["state"], action=vectors["action"],
                   state_statistics=stats["state"], action_statistics=stats["action"], source=source)


def metadata_path(path: str | pathlib.Path) -> pathlib.Path:
    """``path`` itself if it is a file, else ``<checkpoint dir>/experiment_cfg/metadata.json``."""
    path = pathlib.Path(path)
    return path if path.is_file() else path / METADATA_RELATIVE_PATH


def load_embodiment_metadata(path: str | pathlib.Path, tag: str) -> EmbodimentMetadata:
    """Reads the entry of ``tag`` from a metadata.json file or a checkpoint directory that contains one."""
    file = metadata_path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"no GR00T metadata at {file}: a checkpoint directory must contain {METADATA_RELATIVE_PATH}"
        )
    with open(file) as f:
        entries = json.load(f)
    if tag not in entries:
        raise ValueError(f"{file} has no entry for embodiment tag {tag!r}; it has: {', '.join(sorted(entries))}")
    return EmbodimentMetadata.from_json_entry(entries[tag], tag, source=str(file))


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise ValueError(f"{where}: missing {key!r}")
    return mapping[key]


def _resolution(value: Any, where: str) -> tuple[int, int]:
    if len(value) != 2:
        raise ValueError(f"{where} must be [width, height], got {value!r}")
    return int(value[0]), int(value[1])


# ----------------------------------------------------------------------------------------------------------------
# Per-key normalizers
# ----------------------------------------------------------------------------------------------------------------


def normalize(x: np.ndarray, mode: str, stats: Mapping[str, np.ndarray]) -> np.ndarray:
    """Forward normalization of one key; ``x`` (..., dim) float, ``stats`` float32 arrays of shape (dim,)."""
    if mode == "none":
        return x
    if mode == "binary":
        return (x > 0.5).astype(x.dtype)
    if mode == "min_max":
        lo, hi = stats["min"].astype(x.dtype), stats["max"].astype(x.dtype)
        valid = lo != hi
        scaled = (x - lo) / np.where(valid, hi - lo, 1).astype(x.dtype)
        return np.where(valid, 2 * scaled - 1, 0).astype(x.dtype)
    if mode == "q99":
        lo, hi = stats["q01"].astype(x.dtype), stats["q99"].astype(x.dtype)
        valid = lo != hi
        scaled = (x - lo) / np.where(valid, hi - lo, 1).astype(x.dtype)
        return np.clip(np.where(valid, 2 * scaled - 1, x), -1, 1).astype(x.dtype)
    if mode == "mean_std":
        mean, std = stats["mean"].astype(x.dtype), stats["std"].astype(x.dtype)
        valid = std != 0
        return np.where(valid, (x - mean) / np.where(valid, std, 1).astype(x.dtype), x).astype(x.dtype)
    raise ValueError(f"unknown normalization mode {mode!r}; expected one of {NORMALIZATION_MODES}")


def unnormalize(x: np.ndarray, mode: str, stats: Mapping[str, np.ndarray]) -> np.ndarray:
    """Inverse of :func:`normalize` (exact except where the forward pass clipped or zeroed)."""
    if mode == "none":
        return x
    if mode == "binary":
        return (x > 0.5).astype(x.dtype)
    if mode == "min_max":
        lo, hi = stats["min"].astype(x.dtype), stats["max"].astype(x.dtype)
        return ((x + 1) / 2 * (hi - lo) + lo).astype(x.dtype)
    if mode == "q99":
        lo, hi = stats["q01"].astype(x.dtype), stats["q99"].astype(x.dtype)
        return ((x + 1) / 2 * (hi - lo) + lo).astype(x.dtype)
    if mode == "mean_std":
        return (x * stats["std"].astype(x.dtype) + stats["mean"].astype(x.dtype)).astype(x.dtype)
    raise ValueError(f"unknown normalization mode {mode!r}; expected one of {NORMALIZATION_MODES}")


# ----------------------------------------------------------------------------------------------------------------
# State / action codec: per-key normalization + concatenation + padding, and the way back for actions
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KeyCodec:
    """One state or action key: its slice of the concatenated vector, mode and statistics."""

    key: str
    start: int
    dim: int
    mode: str
    stats: Mapping[str, np.ndarray]


def _bind_keys(metadata: EmbodimentMetadata, group: Literal["state", "action"], keys: Sequence[str],
               modes: Sequence[str]) -> tuple[KeyCodec, ...]:
    if len(keys) != len(modes):
        raise ValueError(f"{group}: {len(keys)} keys but {len(modes)} normalization modes")
    specs = metadata.state if group == "state" else metadata.action
    all_stats = metadata.state_statistics if group == "state" else metadata.action_statistics
    where = f"{metadata.source}[{metadata.tag!r}]"
    codecs, start = [], 0
    for key, mode in zip(keys, modes):
        if mode not in NORMALIZATION_MODES:
            raise ValueError(f"{group} key {key!r}: unknown normalization mode {mode!r}; "
                             f"expected one of {NORMALIZATION_MODES}")
        if key not in specs:
            raise ValueError(f"{where}.modalities.{group}: missing {key!r} (has: {', '.join(specs) or 'nothing'})")
        spec = specs[key]
        if not spec.continuous and mode not in ("binary", "none"):
            raise ValueError(f"{group} key {key!r} is not continuous, so it must use 'binary' normalization")
        stats = {}
        needed = _REQUIRED_STATISTICS[mode]
        if needed:
            key_stats = all_stats.get(key)
            if key_stats is None:
                raise ValueError(f"{where}.statistics.{group}: missing {key!r} (needed by {mode} normalization)")
            for name in needed:
                if name not in key_stats:
                    raise ValueError(f"{where}.statistics.{group}.{key}: missing {name!r} "
                                     f"(needed by {mode} normalization)")
                if key_stats[name].shape != (spec.dim,):
                    raise ValueError(f"{where}.statistics.{group}.{key}.{name} has shape {key_stats[name].shape}, "
                                     f"expected ({spec.dim},) from modalities.{group}.{key}.shape")
                stats[name] = key_stats[name]
        codecs.append(KeyCodec(key=key, start=start, dim=spec.dim, mode=mode, stats=stats))
        start += spec.dim
    return tuple(codecs)


class StateActionCodec:
    """Turns raw states/actions into the padded, normalized model tensors, and model actions back.

    Args:
      metadata: the embodiment's metadata.json entry.
      state_keys, state_modes: state keys in concatenation order and their normalization modes.
      action_keys, action_modes: the same for actions (the concatenated size is RLinf's ``valid_action_dim``).
      max_state_dim, max_action_dim: model widths the vectors are zero-padded to (64, 32).
      action_horizon: number of action steps the model predicts (16).
    """

    def __init__(self, metadata: EmbodimentMetadata, state_keys: Sequence[str], state_modes: Sequence[str],
                 action_keys: Sequence[str], action_modes: Sequence[str], *, max_state_dim: int = 64,
                 max_action_dim: int = 32, action_horizon: int = 16):
        self.metadata = metadata
        self.state_codecs = _bind_keys(metadata, "state", state_keys, state_modes)
        self.action_codecs = _bind_keys(metadata, "action", action_keys, action_modes)
        self.state_dim = sum(c.dim for c in self.state_codecs)
        self.action_dim = sum(c.dim for c in self.action_codecs)
        self.max_state_dim = max_state_dim
        self.max_action_dim = max_action_dim
        self.action_horizon = action_horizon
        if self.state_dim > max_state_dim:
            raise ValueError(f"state keys add up to {self.state_dim} dims, more than max_state_dim={max_state_dim}")
        if self.action_dim > max_action_dim:
            raise ValueError(f"action keys add up to {self.action_dim} dims, more than max_action_dim={max_action_dim}")

    # -- state ---------------------------------------------------------------------------------------------------

    def encode_state(self, state: np.ndarray | Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw state -> (state (B, 1, max_state_dim) float32, state_mask (B, 1, max_state_dim) bool).

        ``state`` is the concatenation of the state keys, (B, D) or (B, 1, D), or a mapping key -> (B, d) /
        (B, 1, d). Normalization runs in the input's float dtype (float32 inputs match the reference bit for bit).
        """
        parts = self._split(state, self.state_codecs, "state", horizon=1)
        normalized = [normalize(part, codec.mode, codec.stats) for part, codec in zip(parts, self.state_codecs)]
        batch = normalized[0].shape[0]
        out = np.zeros((batch, 1, self.max_state_dim), np.float32)
        out[:, :, : self.state_dim] = np.concatenate(normalized, axis=-1)
        mask = np.zeros((batch, 1, self.max_state_dim), bool)
        mask[:, :, : self.state_dim] = True
        return out, mask

    # -- action --------------------------------------------------------------------------------------------------

    def encode_action(self, action: np.ndarray | Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw action chunk (B, H, D) or key -> (B, H, d) -> (action (B, H, max_action_dim) float32, mask bool)."""
        parts = self._split(action, self.action_codecs, "action", horizon=self.action_horizon)
        normalized = [normalize(part, codec.mode, codec.stats) for part, codec in zip(parts, self.action_codecs)]
        batch, horizon = normalized[0].shape[:2]
        out = np.zeros((batch, horizon, self.max_action_dim), np.float32)
        out[:, :, : self.action_dim] = np.concatenate(normalized, axis=-1)
        mask = np.zeros((batch, horizon, self.max_action_dim), bool)
        mask[:, :, : self.action_dim] = True
        return out, mask

    def decode_action(self, action_pred: np.ndarray) -> dict[str, np.ndarray]:
        """Model output (B, H, max_action_dim) -> {key: unnormalized (B, H, d)} float32; padded dims dropped."""
        action_pred = np.asarray(action_pred, dtype=np.float32)  # the reference unnormalizes action_pred.float()
        if action_pred.ndim != 3 or action_pred.shape[-1] < self.action_dim:
            raise ValueError(f"action_pred must be (B, horizon, >= {self.action_dim}), got {action_pred.shape}")
        return {
            codec.key: unnormalize(action_pred[..., codec.start : codec.start + codec.dim], codec.mode, codec.stats)
            for codec in self.action_codecs
        }

    def concat_action(self, actions: Mapping[str, np.ndarray]) -> np.ndarray:
        """{key: (B, H, d)} -> (B, H, action_dim) in the action-key order."""
        return np.concatenate([actions[codec.key] for codec in self.action_codecs], axis=-1)

    # -- helpers -------------------------------------------------------------------------------------------------

    def _split(self, value: np.ndarray | Mapping[str, np.ndarray], codecs: tuple[KeyCodec, ...], group: str,
               horizon: int) -> list[np.ndarray]:
        """Returns one float array (B, T, d) per key; T = 1 for states, the action horizon for actions."""
        total = sum(c.dim for c in codecs)
        if isinstance(value, Mapping):
            missing = [c.key for c in codecs if c.key not in value]
            if missing:
                raise ValueError(f"{group} mapping is missing keys {missing}; expected keys {[c.key for c in codecs]}")
            parts = [self._as_float(value[c.key], f"{group}[{c.key!r}]") for c in codecs]
            parts = [self._with_time(p, c.dim, group, f"{group}[{c.key!r}]", horizon) for p, c in zip(parts, codecs)]
            batch = {p.shape[0] for p in parts}
            if len(batch) != 1:
                raise ValueError(f"{group} keys disagree on the batch size: {sorted(batch)}")
            return parts
        array = self._as_float(value, group)
        array = self._with_time(array, total, group, group, horizon)
        return [array[..., c.start : c.start + c.dim] for c in codecs]

    @staticmethod
    def _as_float(value: Any, name: str) -> np.ndarray:
        array = np.asarray(value)
        if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16 is not an np.floating subtype
            array = array.astype(np.float32)
        if array.dtype == object or not (np.issubdtype(array.dtype, np.floating)
                                         or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{name} must be a numeric array, got dtype {array.dtype}")
        if not np.issubdtype(array.dtype, np.floating) or array.dtype == np.float16:
            array = array.astype(np.float32)
        return array

    @staticmethod
    def _with_time(array: np.ndarray, dim: int, group: str, name: str, horizon: int) -> np.ndarray:
        if group == "state":
            if array.ndim == 2:
                array = array[:, None, :]
            ok = array.ndim == 3 and array.shape[1] == 1 and array.shape[2] == dim
            expected = f"(B, {dim}) or (B, 1, {dim})"
        else:
            ok = array.ndim == 3 and array.shape[1] == horizon and array.shape[2] == dim
            expected = f"(B, {horizon}, {dim})"
        if not ok:
            raise ValueError(f"{name} must have shape {expected}, got {array.shape}")
        return array
