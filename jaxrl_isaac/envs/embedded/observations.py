"""A lazy observation group: low-dim terms are computed at step time, camera images only when read.

A policy that acts in chunks of 16 reads images once per chunk; rendering on the other 15 steps would dominate the
step time on CPU. Images are cached per group, so reading ``table_cam`` twice renders once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable, Iterator

import torch


class LazyObsGroup(Mapping):
    """``{term: Tensor}`` whose camera terms render on first access.

    Args:
      terms: low-dim terms, already tensors on the env's device.
      cameras: camera term names.
      render: ``render(name, version)`` -> (N, H, W, 3) uint8 tensor; raises if the env has moved past ``version``.
      version: the env's observation version when this group was built.
    """

    def __init__(self, terms: dict[str, torch.Tensor], cameras: tuple[str, ...],
                 render: Callable[[str, int], torch.Tensor], version: int):
        self._terms = terms
        self._cameras = cameras
        self._render = render
        self._version = version
        self._images: dict[str, torch.Tensor] = {}

    def __getitem__(self, key: str) -> torch.Tensor:
        if key in self._terms:
            return self._terms[key]
        if key in self._cameras:
            if key not in self._images:
                self._images[key] = self._render(key, self._version)
            return self._images[key]
        raise KeyError(f"no observation term {key!r}; terms: {', '.join(self)}")

    def __iter__(self) -> Iterator[str]:
        yield from self._terms
        yield from self._cameras

    def __len__(self) -> int:
        return len(self._terms) + len(self._cameras)

    def rendered(self) -> tuple[str, ...]:
        """Camera terms rendered so far for this group."""
        return tuple(self._images)

    def __repr__(self) -> str:
        shapes = {k: tuple(v.shape) for k, v in self._terms.items()}
        return f"LazyObsGroup({shapes}, cameras={self._cameras}, rendered={self.rendered()})"
