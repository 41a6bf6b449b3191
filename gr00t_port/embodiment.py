"""Embodiment tag -> projector index of GR00T N1.5's per-embodiment encoders and decoders.

The action head holds 32 copies (``max_num_embodiments``) of the state encoder, action encoder and action decoder;
the tag of the data picks one. The ids below are fixed by the released checkpoints and must not be renumbered.

Sources: Isaac-GR00T ``gr00t/data/embodiment_tags.py`` (gr1, oxe_droid, agibot_genie1, new_embodiment) and
RLinf's patched mapping ``rlinf/models/embodiment/gr00t/embodiment_tags.py`` (the LIBERO, RoboCasa, ManiSkill and
IsaacLab tags). They disagree on ``new_embodiment``: Isaac-GR00T (and LeRobot) use 31, RLinf re-maps it to 10.
We keep Isaac-GR00T's 31, the slot every non-pretrained fine-tune (``libero_franka``, ``isaaclab_franka``) shares;
pass ``overrides={"new_embodiment": 10}`` to reproduce RLinf for a checkpoint trained under that tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

NUM_EMBODIMENT_PROJECTORS = 32  # max_num_embodiments of the N1.5 action head

EMBODIMENT_PROJECTOR_INDEX: Mapping[str, int] = MappingProxyType(
    {
        # Pretrained heads of the base model (Isaac-GR00T README).
        "gr1": 24,
        "oxe_droid": 17,
        "agibot_genie1": 26,
        # Non-pretrained slot used for post-training on a new robot.
        "new_embodiment": 31,
        # RLinf's tags. LIBERO and IsaacLab Franka fine-tunes reuse slot 31.
        "libero_franka": 31,
        "isaaclab_franka": 31,
        "libero_panda": 2,
        "robocasa_panda_omron": 13,
        "maniskill_widowx": 30,
    }
)


def embodiment_projector_index(tag: str, overrides: Mapping[str, int] | None = None) -> int:
    """Projector index for ``tag``; ``overrides`` adds tags or replaces ids (e.g. RLinf's new_embodiment=10)."""
    table = dict(EMBODIMENT_PROJECTOR_INDEX)
    if overrides:
        for name, index in overrides.items():
            if not 0 <= int(index) < NUM_EMBODIMENT_PROJECTORS:
                raise ValueError(
                    f"embodiment override {name!r}={index}: projector index must be in [0, {NUM_EMBODIMENT_PROJECTORS})"
                )
            table[name] = int(index)
    if tag not in table:
        raise ValueError(f"unknown embodiment tag {tag!r}; known tags: {', '.join(sorted(table))}")
    return table[tag]
