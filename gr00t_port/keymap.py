"""Explicit torch-state_dict-key <-> Flax-param-path rules, shared by every part of the GR00T converter.

Each Flax module file exports the rules for its own parameters; ``gr00t_port.convert`` concatenates them and
refuses to run unless every source tensor is used exactly once and every target parameter is filled.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

Transform = Literal["identity", "linear", "conv2d"]


@dataclasses.dataclass(frozen=True)
class KeyRule:
    """One torch tensor <-> one Flax leaf (or one slice of a scanned, layer-stacked Flax leaf).

    transform:
      identity: same layout.
      linear:   torch nn.Linear weight (out, in) <-> Flax Dense kernel (in, out).
      conv2d:   torch Conv2d weight (O, I, kh, kw) <-> Flax Conv kernel (kh, kw, I, O).
    stack_index: for layers scanned with ``nn.scan`` the Flax leaf has a leading layer axis; this rule fills
      index ``stack_index`` of it (``stack_size`` layers in all).
    """

    torch_key: str
    flax_path: tuple[str, ...]
    transform: Transform = "identity"
    stack_index: int | None = None
    stack_size: int | None = None


def torch_to_flax_array(x: np.ndarray, transform: Transform) -> np.ndarray:
    if transform == "identity":
        return x
    if transform == "linear":
        return np.ascontiguousarray(x.T)
    if transform == "conv2d":
        return np.ascontiguousarray(x.transpose(2, 3, 1, 0))
    raise ValueError(f"unknown transform {transform!r}")


def flax_to_torch_array(x: np.ndarray, transform: Transform) -> np.ndarray:
    if transform == "identity":
        return x
    if transform == "linear":
        return np.ascontiguousarray(x.T)
    if transform == "conv2d":
        return np.ascontiguousarray(x.transpose(3, 2, 0, 1))
    raise ValueError(f"unknown transform {transform!r}")
