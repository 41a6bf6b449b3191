"""YAML -> typed ``TrainConfig``: composition, overrides, interpolation, type checks and RLinf's validation rules.

A config is a YAML file under ``configs/`` (or ``$JAXRL_ISAAC_CONFIG_DIR``) with RLinf's key tree. Composition:

* ``defaults: [name, ...]`` at the top merges other files first, in order; the file's own keys win over them.
  ``name`` is looked up next to the including file, then in the config directory.
* ``defaults: [group/name@dotted.key]`` mounts ``group/name.yaml`` under ``dotted.key``, as RLinf's Hydra defaults
  do (``env/isaaclab_stack_cube@env.train``). The same file can be mounted twice (train and eval).
* ``cluster.component_placement`` is replaced, not merged, when a file sets it: a placement is one decision.
* Files named ``*_base.yaml`` are shared bases: they are composed into other configs and not run on their own.

Then come ``key=value`` overrides (the value is parsed as YAML; a mapping value replaces the whole section), and
only after them OmegaConf resolves ``${a.b}`` / ``${..sibling}`` interpolations, so an overridden
``runner.logger.log_path`` moves every path built from it. Every error is one line naming the file (or
"command line") that set the offending key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import jaxrl_isaac
from jaxrl_isaac.config.placement import ComponentPlacement, PlacementError, parse_component_placement
from jaxrl_isaac.config.schema import CAMERA_KEYS, ConfigError, EnvSplitConfig, TrainConfig

CONFIG_DIR_ENV = "JAXRL_ISAAC_CONFIG_DIR"
GR00T_ACTION_HORIZON = 16
GR00T_MAX_ACTION_DIM = 32
COMMAND_LINE = "command line"
BASE_SUFFIX = "_base"

# RLinf keys that moved or do not apply; an unknown-key error shows the reason instead of a guess.
_KEY_HINTS = {
    "hydra": "Hydra's own settings are not used; compose files with 'defaults:' and remove this section",
    "algorithm.rollout_epoch": "RLinf moved it to env.train.rollout_epoch",
    "algorithm.eval_rollout_epoch": "RLinf moved it to env.eval.rollout_epoch",
    "algorithm.sampling_params": "token sampling does not apply to continuous action policies; remove it",
    "algorithm.length_params": "token lengths do not apply to continuous action policies; remove it",
    "rollout.sampling_params": "token sampling does not apply to continuous action policies; remove it",
    "env.enable_offload": "RLinf reads env.train.enable_offload and env.eval.enable_offload",
}


# ----------------------------------------------------------------------------------------------------------------
# Finding config files
# ----------------------------------------------------------------------------------------------------------------


def config_dir() -> Path:
    """``$JAXRL_ISAAC_CONFIG_DIR`` if set, else ``configs/`` at the repository root."""
    override = os.environ.get(CONFIG_DIR_ENV)
    return Path(override) if override else Path(jaxrl_isaac.__file__).resolve().parents[1] / "configs"


def available_config_names(directory: Path | None = None) -> list[str]:
    """Runnable config names (top-level ``*.yaml`` without the ``_base`` suffix), sorted."""
    directory = config_dir() if directory is None else Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.yaml") if not p.stem.endswith(BASE_SUFFIX))


def _resolve_name(name: str) -> Path:
    directory = config_dir()
    stem = name[:-5] if name.endswith(".yaml") else name
    path = directory / f"{stem}.yaml"
    names = available_config_names(directory)
    if "/" not in stem and path.is_file():
        if stem.endswith(BASE_SUFFIX):
            raise ConfigError(f"config {stem!r} is a shared base for 'defaults:', not a runnable config "
                              f"(available: {', '.join(names)})")
        return path
    close = difflib.get_close_matches(stem, names, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown config name {name!r} in {_display(directory)}{hint} "
                      f"(available: {', '.join(names) or 'none'})")


def _display(path: Path | str) -> str:
    """A short, stable name for a file: relative to the repository root or the working directory if possible."""
    path = Path(path).resolve()
    for root in (config_dir().resolve().parent, Path.cwd().resolve()):
        try:
            return str(path.relative_to(root))
        except ValueError:
            continue
    return str(path)


# ----------------------------------------------------------------------------------------------------------------
# Provenance: which file (or the command line) set each dotted key
# ----------------------------------------------------------------------------------------------------------------


class _Sources:
    def __init__(self, default: str):
        self.default = default
        self.by_key: dict[str, str] = {}

    def record(self, tree: Any, label: str, prefix: str = "") -> None:
        """Mark every leaf of ``tree`` under ``prefix`` as set by ``label``; lists and empty mappings are leaves."""
        if isinstance(tree, Mapping) and tree:
            for key, value in tree.items():
                self.record(value, label, f"{prefix}.{key}" if prefix else str(key))
        elif prefix:
            self.by_key[prefix] = label

    def label(self, key: str) -> str:
        return source_of(self.by_key, key, self.default)


def source_of(by_key: Mapping[str, str], key: str, default: str) -> str:
    """Who set ``key``: itself, else the leaf above it (a list holding it), else any key below it (for a section
    the YAML spelled out, e.g. an unknown one), else ``default`` (a value that came from the schema defaults)."""
    probe = key
    while probe:
        if probe in by_key:
            return by_key[probe]
        probe = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", probe) if re.search(r"[.\[]", probe) else ""
    for child, label in by_key.items():
        if child.startswith((f"{key}.", f"{key}[")):
            return label
    return default


# ----------------------------------------------------------------------------------------------------------------
# Composition
# ----------------------------------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> DictConfig:
    try:
        tree = OmegaConf.load(path)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{_display(path)}: {_first_line(e)}") from None
    except Exception as e:  # yaml.YAMLError and OSError carry multi-line messages
        raise ConfigError(f"{_display(path)}: cannot read YAML ({_first_line(e)})") from None
    if not isinstance(tree, DictConfig):
        raise ConfigError(f"{_display(path)}: the top level must be a mapping of sections (cluster, runner, ...)")
    return tree


def _find_default(entry: str, including: Path) -> Path:
    for directory in (including.parent, config_dir()):
        candidate = directory / f"{entry}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{_display(including)}: defaults entry {entry!r} names no file {entry}.yaml next to it "
                      f"or in {_display(config_dir())}")


def _compose(path: Path, sources: _Sources, prefix: str = "", stack: tuple[Path, ...] = ()) -> DictConfig:
    """Load ``path`` with its defaults merged in (its own keys win).

    The tree is returned relative to the file's own root; ``prefix`` is where the caller mounts it, used only to
    record provenance under the final dotted keys.
    """
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(_display(p) for p in (*stack, path))
        raise ConfigError(f"{_display(path)}: defaults form a cycle ({chain})")
    own = _read_yaml(path)
    defaults = own.pop("defaults", None)
    defaults = [] if defaults is None else OmegaConf.to_container(defaults) if OmegaConf.is_list(defaults) else defaults
    if not isinstance(defaults, list) or not all(isinstance(d, str) for d in defaults):
        raise ConfigError(f"{_display(path)}: 'defaults' must be a list of config names "
                          f"('name' or 'group/name@dotted.key')")
    merged = OmegaConf.create({})
    for entry in defaults:
        if entry.startswith("override ") or entry == "_self_":
            raise ConfigError(f"{_display(path)}: defaults entry {entry!r} is Hydra syntax; here a file's own keys "
                              f"always win over its defaults, and there is no 'override'")
        name, _, mount = entry.partition("@")
        mount_prefix = ".".join(p for p in (prefix, mount) if p)
        part = _compose(_find_default(name, path), sources, mount_prefix, (*stack, path))
        for key in reversed(mount.split(".")) if mount else ():
            part = OmegaConf.create({key: part})
        merged = _merge(merged, part, path)
    sources.record(OmegaConf.to_container(own, resolve=False), _display(path), prefix)
    return _merge(merged, own, path)


def _merge(base: DictConfig, child: DictConfig, path: Path) -> DictConfig:
    """OmegaConf merge, except that a child's component_placement replaces the base's."""
    if OmegaConf.select(child, "cluster.component_placement") is not None and \
            OmegaConf.select(base, "cluster.component_placement") is not None:
        base = base.copy()
        del base.cluster["component_placement"]
    try:
        return OmegaConf.merge(base, child)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{_display(path)}: cannot merge over its defaults at "
                          f"{getattr(e, 'full_key', '?')} ({_first_line(e)})") from None


_OVERRIDE_KEY = re.compile(r"^[A-Za-z_][\w,]*(\.[A-Za-z_][\w,]*)*$")


def _apply_overrides(tree: DictConfig, overrides: Sequence[str], sources: _Sources) -> None:
    for item in overrides:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not _OVERRIDE_KEY.match(key):
            raise ConfigError(f"{COMMAND_LINE}: override {item!r} must look like dotted.key=value "
                              f"(Hydra's '+key' and '~key' forms are not supported)")
        parts = key.split(".")
        for i in range(1, len(parts)):
            parent = OmegaConf.select(tree, ".".join(parts[:i]), default=None, throw_on_resolution_failure=False)
            if parent is not None and not isinstance(parent, DictConfig):
                raise ConfigError(f"{COMMAND_LINE}: cannot set {key!r}: {'.'.join(parts[:i])} is a value, "
                                  f"not a section")
        try:
            value = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={raw}"]), resolve=False)["value"]
            OmegaConf.update(tree, key, value, merge=False)
        except OmegaConfBaseException as e:
            raise ConfigError(f"{COMMAND_LINE}: cannot apply override {item!r} ({_first_line(e)})") from None
        sources.record(value, COMMAND_LINE, key)


def _resolve(tree: DictConfig, sources: _Sources) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(tree, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        key = str(getattr(e, "full_key", "") or "")
        missing = re.search(r"Missing mandatory value: ([\w.\[\]]+)", str(e))
        if missing:  # a '???' value, read directly or through an interpolation
            needed_by = "" if missing.group(1) == key else f", needed by {key}"
            raise ConfigError(f"{sources.label(missing.group(1))}: missing required key {missing.group(1)!r} "
                              f"(its value is '???'{needed_by})") from None
        raise ConfigError(f"{sources.label(key)}: {key}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ----------------------------------------------------------------------------------------------------------------
# Typed conversion
# ----------------------------------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Builder:
    """Converts plain containers to the schema's dataclasses, one clear error line per problem."""

    def __init__(self, sources: _Sources):
        self.sources = sources

    def fail(self, key: str, message: str) -> typing.NoReturn:
        raise ConfigError(f"{self.sources.label(key)}: {message}")

    def build(self, cls: type, data: Any, key: str) -> Any:
        if not isinstance(data, Mapping):
            where = key or "the top level"
            self.fail(key, f"{where} must be a section (mapping), got {_show(data)}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        for name in data:
            if name not in fields:
                dotted = f"{key}.{name}" if key else str(name)
                hint = _KEY_HINTS.get(dotted)
                suffix = f" ({hint})" if hint else _did_you_mean(str(name), list(fields))
                self.fail(dotted, f"unknown key {dotted!r}{suffix}")
        kwargs = {}
        for name, field in fields.items():
            dotted = f"{key}.{name}" if key else name
            required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            if name not in data or (data[name] is None and required):
                if required:
                    label = self.sources.label(dotted)
                    raise ConfigError(f"{label}: missing required key {dotted!r}")
                continue
            kwargs[name] = self.convert(hints[name], data[name], dotted)
        return cls(**kwargs)

    def convert(self, tp: Any, value: Any, key: str) -> Any:
        origin = typing.get_origin(tp)
        if tp is Any:
            return value
        if dataclasses.is_dataclass(tp):
            return self.build(tp, value, key)
        if origin in (typing.Union, types.UnionType):
            return self._union(typing.get_args(tp), value, key)
        if origin is Literal:
            options = typing.get_args(tp)
            if value not in options or isinstance(value, bool):
                hint = _did_you_mean(value, [str(o) for o in options]) if isinstance(value, str) else ""
                self.fail(key, f"{key}={_show(value)} must be one of {', '.join(map(str, options))}{hint}")
            return value
        if tp is bool:
            if not isinstance(value, bool):
                self.fail(key, f"{key}={_show(value)} must be true or false")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail(key, f"{key}={_show(value)} must be an integer")
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.fail(key, f"{key}={_show(value)} must be a number")
            if not math.isfinite(value):
                self.fail(key, f"{key}={_show(value)} must be finite")
            return float(value)
        if tp is str:
            # YAML turns unquoted 2024 or 1.5 into numbers; as a name or path they mean their text.
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            if not isinstance(value, str):
                self.fail(key, f"{key}={_show(value)} must be a string")
            return value
        if origin is tuple:
            args = typing.get_args(tp)
            if not isinstance(value, (list, tuple)):
                self.fail(key, f"{key}={_show(value)} must be a list")
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(self.convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
            if len(value) != len(args):
                self.fail(key, f"{key}={_show(value)} must be a list of {len(args)} values")
            return tuple(self.convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        if origin is dict:
            key_tp, value_tp = typing.get_args(tp)
            if not isinstance(value, Mapping):
                self.fail(key, f"{key}={_show(value)} must be a mapping")
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    self.fail(key, f"{key} has key {_show(k)}; keys must be strings")
                out[k] = self.convert(value_tp, v, f"{key}.{k}")
            return out
        raise TypeError(f"schema type {tp!r} at {key} is not supported by the loader")

    def _union(self, arms: tuple[Any, ...], value: Any, key: str) -> Any:
        if value is None:
            if type(None) in arms:
                return None
            self.fail(key, f"{key} must not be null")
        arms = tuple(a for a in arms if a is not type(None))
        if len(arms) == 1:
            return self.convert(arms[0], value, key)
        # Mappings go to the dataclass arm, everything else to the first scalar arm that accepts it.
        if isinstance(value, Mapping):
            for arm in arms:
                if dataclasses.is_dataclass(arm) or typing.get_origin(arm) is dict:
                    return self.convert(arm, value, key)
        for arm in arms:
            if dataclasses.is_dataclass(arm) or typing.get_origin(arm) is dict:
                continue
            try:
                return self.convert(arm, value, key)
            except ConfigError:
                continue
        self.fail(key, f"{key}={_show(value)} must be one of: {', '.join(_type_name(a) for a in arms)}")


def _type_name(tp: Any) -> str:
    if dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict:
        return "a mapping"
    if typing.get_origin(tp) is tuple:
        return "a list"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


def build_config(data: Mapping[str, Any], *, source_path: str | None = None,
                 key_sources: Mapping[str, str] | None = None) -> TrainConfig:
    """Type-check plain containers (a resolved YAML tree) into a ``TrainConfig``; no cross-field validation.

    Args:
      data: the whole tree, interpolations already resolved.
      source_path: the top-level file, named in errors for keys without a recorded source.
      key_sources: dotted key -> file label (or "command line"), as ``load_config`` records it.
    """
    sources = _Sources(source_path or "config")
    sources.by_key.update(key_sources or {})
    cfg = _Builder(sources).build(TrainConfig, data, "")
    object.__setattr__(cfg, "source_path", source_path)
    object.__setattr__(cfg, "key_sources", dict(sources.by_key))
    return cfg


def load_config(name: str | None = None, path: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                *, num_devices: int | None = None) -> TrainConfig:
    """Load, override, resolve, type-check and validate a config.

    Args:
      name: a config in the config directory ("embedded_reach_ppo_baseline"); exclusive with ``path``.
      path: a YAML file anywhere.
      overrides: ``dotted.key=value`` strings, applied before interpolation.
      num_devices: visible accelerators for ``validate`` ("all" placements, device-id bounds); None: 1.
    Returns:
      The validated config; ``cfg.source_path`` names the file it came from.
    Raises:
      ConfigError with one line naming the file (or "command line") and the key.
    """
    if (name is None) == (path is None):
        raise ConfigError("give exactly one of a config name or a config path")
    file = _resolve_name(name) if name is not None else Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {str(file)!r} does not exist")
    sources = _Sources(_display(file))
    tree = _compose(file, sources)
    _apply_overrides(tree, overrides, sources)
    data = _resolve(tree, sources)
    cfg = build_config(data, source_path=_display(file), key_sources=sources.by_key)
    validate(cfg, num_devices=num_devices)
    return cfg


# ----------------------------------------------------------------------------------------------------------------
# Cross-field validation (RLinf's validate_embodied_cfg and actor-worker asserts, plus range checks)
# ----------------------------------------------------------------------------------------------------------------


class _Checker:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def fail(self, key: str, message: str) -> typing.NoReturn:
        label = source_of(self.cfg.key_sources, key, self.cfg.source_path or "config")
        raise ConfigError(f"{label}: {message}")

    def value(self, key: str) -> Any:
        node: Any = self.cfg
        for part in key.split("."):
            node = getattr(node, part)
        return node

    def at_least(self, key: str, low: int | float) -> None:
        if self.value(key) < low:
            self.fail(key, f"{key}={_show(self.value(key))} must be >= {low}")

    def positive(self, key: str) -> None:
        if self.value(key) <= 0:
            self.fail(key, f"{key}={_show(self.value(key))} must be > 0")

    def within(self, key: str, low: float, high: float) -> None:
        if not low <= self.value(key) <= high:
            self.fail(key, f"{key}={_show(self.value(key))} must be in [{low}, {high}]")


def validate(cfg: TrainConfig, num_devices: int | None = None) -> ComponentPlacement:
    """Check the cross-field rules before anything starts; return the parsed placement.

    World sizes come from the placement: RLinf runs one process per placed device (or as many as its
    "resources:processes" form says), and its batch rules are written in those terms. Rules:

    * ``total_num_envs % env_ranks == 0``; ``(total_num_envs / env_ranks) % pipeline_stage_num == 0``; the envs per
      simulator instance, ``total_num_envs / env_ranks / pipeline_stage_num``, divisible by ``env.*.group_size``;
      ``max_steps_per_rollout_epoch % num_action_chunks == 0``. For ``env.train`` always, for ``env.eval`` when
      evaluation is on (``val_check_interval > 0`` or ``only_eval``), as RLinf does.
    * ``loss_type: actor_critic`` needs ``actor.model.add_value_head``; ``adv_type: grpo`` needs
      ``algorithm.group_size > 1`` equal to ``env.train.group_size``.
    * Actor batches, RLinf's per-rank rule: ``global_batch_size % (micro_batch_size * actor_ranks) == 0``; each actor
      rank receives whole envs (``total_num_envs % actor_ranks == 0``); and its share of the rollout,
      ``total_num_envs * rollout_epoch * (max_steps_per_rollout_epoch / num_action_chunks) / actor_ranks`` samples,
      is a whole number of minibatches of ``global_batch_size / actor_ranks``.

    Args:
      num_devices: visible accelerators; "all" resolves to this many (1 when None) and ids must be below it.
    """
    check = _Checker(cfg)
    cluster, runner, algo, actor, model = cfg.cluster, cfg.runner, cfg.algorithm, cfg.actor, cfg.actor.model
    if num_devices is not None and num_devices < 1:
        raise ConfigError(f"num_devices={num_devices} must be >= 1")

    # --- cluster ---
    check.at_least("cluster.num_nodes", 1)
    if cluster.num_nodes != 1:
        check.fail("cluster.num_nodes", f"cluster.num_nodes={cluster.num_nodes}: only single-host runs are "
                                        f"supported (one JAX process drives every device of the host)")
    labels = [g.label for g in cluster.node_groups]
    if len(set(labels)) != len(labels):
        check.fail("cluster.node_groups", f"cluster.node_groups labels {labels} must be unique")
    if cluster.jax_mem_fraction is not None and not 0.0 < cluster.jax_mem_fraction <= 1.0:
        check.fail("cluster.jax_mem_fraction", f"cluster.jax_mem_fraction={cluster.jax_mem_fraction} must be in "
                                               f"(0, 1] or null")
    try:
        placement = parse_component_placement(cluster.component_placement, num_devices=num_devices,
                                              node_group_labels=labels)
    except PlacementError as e:
        check.fail(e.key, str(e))

    # --- runner ---
    if len(set(runner.logger.logger_backends)) != len(runner.logger.logger_backends):
        check.fail("runner.logger.logger_backends",
                   f"runner.logger.logger_backends={list(runner.logger.logger_backends)} lists a backend twice")
    if not runner.logger.log_path:
        check.fail("runner.logger.log_path", "runner.logger.log_path must not be empty")
    check.at_least("runner.max_epochs", 1)
    check.at_least("runner.weight_sync_interval", 1)
    if runner.max_wall_time_s is not None and not runner.max_wall_time_s > 0:
        check.fail("runner.max_wall_time_s", f"runner.max_wall_time_s={runner.max_wall_time_s} must be > 0 seconds "
                                             f"(or null for no limit)")
    evaluating = runner.val_check_interval > 0 or runner.only_eval or runner.task_type == "embodied_eval"
    if runner.val_check_interval > 0 and runner.save_interval > 0 and \
            runner.save_interval % runner.val_check_interval:
        check.fail("runner.save_interval", f"runner.save_interval={runner.save_interval} must be a multiple of "
                                           f"runner.val_check_interval={runner.val_check_interval}")
    if evaluating and cfg.env.eval is None:
        check.fail("runner.val_check_interval", "env.eval is required when runner.val_check_interval > 0 or "
                                                "runner.only_eval is true")
    if runner.use_training_pipeline and algo.adv_type != "gae":
        check.fail("runner.use_training_pipeline", f"runner.use_training_pipeline=true needs algorithm.adv_type="
                                                   f"gae, got {algo.adv_type}")
    if runner.enable_decoupled_mode and cfg.rollout.pipeline_stage_num != 1:
        check.fail("runner.enable_decoupled_mode", f"runner.enable_decoupled_mode=true needs rollout."
                                                   f"pipeline_stage_num=1, got {cfg.rollout.pipeline_stage_num}")

    # --- model ---
    for key in ("actor.model.action_dim", "actor.model.num_action_chunks", "actor.model.denoising_steps"):
        check.at_least(key, 1)
    if model.model_type == "gr00t" and not model.model_path and model.bootstrap is None:
        check.fail("actor.model.model_path", "actor.model.model_path is required for model_type gr00t "
                                             "(a GR00T N1.5 checkpoint directory), or actor.model.bootstrap")
    if model.model_path and model.bootstrap is not None:
        check.fail("actor.model.bootstrap", "set either actor.model.model_path or actor.model.bootstrap, "
                                            "not both (bootstrap: null to use model_path)")
    if model.bootstrap is not None:
        if cfg.env.train.env_type != "embedded":
            check.fail("actor.model.bootstrap", "actor.model.bootstrap needs env.train.env_type=embedded (it uses "
                                                "the embedded scripted experts)")
        for key in ("sft_episodes", "sft_batch_size"):
            check.at_least(f"actor.model.bootstrap.{key}", 1)
        check.at_least("actor.model.bootstrap.sft_steps", 0)
        check.positive("actor.model.bootstrap.sft_lr")
    if model.model_type == "gr00t":
        # GR00T N1.5 predicts a 16-step horizon of up to 32 action dims (GR00TTransform's action_horizon and
        # max_action_dim); a chunk or action beyond that cannot be produced.
        if model.num_action_chunks > GR00T_ACTION_HORIZON:
            check.fail("actor.model.num_action_chunks", f"actor.model.num_action_chunks={model.num_action_chunks} "
                                                        f"exceeds GR00T N1.5's action horizon {GR00T_ACTION_HORIZON}")
        if model.action_dim > GR00T_MAX_ACTION_DIM:
            check.fail("actor.model.action_dim", f"actor.model.action_dim={model.action_dim} exceeds GR00T N1.5's "
                                                 f"max_action_dim {GR00T_MAX_ACTION_DIM}")
    if model.model_type == "baseline":
        _check_baseline(check, model.baseline)

    # --- env splits ---
    stages = cfg.rollout.pipeline_stage_num
    check.at_least("rollout.pipeline_stage_num", 1)
    env_ranks = placement.world_size("env")
    if not runner.only_eval:
        _check_split(check, "train", cfg.env.train, env_ranks, stages, placement)
    if evaluating:
        _check_split(check, "eval", cfg.env.eval, env_ranks, stages, placement)

    # --- algorithm ---
    check.at_least("algorithm.update_epoch", 1)
    check.at_least("algorithm.group_size", 1)
    for key in ("algorithm.gamma", "algorithm.gae_lambda"):
        check.within(key, 0.0, 1.0)
    for key in ("algorithm.clip_ratio_high", "algorithm.clip_ratio_low", "algorithm.value_clip"):
        check.positive(key)
    if algo.clip_ratio_low >= 1.0:
        check.fail("algorithm.clip_ratio_low", f"algorithm.clip_ratio_low={algo.clip_ratio_low} must be < 1 "
                                               f"(the ratio is clipped below at 1 - clip_ratio_low)")
    if algo.clip_ratio_c is not None and algo.clip_ratio_c <= 1.0:
        check.fail("algorithm.clip_ratio_c", f"algorithm.clip_ratio_c={algo.clip_ratio_c} must be > 1 "
                                             f"(dual clip), or null for none")
    if algo.huber_delta is not None:
        check.positive("algorithm.huber_delta")
    for key in ("algorithm.kl_beta", "algorithm.entropy_bonus"):
        check.at_least(key, 0.0)
    if algo.filter_rewards and algo.rewards_lower_bound > algo.rewards_upper_bound:
        check.fail("algorithm.rewards_lower_bound",
                   f"algorithm.rewards_lower_bound={algo.rewards_lower_bound} must be <= "
                   f"algorithm.rewards_upper_bound={algo.rewards_upper_bound}")
    if not runner.only_eval and algo.loss_type == "actor_critic" and not model.add_value_head:
        check.fail("actor.model.add_value_head", "actor.model.add_value_head=false, but algorithm.loss_type="
                                                 "actor_critic (PPO) trains a value head; set it true or use "
                                                 "loss_type actor")
    if algo.adv_type == "grpo":
        if algo.group_size <= 1:
            check.fail("algorithm.group_size", f"algorithm.group_size={algo.group_size} must be > 1 for "
                                               f"algorithm.adv_type=grpo (advantages are relative to the group)")
        if cfg.env.train.group_size != algo.group_size:
            check.fail("env.train.group_size", f"env.train.group_size={cfg.env.train.group_size} must equal "
                                               f"algorithm.group_size={algo.group_size} for adv_type grpo")

    # --- actor batches and optimizer ---
    if not runner.only_eval:
        _check_actor_batches(check, cfg, placement)
    for key in ("actor.optim.lr", "actor.optim.value_lr", "actor.optim.adam_eps", "actor.optim.clip_grad"):
        check.positive(key)
    for key in ("actor.optim.adam_beta1", "actor.optim.adam_beta2"):
        if not 0.0 <= check.value(key) < 1.0:
            check.fail(key, f"{key}={check.value(key)} must be in [0, 1)")
    for key in ("actor.optim.weight_decay", "actor.optim.critic_warmup_steps", "actor.optim.min_lr"):
        check.at_least(key, 0)

    # --- sections kept for RLinf compatibility ---
    if cfg.reward.use_reward_model:
        check.fail("reward.use_reward_model", "reward.use_reward_model=true is not supported: rewards come from "
                                              "the env")
    if cfg.critic.use_critic_model:
        check.fail("critic.use_critic_model", "critic.use_critic_model=true is not supported: the value head "
                                              "lives in the actor model (actor.model.add_value_head)")
    return placement


def _check_split(check: _Checker, name: str, split: EnvSplitConfig, env_ranks: int, stages: int,
                 placement: ComponentPlacement) -> None:
    k = f"env.{name}"
    for field in ("total_num_envs", "max_episode_steps", "max_steps_per_rollout_epoch", "rollout_epoch",
                  "group_size"):
        check.at_least(f"{k}.{field}", 1)
    total = split.total_num_envs
    if total % env_ranks:
        check.fail(f"{k}.total_num_envs", f"{k}.total_num_envs={total} must be divisible by env ranks={env_ranks} "
                                          f"(cluster.component_placement env={placement.env.spec!r})")
    per_rank = total // env_ranks
    if per_rank % stages:
        check.fail(f"{k}.total_num_envs", f"{k}.total_num_envs={total} must be divisible by env ranks={env_ranks} "
                                          f"× rollout.pipeline_stage_num={stages} (each env rank splits its "
                                          f"{per_rank} envs into {stages} pipeline stages)")
    per_stage = per_rank // stages
    check.at_least(f"{k}.num_workers", 1)
    if split.init_params.tiled_rendering and split.env_type != "embedded":
        check.fail(f"{k}.init_params.tiled_rendering", f"{k}.init_params.tiled_rendering is for the embedded "
                                                       f"simulator; IsaacLab tasks choose their camera type "
                                                       f"(TiledCameraCfg) themselves")
    if split.num_workers > 1:
        if split.env_type != "embedded":
            check.fail(f"{k}.num_workers", f"{k}.num_workers={split.num_workers} is for the embedded simulator; "
                                           f"IsaacLab steps its envs on the GPU (use num_workers=1)")
        # One process builds the split's env of total_num_envs sub-envs (runner.py); its workers share them.
        elif total % split.num_workers or (total // split.num_workers) % split.group_size:
            check.fail(f"{k}.num_workers", f"{k}.num_workers={split.num_workers} must split the {total} envs "
                                           f"({k}.total_num_envs) into equal shards that are multiples of "
                                           f"{k}.group_size={split.group_size}")
    if per_stage % split.group_size:
        check.fail(f"{k}.group_size", f"{k}.group_size={split.group_size} must divide the {per_stage} envs per "
                                      f"simulator instance ({k}.total_num_envs={total} / env ranks={env_ranks} / "
                                      f"pipeline_stage_num={stages})")
    chunks = check.cfg.actor.model.num_action_chunks
    if split.max_steps_per_rollout_epoch % chunks:
        check.fail(f"{k}.max_steps_per_rollout_epoch",
                   f"{k}.max_steps_per_rollout_epoch={split.max_steps_per_rollout_epoch} must be divisible by "
                   f"actor.model.num_action_chunks={chunks}")
    init = split.init_params
    if init.num_envs is not None and init.num_envs != per_stage:
        check.fail(f"{k}.init_params.num_envs", f"{k}.init_params.num_envs={init.num_envs} disagrees with the "
                                                f"{per_stage} envs per simulator instance; leave it null (filled "
                                                f"at runtime)")
    for cam in ("table_cam", "wrist_cam"):
        check.at_least(f"{k}.init_params.{cam}.height", 1)
        check.at_least(f"{k}.init_params.{cam}.width", 1)
    check.at_least(f"{k}.video_cfg.fps", 1)


def _check_actor_batches(check: _Checker, cfg: TrainConfig, placement: ComponentPlacement) -> None:
    actor, train = cfg.actor, cfg.env.train
    check.at_least("actor.micro_batch_size", 1)
    check.at_least("actor.global_batch_size", 1)
    ranks = placement.world_size("actor")
    gbs, mbs = actor.global_batch_size, actor.micro_batch_size
    if gbs % (mbs * ranks):
        check.fail("actor.global_batch_size", f"actor.global_batch_size={gbs} must be divisible by "
                                              f"actor.micro_batch_size={mbs} × actor ranks={ranks}")
    if train.total_num_envs % ranks:
        check.fail("env.train.total_num_envs", f"env.train.total_num_envs={train.total_num_envs} must be divisible "
                                               f"by actor ranks={ranks} (each actor rank trains on whole envs)")
    chunk_steps = train.max_steps_per_rollout_epoch // actor.model.num_action_chunks
    rollout_size = train.total_num_envs * train.rollout_epoch * chunk_steps
    per_rank, minibatch = rollout_size // ranks, gbs // ranks
    if per_rank % minibatch:
        check.fail("actor.global_batch_size",
                   f"actor.global_batch_size={gbs}: each of the {ranks} actor rank(s) gets {per_rank} samples "
                   f"(env.train.total_num_envs={train.total_num_envs} × rollout_epoch={train.rollout_epoch} × "
                   f"{chunk_steps} chunk steps / {ranks}), not a multiple of its minibatch {gbs}/{ranks}={minibatch}")


def _check_baseline(check: _Checker, baseline: Any) -> None:
    k = "actor.model.baseline"
    for i, cam in enumerate(baseline.image_keys):
        if cam not in CAMERA_KEYS:
            check.fail(f"{k}.image_keys", f"{k}.image_keys[{i}]={cam!r} is not a camera"
                                          f"{_did_you_mean(cam, CAMERA_KEYS)} "
                                          f"(cameras: {', '.join(CAMERA_KEYS)})")
    for i, term in enumerate(baseline.state_keys):
        if term in CAMERA_KEYS:
            check.fail(f"{k}.state_keys", f"{k}.state_keys[{i}]={term!r} is a camera; list it in {k}.image_keys")
    for field in ("image_keys", "state_keys"):
        values = getattr(baseline, field)
        if len(set(values)) != len(values):
            check.fail(f"{k}.{field}", f"{k}.{field}={list(values)} lists a term twice")
    if not baseline.image_keys and not baseline.state_keys:
        check.fail(f"{k}.state_keys", f"{k}: image_keys and state_keys are both empty; the policy needs an input")
    check.at_least(f"{k}.image_size", 8)
    if baseline.image_keys and not baseline.cnn_channels:
        check.fail(f"{k}.cnn_channels", f"{k}.cnn_channels is empty but image_keys={list(baseline.image_keys)} "
                                        f"need a CNN")
    for field in ("cnn_channels", "mlp_hidden"):
        for i, width in enumerate(getattr(baseline, field)):
            if width < 1:
                check.fail(f"{k}.{field}", f"{k}.{field}[{i}]={width} must be >= 1")
