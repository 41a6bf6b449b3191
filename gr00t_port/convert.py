"""Strict two-way GR00T N1.5 checkpoint converter: PyTorch safetensors <-> the Flax params training/eval load.

    python -m gr00t_port.convert SRC DST              # torch checkpoint -> DST/global_step_0/{params,assets[,dropped]}
    python -m gr00t_port.convert --reverse SRC DST    # converted (or trained) Flax checkpoint -> safetensors dir
    python -m gr00t_port.convert --bench-full-size WORKDIR   # peak-RSS benchmark on a full-size random checkpoint

Sources: an HF/Isaac-GR00T checkpoint directory (``model.safetensors.index.json`` + ``model-*.safetensors``, or a
single ``model.safetensors``; ``config.json``; optional ``experiment_cfg/metadata.json``), or a LeRobot policy
checkpoint (one ``model.safetensors`` whose keys start with ``_groot_model.``, ``config.json`` with ``type: groot``).
GR00T checkpoints do not carry the Eagle (SigLIP + Qwen3) sizes; the released Eagle config is assumed unless
``--eagle-config`` is given or the source directory has an ``eagle_config.json``.

Output: an Orbax checkpoint in the layout of ``jaxrl_isaac/checkpoints.py``: ``DST/global_step_0/`` with items
  params  : {"backbone": EagleBackbone params, "action_head": FlowmatchingActionHead params}, stored dtypes kept
            (released checkpoints: bf16 backbone, fp32 head);
  assets  : JSON {"hf_config", "eagle_config", "metadata", "gr00t_config", "provenance"};
  dropped : (only if the source has them) tensors the Flax model does not use but a strict torch load needs back
            (SigLIP's pooling head; ``lm_head`` unless it equals ``embed_tokens``), so the reverse is bit-exact.

Strictness: before any tensor data is read, every source tensor must be claimed by exactly one key rule (or be a
known dropped tensor), every Flax leaf must be filled, and every shape must match; otherwise ONE ``ConversionError``
lists all offending keys. Tensors are then streamed one at a time (safetensors ``safe_open``), so peak memory is
about the size of the converted params plus one tensor.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import ml_dtypes
import numpy as np

from gr00t_port.backbone_config import EagleBackboneConfig
from gr00t_port.config import ActionHeadConfig, GR00TConfig

STEP_PREFIX = "global_step"  # as jaxrl_isaac/checkpoints.py
CONVERTED_STEP = 0
LEROBOT_PREFIX = "_groot_model."
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
EAGLE_CONFIG_FILE = "eagle_config.json"  # optional: the Eagle 2.5 VL config, for non-released backbone sizes
METADATA_FILE = "experiment_cfg/metadata.json"
MAX_SHARD_BYTES = 5 * 10**9  # transformers' save_pretrained default max_shard_size="5GB"
VALUE_HEAD_PREFIX = "action_head.value_head.mlp."
_MAX_LISTED = 20

SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_FLOAT_DTYPES = ("F32", "BF16", "F16", "F64")


class ConversionError(ValueError):
    """The input does not fit the converter or the model; the message is one line naming the culprits."""


# ================================================================================================ safetensors I/O

@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Where one source tensor lives, read from the safetensors header only."""

    file: str  # file name inside the checkpoint directory
    stored_key: str  # key in the file (LeRobot: with the "_groot_model." prefix)
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype name, e.g. "BF16"


def _safetensors_dtype(dtype: np.dtype) -> str:
    for name, dt in SAFETENSORS_DTYPES.items():
        if dt == np.dtype(dtype):
            return name
    raise ConversionError(f"dtype {dtype} cannot be written to safetensors")


def write_safetensors(path: Path, tensors: Sequence[tuple[str, tuple[int, ...], np.dtype]],
                      produce: Callable[[str], np.ndarray], metadata: Mapping[str, str] | None = None) -> int:
    """Write a safetensors file tensor by tensor: ``tensors`` gives (key, shape, dtype) in file order and
    ``produce(key)`` returns each array only when its bytes are written, so at most one is alive at a time.
    Returns the number of data bytes."""
    header: dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for key, shape, dtype in tensors:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[key] = {"dtype": _safetensors_dtype(dtype), "shape": list(shape),
                       "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format pads the header to 8 bytes with spaces
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for key, shape, dtype in tensors:
            arr = np.ascontiguousarray(produce(key))
            if arr.shape != tuple(shape) or arr.dtype != np.dtype(dtype):
                raise ConversionError(f"{key}: produced {arr.shape} {arr.dtype}, header says {tuple(shape)} {dtype}")
            f.write(arr.reshape(-1).view(np.uint8).data)
    os.replace(tmp, path)
    return offset


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConversionError(f"{what} {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{what} {path} is not valid JSON: {e}") from None


@dataclasses.dataclass
class SourceCheckpoint:
    """A torch checkpoint seen through its headers. ``tensors`` maps canonical keys (GR00T ``state_dict`` names,
    without the LeRobot prefix) to where they are, in file order."""

    root: Path
    format: str  # "hf" or "lerobot"
    config: dict
    metadata: dict | None
    tensors: dict[str, TensorSpec]

    def read(self, key: str) -> np.ndarray:
        """One tensor as a numpy array (bf16 as ml_dtypes.bfloat16), copied out of the file."""
        from safetensors import safe_open

        spec = self.tensors[key]
        # A fresh mapping per tensor: a long-lived one keeps every page read so far resident (and counted in RSS),
        # i.e. the whole shard; re-reading the header costs well under a millisecond.
        try:
            with safe_open(str(self.root / spec.file), framework="np") as f:
                return f.get_tensor(spec.stored_key)
        except Exception as e:  # a file truncated or changed after its header was read
            raise ConversionError(f"cannot read {spec.stored_key} from {self.root / spec.file}: "
                                  f"{type(e).__name__}: {e}") from None


def _read_header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            out = {}
            for key in f.keys():
                sl = f.get_slice(key)
                out[key] = (tuple(int(d) for d in sl.get_shape()), str(sl.get_dtype()))
            return out
    except FileNotFoundError:
        raise ConversionError(f"safetensors file {path} does not exist") from None
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ConversionError(f"{path} is not a readable safetensors file: {type(e).__name__}: {e}") from None


def open_source(path: str | os.PathLike) -> SourceCheckpoint:
    """Index a torch checkpoint (directory or ``.safetensors`` file) without reading tensor data."""
    p = Path(path)
    if not p.exists():
        raise ConversionError(f"source checkpoint {p} does not exist")
    if p.is_file():
        if p.suffix != ".safetensors":
            raise ConversionError(f"source {p} is a file but not a .safetensors file")
        root, files, weight_map = p.parent, [p.name], None
    elif (p / INDEX_FILE).exists():
        root = p
        index = _read_json(p / INDEX_FILE, "index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ConversionError(f"{p / INDEX_FILE} has no 'weight_map'")
        files = list(dict.fromkeys(weight_map.values()))
        absent = [f for f in files if not (p / f).exists()]
        if absent:
            raise ConversionError(f"{p / INDEX_FILE} names shard files that do not exist: {absent}")
    elif (p / SINGLE_FILE).exists():
        root, files, weight_map = p, [SINGLE_FILE], None
    else:
        raise ConversionError(f"{p} has neither {INDEX_FILE} nor {SINGLE_FILE}")
    if not (root / CONFIG_FILE).exists():
        raise ConversionError(f"{root} has no {CONFIG_FILE}")
    config = _read_json(root / CONFIG_FILE, "config")
    if not isinstance(config, dict):
        raise ConversionError(f"{root / CONFIG_FILE} is not a JSON object")
    metadata = _read_json(root / METADATA_FILE, "metadata") if (root / METADATA_FILE).exists() else None

    stored: dict[str, TensorSpec] = {}
    for name in files:
        for key, (shape, dtype) in _read_header(root / name).items():
            if key in stored:
                raise ConversionError(f"tensor {key} is stored twice ({stored[key].file} and {name})")
            stored[key] = TensorSpec(name, key, shape, dtype)
    if weight_map is not None:
        wrong = sorted(k for k, f in weight_map.items() if k not in stored or stored[k].file != f)
        unindexed = sorted(set(stored) - set(weight_map))
        if wrong or unindexed:
            raise ConversionError(f"{p / INDEX_FILE} disagrees with its shards: {_listing(wrong)} indexed but not in "
                                  f"the named shard; {_listing(unindexed)} in shards but not indexed")

    prefixed = [k for k in stored if k.startswith(LEROBOT_PREFIX)]
    if prefixed and len(prefixed) != len(stored):
        other = [k for k in stored if not k.startswith(LEROBOT_PREFIX)]
        raise ConversionError(f"{p}: {len(prefixed)} keys start with {LEROBOT_PREFIX!r} but {len(other)} do not, "
                              f"e.g. {other[:3]}")
    fmt = "lerobot" if prefixed else "hf"
    cut = len(LEROBOT_PREFIX) if prefixed else 0
    tensors = {k[cut:]: spec for k, spec in stored.items()}
    return SourceCheckpoint(root, fmt, config, metadata, tensors)


def _listing(keys: Sequence[str]) -> str:
    keys = list(keys)
    if len(keys) <= _MAX_LISTED:
        return f"{len(keys)} {keys}"
    return f"{len(keys)} {keys[:_MAX_LISTED]} ... and {len(keys) - _MAX_LISTED} more"


# ================================================================================================ model key map

def model_key_rules(cfg: GR00TConfig) -> list:
    """Every used tensor of ``GR00T_N1_5.state_dict()`` <-> its leaf in {"backbone": ..., "action_head": ...}."""
    from gr00t_port.action_head import action_head_key_rules
    from gr00t_port.eagle import backbone_key_rules

    return [*backbone_key_rules(cfg.backbone), *action_head_key_rules(cfg.action_head)]


def model_dropped_keys(cfg: GR00TConfig) -> dict[str, tuple[int, ...]]:
    from gr00t_port.eagle import dropped_keys

    return dropped_keys(cfg.backbone)


def model_param_shapes(cfg: GR00TConfig) -> dict:
    """{"backbone": ..., "action_head": ...} of ``jax.ShapeDtypeStruct`` (nothing allocated)."""
    from gr00t_port.action_head import FlowmatchingActionHead
    from gr00t_port.eagle import backbone_param_shapes

    return {"backbone": backbone_param_shapes(cfg.backbone),
            "action_head": FlowmatchingActionHead(cfg.action_head).param_shapes()}


def flat_shapes(tree: Mapping) -> dict[tuple[str, ...], tuple[int, ...]]:
    out: dict[tuple[str, ...], tuple[int, ...]] = {}

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, path + (str(k),))
        else:
            out[path] = tuple(int(d) for d in node.shape)

    walk(tree, ())
    return out


def _torch_shape(flax_shape: tuple[int, ...], transform: str) -> tuple[int, ...]:
    if transform == "linear":
        return tuple(reversed(flax_shape))
    if transform == "conv2d":  # (kh, kw, I, O) -> (O, I, kh, kw)
        kh, kw, i, o = flax_shape
        return (o, i, kh, kw)
    return tuple(flax_shape)


def expected_torch_shapes(rules: Sequence, target: Mapping[tuple[str, ...], tuple[int, ...]]
                          ) -> dict[str, tuple[int, ...]]:
    """torch key -> the shape the model needs, derived from the Flax leaf shapes. Also checks that the rules cover
    every leaf (and every layer of stacked leaves) exactly once: a failure here is a bug in the rules."""
    out: dict[str, tuple[int, ...]] = {}
    covered: dict[tuple[str, ...], set] = {}
    problems = []
    for r in rules:
        if r.flax_path not in target:
            problems.append(f"{r.torch_key} -> {'/'.join(r.flax_path)} (no such leaf)")
            continue
        shape = target[r.flax_path]
        if r.stack_index is not None:
            if shape[0] != r.stack_size or not 0 <= r.stack_index < r.stack_size:
                problems.append(f"{r.torch_key} -> {'/'.join(r.flax_path)}[{r.stack_index}] of {shape[0]}")
                continue
            shape = shape[1:]
        out[r.torch_key] = _torch_shape(shape, r.transform)
        filled = covered.setdefault(r.flax_path, set())
        if r.stack_index in filled:
            problems.append(f"{r.torch_key} -> {'/'.join(r.flax_path)}[{r.stack_index}] filled twice")
        filled.add(r.stack_index)
    for path, shape in target.items():
        got = covered.get(path, set())
        if not got or got != ({None} if None in got else set(range(shape[0]))):
            problems.append(f"leaf {'/'.join(path)} filled for indices {sorted(got, key=str)}")
    if problems:
        raise ConversionError(f"key rules and the Flax model disagree (a bug in the port): {_listing(problems)}")
    return out


def infer_value_head_dims(specs: Mapping[str, TensorSpec], head: ActionHeadConfig) -> tuple[int, ...]:
    """Hidden widths of RLinf's value head from ``action_head.value_head.mlp.{0,2,...}.weight``; () if absent."""
    weights = {}
    for key, spec in specs.items():
        if key.startswith(VALUE_HEAD_PREFIX) and key.endswith(".weight"):
            idx = key[len(VALUE_HEAD_PREFIX):-len(".weight")]
            if not idx.isdigit():
                raise ConversionError(f"unexpected value-head tensor {key}")
            weights[int(idx)] = spec.shape
    if not weights:
        return ()
    order = sorted(weights)
    if order != list(range(0, 2 * len(order), 2)) or any(len(weights[i]) != 2 for i in order):
        raise ConversionError(f"value head weights {[f'mlp.{i}' for i in order]} are not RLinf's Linear/ReLU stack "
                              f"(mlp.0, mlp.2, ...)")
    if weights[order[-1]][0] != 1 or weights[order[0]][1] != head.value_head_input_dim:
        raise ConversionError(f"value head maps {weights[order[0]][1]} -> {weights[order[-1]][0]}; expected "
                              f"{head.value_head_input_dim} (mean VL token + state token) -> 1")
    return tuple(weights[i][0] for i in order[:-1])


def config_from_json(cfg_json: Mapping, eagle_config: Mapping | None, where: str) -> GR00TConfig:
    """A GR00T N1.5 ``config.json`` -> GR00TConfig; a LeRobot ``groot`` config means the released N1.5 model."""
    try:
        if cfg_json.get("model_type") == "gr00t_n1_5":
            return GR00TConfig.from_checkpoint_config(cfg_json, eagle_config)
        if cfg_json.get("type") == "groot":
            for key, want in (("max_state_dim", 64), ("max_action_dim", 32)):
                if cfg_json.get(key, want) != want:
                    raise ValueError(f"LeRobot {key}={cfg_json[key]} differs from the N1.5 model's {want}; pass the "
                                     f"model's config.json with --model-config")
            return GR00TConfig(backbone=EagleBackboneConfig.from_hf(eagle_config, None), action_head=ActionHeadConfig())
    except ValueError as e:
        raise ConversionError(f"{where}: {e}") from None
    raise ConversionError(f"{where} is neither a GR00T N1.5 config (model_type 'gr00t_n1_5') nor a LeRobot groot "
                          f"config (type 'groot'); pass --model-config")


def resolve_config(source: SourceCheckpoint, model_config: Mapping | None = None,
                   eagle_config: Mapping | None = None) -> tuple[GR00TConfig, Mapping | None]:
    """The model a checkpoint holds: from ``model_config`` if given, else its ``config.json`` (a LeRobot ``groot``
    config implies the released N1.5 architecture, which LeRobot always fine-tunes from); value head from keys.
    Returns (config, the Eagle config dict used or None for the released one)."""
    if eagle_config is None and (source.root / EAGLE_CONFIG_FILE).exists():
        eagle_config = _read_json(source.root / EAGLE_CONFIG_FILE, "eagle config")
    where = "--model-config" if model_config is not None else str(source.root / CONFIG_FILE)
    cfg = config_from_json(model_config if model_config is not None else source.config, eagle_config, where)
    dims = infer_value_head_dims(source.tensors, cfg.action_head)
    if dims:
        cfg = cfg.replace(action_head=cfg.action_head.replace(value_head_hidden_dims=dims))
    return cfg, eagle_config


@dataclasses.dataclass(frozen=True)
class ConversionPlan:
    config: GR00TConfig
    rules: list
    target: dict[tuple[str, ...], tuple[int, ...]]
    dropped_present: list[str]


def plan_conversion(source: SourceCheckpoint, cfg: GR00TConfig) -> ConversionPlan:
    """All strictness checks, from headers only. Raises one ConversionError listing every offending key."""
    rules = model_key_rules(cfg)
    target = flat_shapes(model_param_shapes(cfg))
    expected = expected_torch_shapes(rules, target)
    dropped = model_dropped_keys(cfg)
    specs = source.tensors
    unused = [k for k in specs if k not in expected and k not in dropped]
    missing = [k for k in expected if k not in specs]
    mismatched = [f"{k}: checkpoint {specs[k].shape}, model {want}" for k, want in {**expected, **dropped}.items()
                  if k in specs and specs[k].shape != tuple(want)]
    bad_dtype = [f"{k}: {s.dtype}" for k, s in specs.items() if s.dtype not in _FLOAT_DTYPES]
    stack_dtypes: dict[tuple[str, ...], set] = {}
    for r in rules:
        if r.stack_index is not None and r.torch_key in specs:
            stack_dtypes.setdefault(r.flax_path, set()).add(specs[r.torch_key].dtype)
    mixed = [f"{'/'.join(path)}: {sorted(d)}" for path, d in stack_dtypes.items() if len(d) > 1]
    parts = []
    if unused:
        parts.append(f"unused (no rule): {_listing(unused)}")
    if missing:
        parts.append(f"missing: {_listing(missing)}")
    if mismatched:
        parts.append(f"shape mismatch: {_listing(mismatched)}")
    if bad_dtype:
        parts.append(f"non-float dtype: {_listing(bad_dtype)}")
    if mixed:
        parts.append(f"layers of one stacked leaf with different dtypes: {_listing(mixed)}")
    if parts:
        raise ConversionError(f"{source.root} does not match the configured GR00T N1.5 model; " + "; ".join(parts))
    return ConversionPlan(cfg, rules, target, [k for k in specs if k in dropped])


# ================================================================================================ torch -> Flax

def assemble_params(rules: Sequence, target: Mapping[tuple[str, ...], tuple[int, ...]],
                    read: Callable[[str], np.ndarray], log: Callable[[str], None] = print) -> dict:
    """Read each torch tensor once (``read(torch_key)``), transform it and write it into its (preallocated, possibly
    stacked) Flax leaf; ``target`` gives the leaf shapes. Returns the nested params (numpy, source dtypes kept).
    Assumes ``rules`` were checked against ``target`` (``expected_torch_shapes``) and the source shapes."""
    from gr00t_port.keymap import torch_to_flax_array

    leaves: dict[tuple[str, ...], np.ndarray] = {}
    total = len(rules)
    t0, last = time.time(), time.time()
    for n, rule in enumerate(rules, 1):
        value = torch_to_flax_array(read(rule.torch_key), rule.transform)
        if rule.stack_index is None:
            leaves[rule.flax_path] = value
        else:
            leaf = leaves.get(rule.flax_path)
            if leaf is None:
                leaf = leaves[rule.flax_path] = np.empty(target[rule.flax_path], value.dtype)
            leaf[rule.stack_index] = value  # plan_conversion checked that all layers share one dtype
        del value
        if time.time() - last > 10:
            log(f"  {n}/{total} tensors ({time.time() - t0:.0f} s)")
            last = time.time()
    params: dict = {}
    for path, value in leaves.items():
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return params


def _embed_path(rules: Sequence) -> tuple[str, ...]:
    key = "backbone.eagle_model.language_model.model.embed_tokens.weight"
    return next(r.flax_path for r in rules if r.torch_key == key)


def _get_leaf(tree: Mapping, path: Sequence[str]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _checkpoint_options():
    import orbax.checkpoint as ocp

    return ocp.CheckpointManagerOptions(step_prefix=STEP_PREFIX, create=True, enable_async_checkpointing=False)


def _checkpoint_manager(root: Path, items: tuple[str, ...]):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(root.absolute(), options=_checkpoint_options(), item_names=items)


def _saving_manager(root: Path, array_items: tuple[str, ...]):
    """A manager that writes numpy items without a second in-memory copy of the tree. Orbax's defaults would
    deep-copy every host array (safe here to skip: nothing touches them during the synchronous save) and buffer a
    zstd-compressed copy of everything (random-like weights barely compress); with both, converting the full model
    peaks at 16.5 GiB instead of ~7."""
    import orbax.checkpoint as ocp

    no_copy = ocp.type_handlers.create_type_handler_registry(
        (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)))
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for item in array_items:
        registry.add(item, ocp.args.PyTreeSave,
                     ocp.PyTreeCheckpointHandler(type_handler_registry=no_copy, use_compression=False))
    registry.add("assets", ocp.args.JsonSave)
    return ocp.CheckpointManager(root.absolute(), options=_checkpoint_options(), handler_registry=registry)


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, model_config: Mapping | None = None,
            eagle_config: Mapping | None = None, overwrite: bool = False,
            log: Callable[[str], None] = print) -> Path:
    """torch checkpoint ``src`` -> Orbax ``dst/global_step_0/{params, assets[, dropped]}``. Returns the step dir."""
    import orbax.checkpoint as ocp

    dst = Path(dst)
    step_dir = dst / f"{STEP_PREFIX}_{CONVERTED_STEP}"
    if step_dir.exists() and not overwrite:
        raise ConversionError(f"{step_dir} already exists (pass --overwrite to replace it)")
    source = open_source(src)
    cfg, eagle_config = resolve_config(source, model_config, eagle_config)
    plan = plan_conversion(source, cfg)
    log(f"converting {source.root} ({source.format}, {len(source.tensors)} tensors, "
        f"{len(plan.dropped_present)} dropped) -> {step_dir}")
    params = assemble_params(plan.rules, plan.target, source.read, log)
    embed = _get_leaf(params, _embed_path(plan.rules))
    dropped: dict[str, np.ndarray] = {}
    lm_head = "absent"
    for key in plan.dropped_present:
        value = source.read(key)
        if key.endswith("lm_head.weight") and value.dtype == embed.dtype and np.array_equal(
                value.view(np.uint8), embed.view(np.uint8)):
            lm_head = "tied"  # bit-identical to embed_tokens: re-created on export, not stored twice
            continue
        if key.endswith("lm_head.weight"):
            lm_head = "stored"
        dropped[key] = value

    counts: dict[str, int] = {}
    for spec in source.tensors.values():
        counts[spec.dtype] = counts.get(spec.dtype, 0) + 1
    assets = {
        "hf_config": source.config,
        "eagle_config": eagle_config,
        "metadata": source.metadata,
        "gr00t_config": cfg.to_dict(),
        "provenance": {
            "converter": "gr00t_port.convert",
            "layout_version": 1,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": str(source.root.absolute()),
            "source_format": source.format,
            "source_layout": [[k, s.file] for k, s in source.tensors.items()],
            "source_dtype_counts": counts,
            "num_params": int(sum(np.prod(s) for s in plan.target.values())),
            "lm_head": lm_head,
            "dropped_keys": list(dropped),
        },
    }
    if step_dir.exists():
        shutil.rmtree(step_dir)
    args = dict(params=ocp.args.PyTreeSave(params), assets=ocp.args.JsonSave(assets))
    if dropped:
        # Orbax joins tree keys with "."; torch keys contain dots, so store by position (order in assets).
        args["dropped"] = ocp.args.PyTreeSave({str(i): v for i, v in enumerate(dropped.values())})
    mngr = _saving_manager(dst, ("params", "dropped") if dropped else ("params",))
    mngr.save(CONVERTED_STEP, args=ocp.args.Composite(**args), force=True)
    mngr.wait_until_finished()
    mngr.close()
    log(f"wrote {step_dir} ({assets['provenance']['num_params']:,} params)")
    return step_dir


# ================================================================================================ Flax -> torch

def _resolve_step(path: Path) -> tuple[Path, int]:
    if not path.exists():
        raise ConversionError(f"Flax checkpoint {path} does not exist")
    if path.name.startswith(f"{STEP_PREFIX}_"):
        try:
            return path.parent, int(path.name[len(STEP_PREFIX) + 1:])
        except ValueError:
            raise ConversionError(f"{path} is not a '{STEP_PREFIX}_<N>' directory") from None
    steps = sorted(int(p.name[len(STEP_PREFIX) + 1:]) for p in path.glob(f"{STEP_PREFIX}_*")
                   if p.name[len(STEP_PREFIX) + 1:].isdigit())
    if not steps:
        raise ConversionError(f"{path} holds no '{STEP_PREFIX}_<N>' checkpoint")
    return path, steps[-1]


def load_converted(path: str | os.PathLike) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """Read a converted (or trained) checkpoint as numpy: (params, assets, dropped torch tensors by key).

    ``path``: ``.../global_step_N`` or its parent (latest step). ``assets``/``dropped`` are {} when absent."""
    import orbax.checkpoint as ocp

    root, step = _resolve_step(Path(path))
    step_dir = root / f"{STEP_PREFIX}_{step}"
    if not (step_dir / "params").exists():
        raise ConversionError(f"{step_dir} has no 'params' item")
    present = tuple(i for i in ("params", "assets", "dropped") if (step_dir / i).exists())
    mngr = _checkpoint_manager(root, present)
    args = {"params": ocp.args.PyTreeRestore()}
    if "assets" in present:
        args["assets"] = ocp.args.JsonRestore()
    if "dropped" in present:
        args["dropped"] = ocp.args.PyTreeRestore()
    restored = mngr.restore(step, args=ocp.args.Composite(**args))
    mngr.close()
    to_np = lambda tree: {k: to_np(v) for k, v in tree.items()} if isinstance(tree, Mapping) else np.asarray(tree)
    params = to_np(restored["params"])
    assets = dict(restored["assets"]) if "assets" in present else {}
    dropped = {}
    if "dropped" in present:
        keys = assets.get("provenance", {}).get("dropped_keys", [])
        stored = restored["dropped"]
        if len(keys) != len(stored):
            raise ConversionError(f"{step_dir}: {len(stored)} dropped tensors but assets name {len(keys)}")
        dropped = {k: np.asarray(stored[str(i)]) for i, k in enumerate(keys)}
    return params, assets, dropped


def _shard_layout(keys_shapes: Sequence[tuple[str, tuple[int, ...], np.dtype]], max_bytes: int) -> list[list[int]]:
    shards, current, size = [], [], 0
    for i, (_, shape, dtype) in enumerate(keys_shapes):
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(i)
        size += nbytes
    shards.append(current)
    return shards


def export(src: str | os.PathLike, dst: str | os.PathLike, *, fmt: str | None = None,
           model_config: Mapping | None = None, eagle_config: Mapping | None = None, overwrite: bool = False,
           max_shard_bytes: int = MAX_SHARD_BYTES, log: Callable[[str], None] = print) -> Path:
    """Flax checkpoint -> torch safetensors directory that ``GR00T_N1_5`` / LeRobot load with ``strict=True``.

    fmt: "hf" (``model-*.safetensors`` + index, ``config.json``, ``experiment_cfg/metadata.json``) or "lerobot"
      (one ``model.safetensors`` with ``_groot_model.`` keys); default: the converted source's format, else "hf".
    Keys, order and shard files follow the converted source when known, so torch -> Flax -> torch is bit-exact.
    """
    from gr00t_port.eagle import recreate_dropped
    from gr00t_port.keymap import flax_to_torch_array

    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise ConversionError(f"{dst} exists and is not empty (pass --overwrite)")
    params, assets, originals = load_converted(src)
    prov = assets.get("provenance", {})
    if model_config is not None:
        cfg_json = dict(model_config)
        cfg = config_from_json(cfg_json, eagle_config, "--model-config")
    elif "gr00t_config" in assets:
        cfg = GR00TConfig.from_dict(assets["gr00t_config"])
        cfg_json = assets.get("hf_config")
        if cfg_json is None:  # one of our own checkpoints (SFT, RL): describe it from its GR00TConfig
            cfg_json = checkpoint_config_json(cfg)
            if eagle_config is None and assets.get("eagle_config") is None and \
                    cfg.backbone.replace(dtype="float32", param_dtype="float32", remat_policy="nothing_saveable") \
                    != EagleBackboneConfig.full():
                eagle_config = eagle_config_json(cfg.backbone)
    else:
        raise ConversionError(f"{src} has no 'gr00t_config' in its assets; pass --model-config")
    if "value_head" in params.get("action_head", {}):
        dims = tuple(int(params["action_head"]["value_head"][f"dense_{i}"]["kernel"].shape[1])
                     for i in range(len(params["action_head"]["value_head"]) - 1))
        cfg = cfg.replace(action_head=cfg.action_head.replace(value_head_hidden_dims=dims))
    fmt = fmt or prov.get("source_format", "hf")
    if fmt not in ("hf", "lerobot"):
        raise ConversionError(f"unknown export format {fmt!r} (hf or lerobot)")

    rules = model_key_rules(cfg)
    target = flat_shapes(model_param_shapes(cfg))
    got = {path: tuple(np.shape(v)) for path, v in _flat_items(params)}
    extra = sorted("/".join(p) for p in set(got) - set(target))
    absent = sorted("/".join(p) for p in set(target) - set(got))
    wrong = sorted(f"{'/'.join(p)}: {got[p]} vs {s}" for p, s in target.items() if p in got and got[p] != s)
    if extra or absent or wrong:
        raise ConversionError(f"{src} params do not match the configured model: extra {_listing(extra)}; "
                              f"missing {_listing(absent)}; shape mismatch {_listing(wrong)}")
    expected_torch_shapes(rules, target)  # rule sanity

    by_key = {r.torch_key: r for r in rules}
    # Dropped tensors: the stored originals, lm_head re-created from embed_tokens when it was tied; without
    # originals (e.g. a trained checkpoint) recreate_dropped fills the never-run pooling head with zeros.
    embed = _get_leaf(params, _embed_path(rules))
    dropped = recreate_dropped(cfg.backbone, embed, originals)
    layout = prov.get("source_layout") or []
    if layout:
        # Exactly the source's keys: dropped tensors it did not have (an absent lm_head) stay out.
        source_keys = {k for k, _ in layout}
        dropped = {k: v for k, v in dropped.items() if k in source_keys}

    def produce(key: str) -> np.ndarray:
        if key in dropped:
            return np.asarray(dropped[key])
        rule = by_key[key]
        value = _get_leaf(params, rule.flax_path)
        if rule.stack_index is not None:
            value = value[rule.stack_index]
        return flax_to_torch_array(np.asarray(value), rule.transform)

    def spec(key: str) -> tuple[str, tuple[int, ...], np.dtype]:
        if key in dropped:
            return key, tuple(dropped[key].shape), dropped[key].dtype
        rule = by_key[key]
        leaf = _get_leaf(params, rule.flax_path)
        shape = tuple(leaf.shape[1:]) if rule.stack_index is not None else tuple(leaf.shape)
        return key, _torch_shape(shape, rule.transform), leaf.dtype

    all_keys = list(by_key) + [k for k in dropped if k not in by_key]
    if layout and {k for k, _ in layout} == set(all_keys) and prov.get("source_format") == fmt:
        files: dict[str, list[str]] = {}
        for key, name in layout:
            files.setdefault(name, []).append(key)
    else:
        specs = [spec(k) for k in all_keys]
        groups = [[all_keys[i] for i in g] for g in _shard_layout(specs, max_shard_bytes)]
        if fmt == "lerobot" or len(groups) == 1:
            files = {SINGLE_FILE: all_keys}
        else:
            files = {f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors": g for i, g in enumerate(groups)}

    dst.mkdir(parents=True, exist_ok=True)
    for stale in [*dst.glob("model*.safetensors"), dst / INDEX_FILE]:  # only with --overwrite (checked above)
        stale.unlink(missing_ok=True)
    prefix = LEROBOT_PREFIX if fmt == "lerobot" else ""
    weight_map, total = {}, 0
    for name, keys in files.items():
        log(f"  writing {dst / name} ({len(keys)} tensors)")
        specs = [(prefix + k, s, d) for k, s, d in (spec(k) for k in keys)]
        total += write_safetensors(dst / name, specs, lambda pk: produce(pk[len(prefix):]))
        weight_map.update({prefix + k: name for k in keys})
    if len(files) > 1:
        (dst / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                 indent=2) + "\n")
    if cfg_json is not None:
        (dst / CONFIG_FILE).write_text(json.dumps(cfg_json, indent=2) + "\n")
    eagle_out = eagle_config if eagle_config is not None else assets.get("eagle_config")
    if eagle_out is not None:
        (dst / EAGLE_CONFIG_FILE).write_text(json.dumps(eagle_out, indent=2) + "\n")
    if assets.get("metadata") is not None:
        (dst / METADATA_FILE).parent.mkdir(parents=True, exist_ok=True)
        (dst / METADATA_FILE).write_text(json.dumps(assets["metadata"], indent=2) + "\n")
    log(f"wrote {dst} ({fmt}, {len(weight_map)} tensors, {total / 1e9:.2f} GB)")
    return dst


def torch_state_from_params(rules: Sequence, params: Mapping) -> dict[str, np.ndarray]:
    """Inverse of ``assemble_params`` in memory: torch key -> torch-layout array (dtype kept)."""
    from gr00t_port.keymap import flax_to_torch_array

    out = {}
    for rule in rules:
        value = np.asarray(_get_leaf(params, rule.flax_path))
        if rule.stack_index is not None:
            value = value[rule.stack_index]
        out[rule.torch_key] = flax_to_torch_array(value, rule.transform)
    return out


def _flat_items(tree: Mapping, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from _flat_items(v, path + (str(k),))
        else:
            yield path + (str(k),), v


# ================================================================================================ full-size bench

def write_random_checkpoint(dst: Path, cfg: GR00TConfig, *, config_json: Mapping | None = None,
                            backbone_dtype: Any = ml_dtypes.bfloat16, head_dtype: Any = np.float32,
                            max_shard_bytes: int = MAX_SHARD_BYTES, seed: int = 0, with_dropped: bool = True,
                            log: Callable[[str], None] = print) -> None:
    """A random-weight checkpoint in the released layout (keys, shapes, bf16 backbone + fp32 head, sharded, with
    the SigLIP pooling head and a stored ``lm_head`` equal to ``embed_tokens``), written tensor by tensor without
    building the torch model. ``config_json``: the config.json to write (default: the released N1.5 one)."""
    rules = model_key_rules(cfg)
    target = flat_shapes(model_param_shapes(cfg))
    shapes = expected_torch_shapes(rules, target)
    if with_dropped:
        shapes.update(model_dropped_keys(cfg))
    keys = list(shapes)
    dtype_of = lambda k: np.dtype(backbone_dtype if k.startswith("backbone.") else head_dtype)
    specs = [(k, shapes[k], dtype_of(k)) for k in keys]
    groups = _shard_layout(specs, max_shard_bytes)
    embed_key = "backbone.eagle_model.language_model.model.embed_tokens.weight"

    def produce(key: str) -> np.ndarray:
        # One generator per tensor; lm_head reuses embed_tokens' stream because the released model ties them.
        stream = embed_key if key.endswith("lm_head.weight") else key
        rng = np.random.default_rng([seed, keys.index(stream)])
        return (0.02 * rng.standard_normal(shapes[key], dtype=np.float32)).astype(dtype_of(key))

    dst.mkdir(parents=True, exist_ok=True)
    weight_map, total = {}, 0
    for i, group in enumerate(groups):
        name = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        log(f"  generating {name} ({len(group)} tensors)")
        total += write_safetensors(dst / name, [specs[j] for j in group], produce)
        weight_map.update({specs[j][0]: name for j in group})
    (dst / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (dst / CONFIG_FILE).write_text(json.dumps(config_json or n15_checkpoint_config(), indent=2))


def checkpoint_config_json(cfg: GR00TConfig) -> dict:
    """A GR00T N1.5 ``config.json`` describing ``cfg`` (for checkpoints of ours that were never a torch
    checkpoint, e.g. SFT output): ``GR00TConfig.from_checkpoint_config`` reads it back to the same model."""
    from gr00t_port.reference_torch import action_head_config  # a plain dict builder; torch is not imported
    head = action_head_config(cfg.action_head)
    return {"model_type": "gr00t_n1_5", "architectures": ["GR00T_N1_5"], "action_dim": head["action_dim"],
            "action_horizon": head["action_horizon"], "hidden_size": cfg.backbone.output_dim,
            "model_dtype": "float32",
            "backbone_cfg": {"load_bf16": False, "project_to_dim": None, "reproject_vision": False,
                             "select_layer": cfg.backbone.select_layer, "tune_llm": False, "tune_visual": True,
                             "use_flash_attention": True},
            "action_head_cfg": head}


def eagle_config_json(b: EagleBackboneConfig) -> dict:
    """The Eagle 2.5 VL ``config.json`` for backbone sizes ``b`` (written as ``eagle_config.json``), in the form
    ``EagleBackboneConfig.from_hf`` parses."""
    v, t = b.vision, b.text
    return {
        "image_token_index": b.image_token_index, "use_pixel_shuffle": False, "mlp_connector_layers": 1,
        "select_layer": -1, "force_image_size": v.image_size, "template": "qwen3-chat",
        "vision_config": {"model_type": "siglip_vision_model", "hidden_act": "gelu_pytorch_tanh",
                          "hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
                          "num_hidden_layers": v.num_hidden_layers, "num_attention_heads": v.num_attention_heads,
                          "num_channels": v.num_channels, "image_size": v.image_size, "patch_size": v.patch_size,
                          "layer_norm_eps": v.layer_norm_eps, "vision_use_head": v.has_pooling_head},
        "text_config": {"architectures": ["Qwen3ForCausalLM"], "hidden_act": "silu", "attention_bias": False,
                        "rope_scaling": None, "use_sliding_window": False, "vocab_size": t.vocab_size,
                        "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
                        "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
                        "num_key_value_heads": t.num_key_value_heads, "head_dim": t.head_dim,
                        "rms_norm_eps": t.rms_norm_eps, "rope_theta": t.rope_theta,
                        "tie_word_embeddings": t.tie_word_embeddings},
    }


def n15_checkpoint_config() -> dict:
    """The released ``nvidia/GR00T-N1.5-3B`` ``config.json`` (spec section 1.4)."""
    block = {"dropout": 0.2, "final_dropout": True, "num_attention_heads": 32, "num_layers": 4,
             "positional_embeddings": None}
    return {
        "action_dim": 32, "action_horizon": 16, "architectures": ["GR00T_N1_5"], "attn_implementation": None,
        "hidden_size": 2048, "model_dtype": "float32", "model_type": "gr00t_n1_5", "torch_dtype": "bfloat16",
        "transformers_version": "4.51.3",
        "backbone_cfg": {"eagle_path": "NVEagle/eagle_er-qwen3_1_7B-Siglip2_400M_stage1_5_128gpu_er_v7_1mlp_nops",
                         "load_bf16": False, "project_to_dim": None, "reproject_vision": False, "select_layer": 12,
                         "tune_llm": False, "tune_visual": True, "use_flash_attention": True},
        "action_head_cfg": {
            "action_dim": 32, "action_horizon": 16, "add_pos_embed": True, "backbone_embedding_dim": 2048,
            "hidden_size": 1024, "input_embedding_dim": 1536, "max_action_dim": 32, "max_state_dim": 64,
            "model_dtype": "float32", "noise_beta_alpha": 1.5, "noise_beta_beta": 1.0, "noise_s": 0.999,
            "num_inference_timesteps": 4, "num_target_vision_tokens": 32, "num_timestep_buckets": 1000,
            "tune_diffusion_model": True, "tune_projector": True, "use_vlln": True,
            "diffusion_model_cfg": {"attention_head_dim": 48, "cross_attention_dim": 2048, "dropout": 0.2,
                                    "final_dropout": True, "interleave_self_attention": True,
                                    "norm_type": "ada_norm", "num_attention_heads": 32, "num_layers": 16,
                                    "output_dim": 1024, "positional_embeddings": None},
            "vl_self_attention_cfg": {**block, "attention_head_dim": 64},
        },
    }


_MEASURED_CHILD = ("import resource, sys\n"
                   "from gr00t_port.convert import main\n"
                   "rc = main(sys.argv[1:])\n"
                   "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)\n"
                   "sys.exit(rc)\n")


def _run_measured(argv: list[str]) -> tuple[float, float]:
    """Run the converter CLI with ``argv`` in a child process; returns (wall seconds, its peak RSS in GiB)."""
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", _MEASURED_CHILD, *argv], stdout=subprocess.PIPE, text=True)
    wall = time.time() - t0
    peak_kib = None
    for line in proc.stdout.splitlines():
        if line.startswith("PEAK_RSS_KIB"):
            peak_kib = int(line.split()[1])
        else:
            print(line)
    if proc.returncode != 0 or peak_kib is None:
        raise ConversionError(f"converter child {argv} failed with exit code {proc.returncode}")
    return wall, peak_kib / 2**20  # ru_maxrss is in KiB on Linux


def bench_full_size(workdir: str | os.PathLike, keep: bool = False) -> dict:
    """Generate the full-size random checkpoint, convert it and export it back, each in a child process, and report
    the converter's peak RSS (``getrusage`` of the children). Deletes ``workdir`` afterwards unless ``keep``."""
    work = Path(workdir)
    if work.exists() and any(work.iterdir()):
        raise ConversionError(f"bench workdir {work} exists and is not empty")
    src, flax_dir, back = work / "hf", work / "flax", work / "hf_back"
    report: dict[str, Any] = {}
    try:
        t0 = time.time()
        write_random_checkpoint(src, GR00TConfig.n15())
        report["generate_s"] = round(time.time() - t0, 1)
        report["source_gb"] = round(sum(f.stat().st_size for f in src.iterdir()) / 1e9, 2)
        wall, peak = _run_measured([str(src), str(flax_dir)])
        report.update(convert_s=round(wall, 1), convert_peak_rss_gib=round(peak, 2))
        wall, peak = _run_measured(["--reverse", str(flax_dir), str(back)])
        report.update(reverse_s=round(wall, 1), reverse_peak_rss_gib=round(peak, 2))
        same = _same_tensors(src, back)
        report["round_trip_bit_exact"] = same
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return report


def _same_tensors(a: Path, b: Path) -> bool:
    """Whether two torch checkpoints hold the same keys with bit-identical tensors (streamed, one at a time)."""
    sa, sb = open_source(a), open_source(b)
    if list(sa.tensors) != list(sb.tensors):
        return False
    for key in sa.tensors:
        x, y = sa.read(key), sb.read(key)
        if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x.view(np.uint8), y.view(np.uint8)):
            return False
    return True


# ================================================================================================ CLI

def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gr00t_port.convert", description=__doc__.split("\n\n")[0])
    ap.add_argument("src", nargs="?", help="torch checkpoint (dir or .safetensors); with --reverse a Flax checkpoint")
    ap.add_argument("dst", nargs="?", help="output directory")
    ap.add_argument("--reverse", action="store_true", help="Flax checkpoint -> torch safetensors")
    ap.add_argument("--format", choices=("hf", "lerobot"), help="--reverse output format (default: the source's)")
    ap.add_argument("--model-config", help="GR00T N1.5 config.json to use instead of the checkpoint's")
    ap.add_argument("--eagle-config", help="Eagle 2.5 VL config.json (default: the released N1.5 Eagle config)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output")
    ap.add_argument("--bench-full-size", metavar="WORKDIR",
                    help="benchmark peak RSS on a generated full-size random checkpoint (~23 GB of disk in WORKDIR)")
    ap.add_argument("--keep", action="store_true", help="with --bench-full-size: keep WORKDIR")
    args = ap.parse_args(argv)
    try:
        if args.bench_full_size:
            bench_full_size(args.bench_full_size, keep=args.keep)
            return 0
        if not args.src or not args.dst:
            ap.error("SRC and DST are required")
        model_config = _read_json(Path(args.model_config), "model config") if args.model_config else None
        eagle_config = _read_json(Path(args.eagle_config), "eagle config") if args.eagle_config else None
        if args.reverse:
            export(args.src, args.dst, fmt=args.format, model_config=model_config, eagle_config=eagle_config,
                   overwrite=args.overwrite)
        else:
            convert(args.src, args.dst, model_config=model_config, eagle_config=eagle_config,
                    overwrite=args.overwrite)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
