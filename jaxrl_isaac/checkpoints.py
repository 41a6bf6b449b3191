"""Orbax checkpoints with three items, as openpi: ``params`` (what eval loads), ``train_state`` (optimizer state,
step, skipped-update count, RNG) and ``assets`` (the resolved config and model metadata, JSON).

Layout: ``<log_path>/checkpoints/global_step_<N>/{params,train_state,assets}``. Orbax writes each step into a
temporary directory and renames it when complete, so a killed run never leaves a half-written step that a
resume would pick up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

STEP_PREFIX = "global_step"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not fit the configured model."""


def _manager(root: Path, max_to_keep: int | None = None) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, step_prefix=STEP_PREFIX, create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(root.absolute(), options=options, item_names=("params", "train_state", "assets"))


class Checkpointer:
    def __init__(self, root: str | os.PathLike, max_to_keep: int | None = None):
        self.root = Path(root)
        self._mngr = _manager(self.root, max_to_keep)

    def save(self, step: int, params: Any, train_state: Any, assets: dict) -> Path:
        if step in self._mngr.all_steps():
            # A resumed run re-creates a step the interrupted run had already written (same seed, same result).
            self._mngr.delete(step)
        self._mngr.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            train_state=ocp.args.StandardSave(train_state),
            assets=ocp.args.JsonSave(assets)), force=True)
        self._mngr.wait_until_finished()
        return self.root / f"{STEP_PREFIX}_{step}"

    def close(self) -> None:
        self._mngr.close()


def existing_steps(root: str | os.PathLike) -> list[int]:
    """Steps with a ``global_step_<N>`` directory under ``root`` (empty if ``root`` does not exist)."""
    root = Path(root)
    if not root.is_dir():
        return []
    prefix = f"{STEP_PREFIX}_"
    return sorted(int(d.name[len(prefix):]) for d in root.iterdir()
                  if d.is_dir() and d.name.startswith(prefix) and d.name[len(prefix):].isdigit())


def resolve_step_dir(path: str | os.PathLike, items: tuple[str, ...] = ("params", "train_state", "assets")
                     ) -> tuple[Path, int]:
    """Accepts ``.../checkpoints/global_step_N`` or ``.../checkpoints`` (latest step); returns (root, step).

    ``items`` are the items the caller will restore; each must be present (a converted GR00T checkpoint has
    ``params`` and ``assets`` but no ``train_state``)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint path {p} does not exist")
    if p.name.startswith(f"{STEP_PREFIX}_"):
        try:
            step = int(p.name[len(STEP_PREFIX) + 1:])
        except ValueError:
            raise CheckpointError(f"{p} is not a '{STEP_PREFIX}_<N>' checkpoint directory") from None
        root = p.parent
    else:
        root = p
        steps = _manager(root).all_steps()
        if not steps:
            raise CheckpointError(f"{p} holds no complete '{STEP_PREFIX}_<N>' checkpoint")
        step = max(steps)
    for item in items:
        if not (root / f"{STEP_PREFIX}_{step}" / item).exists():
            raise CheckpointError(f"checkpoint {root / f'{STEP_PREFIX}_{step}'} is incomplete: no '{item}' item")
    return root, step


def _restore_item(root: Path, step: int, item: str, target: Any) -> Any:
    mngr = _manager(root)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract)}))
    except (ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{item} in {root / f'{STEP_PREFIX}_{step}'} does not fit the configured model: "
                              f"{first}") from None
    out = restored[item]
    _check_shapes(target, out, f"{root / f'{STEP_PREFIX}_{step}'}/{item}")
    return out


def _check_shapes(expected: Any, got: Any, where: str) -> None:
    exp = jax.tree_util.tree_flatten_with_path(expected)[0]
    got_leaves = jax.tree_util.tree_flatten_with_path(got)[0]
    if len(exp) != len(got_leaves):
        raise CheckpointError(f"{where}: {len(got_leaves)} arrays, the model has {len(exp)}")
    for (path, e), (_, g) in zip(exp, got_leaves):
        if np.shape(e) != np.shape(g):
            raise CheckpointError(f"{where}: {jax.tree_util.keystr(path)} has shape {np.shape(g)}, "
                                  f"the model expects {np.shape(e)}")


def restore_params(path: str | os.PathLike, target_params: Any) -> Any:
    root, step = resolve_step_dir(path, items=("params",))
    return _restore_item(root, step, "params", target_params)


def restore(path: str | os.PathLike, target_params: Any, target_train_state: Any) -> tuple[Any, Any, dict, int]:
    """Returns (params, train_state, assets, step)."""
    root, step = resolve_step_dir(path)
    params = _restore_item(root, step, "params", target_params)
    train_state = _restore_item(root, step, "train_state", target_train_state)
    assets = _manager(root).restore(step, args=ocp.args.Composite(assets=ocp.args.JsonRestore()))["assets"]
    return params, train_state, assets, step
