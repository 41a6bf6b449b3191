"""From an env's ``policy`` observation group to the VLA's model inputs (RLinf's stack-cube layout).

RLinf (``rlinf/envs/isaaclab/tasks/stack_cube.py::_wrap_obs``) feeds GR00T N1.5 with

    table_image       obs["policy"]["table_cam"]            (N, H, W, 3) uint8, third-person camera
    wrist_image       obs["policy"]["wrist_cam"]            (N, H, W, 3) uint8
    state             [eef_pos(3), axis-angle(eef_quat)(3), gripper_pos(2)]   (N, 8) float32
    task_description  [instruction] * N

``gripper_pos`` is IsaacLab's ``(finger_joint_1, -finger_joint_2)`` (0.04 each when open). The state is what the
SFT checkpoint's normalisation statistics were computed on, so its convention (below) must not drift.

Pure torch: runs on whatever device the observations are on, and copies nothing but the 8-dim state.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from jaxrl_isaac.envs.contract import QUAT_ORDERS

MODEL_INPUT_KEYS = ("table_image", "wrist_image", "state", "task_description")
# RLinf's Franka state keys (metadata.json sub-keys) and their widths: 8 dims.
FRANKA_EEF_STATE_KEYS: tuple[tuple[str, int], ...] = (("x", 1), ("y", 1), ("z", 1), ("roll", 1), ("pitch", 1),
                                                      ("yaw", 1), ("gripper", 2))
STATE_DIM = sum(d for _, d in FRANKA_EEF_STATE_KEYS)  # 8
# The embedded reach task adds its target (IsaacLab's reach tasks put the pose command in the policy group too):
# without it the target is only visible as a small marker in the camera images.
REACH_STATE_KEYS: tuple[tuple[str, int], ...] = (*FRANKA_EEF_STATE_KEYS, ("target", 3))
# The state-based stack task (IsaacLab's Isaac-Stack-Cube-Franka-IK-Rel-v0, whose policy group holds the cube poses)
# adds the three cube centres and their yaws folded to a quarter turn: 8 + 9 + 3 = 20 dims.
STACK_STATE_KEYS: tuple[tuple[str, int], ...] = (*FRANKA_EEF_STATE_KEYS, ("cube_pos", 9), ("cube_yaw", 3))

# (policy_obs, quat_order) -> (N, D) float32. A task spec may supply its own (registry.py, embedded tasks).
StateFn = Callable[[Mapping[str, torch.Tensor], str], torch.Tensor]


def to_xyzw(quat: torch.Tensor, quat_order: str) -> torch.Tensor:
    """Reorders (N, 4) quaternions given in ``quat_order`` ("wxyz" or "xyzw") to xyzw."""
    if quat_order == "xyzw":
        return quat
    if quat_order == "wxyz":
        return quat[:, [1, 2, 3, 0]]
    raise ValueError(f"quat_order must be one of {QUAT_ORDERS}, got {quat_order!r}")


def quat_to_axis_angle(quat_xyzw: torch.Tensor) -> torch.Tensor:
    """Axis-angle ("exponential coordinates") of (N, 4) xyzw quaternions, as robosuite/RLinf compute it.

    Convention, identical to robosuite's ``quat2axisangle`` and RLinf's ``quat2axisangle_torch``: angle = 2·acos(w)
    in [0, 2π], axis = v / |v|, and no hemisphere flip, so ``q`` and ``-q`` (the same rotation) map to θ·a and
    (θ - 2π)·a. We keep that on purpose: the state statistics of RLinf-trained checkpoints were computed with it.

    Numerics differ from theirs in two ways (same values for unit quaternions, up to rounding):
      * we use 2·atan2(|v|, w) instead of 2·acos(w) / sqrt(1 - w²), which is accurate in float32 near angle 0,
        where acos loses everything below ~5e-4 rad (w is within one float32 ulp of 1);
      * the result does not depend on the quaternion's norm (their formula assumes a unit quaternion).
    At |v| = 0 both return 0 (for w < 0 that is the 2π turn, i.e. the identity); we treat |v| < 1e-12 as 0.

    Returns:
      (N, 3) tensor, same dtype and device as the input.
    """
    if quat_xyzw.ndim != 2 or quat_xyzw.shape[-1] != 4:
        raise ValueError(f"quaternions must have shape (N, 4), got {tuple(quat_xyzw.shape)}")
    vec, w = quat_xyzw[:, :3], quat_xyzw[:, 3]
    vec_norm = torch.linalg.vector_norm(vec, dim=-1)
    angle = 2.0 * torch.atan2(vec_norm, w)
    # angle / |v| -> 2 / w as |v| -> 0 (w > 0); for w < 0 the limit is a full turn, which robosuite maps to 0.
    tiny = vec_norm < 1e-12
    near_identity_scale = torch.where(w > 0, 2.0 / w.clamp(min=1e-12), torch.zeros_like(w))
    scale = torch.where(tiny, near_identity_scale, angle / torch.where(tiny, torch.ones_like(vec_norm), vec_norm))
    return vec * scale[:, None]


def _read(policy_obs: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    """Reads one term once (a lazy group renders cameras on read), with a one-line error if it is missing."""
    try:
        value = policy_obs[key]
    except KeyError:
        raise KeyError(f"policy observation group has no term {key!r}; it has {sorted(policy_obs.keys())}") from None
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"policy observation term {key!r} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _check_rows(name: str, value: torch.Tensor, trailing: tuple[int, ...], num_envs: int | None) -> None:
    if value.ndim != 1 + len(trailing) or tuple(value.shape[1:]) != trailing or (
            num_envs is not None and value.shape[0] != num_envs):
        expected = ", ".join(["N" if num_envs is None else str(num_envs), *map(str, trailing)])
        raise ValueError(f"policy observation term {name!r} has shape {tuple(value.shape)}, expected ({expected})")


def eef_axis_angle_gripper_state(policy_obs: Mapping[str, torch.Tensor], quat_order: str) -> torch.Tensor:
    """RLinf's 8-dim state: ``[eef_pos(3), axis-angle(eef_quat as xyzw)(3), gripper_pos(2)]``, float32.

    Reads the terms ``eef_pos`` (N, 3), ``eef_quat`` (N, 4) in ``quat_order`` and ``gripper_pos`` (N, 2).
    """
    eef_pos = _read(policy_obs, "eef_pos")
    num_envs = eef_pos.shape[0] if eef_pos.ndim >= 1 else None
    _check_rows("eef_pos", eef_pos, (3,), None)
    eef_quat = _read(policy_obs, "eef_quat")
    _check_rows("eef_quat", eef_quat, (4,), num_envs)
    gripper_pos = _read(policy_obs, "gripper_pos")
    _check_rows("gripper_pos", gripper_pos, (2,), num_envs)
    axis_angle = quat_to_axis_angle(to_xyzw(eef_quat.float(), quat_order))
    return torch.cat([eef_pos.float(), axis_angle, gripper_pos.float()], dim=1)


def eef_gripper_target_state(policy_obs: Mapping[str, torch.Tensor], quat_order: str) -> torch.Tensor:
    """RLinf's 8-dim state followed by the reach target ``target_pos`` (N, 3): (N, 11) float32
    (``REACH_STATE_KEYS``)."""
    state = eef_axis_angle_gripper_state(policy_obs, quat_order)
    target = _read(policy_obs, "target_pos")
    _check_rows("target_pos", target, (3,), state.shape[0])
    return torch.cat([state, target.float()], dim=1)


def cube_yaw_quarter_turn(quat_xyzw: torch.Tensor) -> torch.Tensor:
    """Yaw about z of upright cubes, folded to [-pi/4, pi/4): a cube looks the same after a quarter turn, so this is
    the rotation a top-down grasp must match. ``quat_xyzw`` (..., 4) -> (...)."""
    x, y, z, w = quat_xyzw.unbind(-1)
    yaw = torch.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    quarter = torch.pi / 2.0
    return torch.remainder(yaw + quarter / 2.0, quarter) - quarter / 2.0


def eef_gripper_cubes_state(policy_obs: Mapping[str, torch.Tensor], quat_order: str) -> torch.Tensor:
    """RLinf's 8-dim state followed by ``cube_positions`` (N, 9) and the quarter-turn yaws of ``cube_orientations``
    (N, 12, three quaternions in ``quat_order``): (N, 20) float32 (``STACK_STATE_KEYS``)."""
    state = eef_axis_angle_gripper_state(policy_obs, quat_order)
    num_envs = state.shape[0]
    cube_pos = _read(policy_obs, "cube_positions")
    _check_rows("cube_positions", cube_pos, (9,), num_envs)
    cube_quat = _read(policy_obs, "cube_orientations")
    _check_rows("cube_orientations", cube_quat, (12,), num_envs)
    quats = to_xyzw(cube_quat.float().reshape(num_envs * 3, 4), quat_order).reshape(num_envs, 3, 4)
    return torch.cat([state, cube_pos.float(), cube_yaw_quarter_turn(quats)], dim=1)


def to_model_inputs(policy_obs: Mapping[str, torch.Tensor], quat_order: str, task_description: str, *,
                    state_fn: StateFn = eef_axis_angle_gripper_state, state_dim: int = STATE_DIM) -> dict[str, Any]:
    """Maps one ``policy`` observation group to the model inputs.

    Each camera term is read exactly once (lazy groups render on read) and passed through without a copy.

    Args:
      policy_obs: ``obs["policy"]`` with ``table_cam``/``wrist_cam`` (N, H, W, 3) uint8 and the terms ``state_fn``
        reads (by default ``eef_pos``, ``eef_quat``, ``gripper_pos``).
      quat_order: the env's quaternion order, "wxyz" (IsaacLab 2.x) or "xyzw" (IsaacLab 3.0, embedded).
      task_description: the instruction, repeated for every sub-env.
      state_fn: builds the (N, D) state; the default is RLinf's 8-dim layout.
      state_dim: D, the width ``state_fn`` must return.
    Returns:
      ``{"table_image": (N,H,W,3) uint8, "wrist_image": (N,H,W,3) uint8, "state": (N,8) float32,
      "task_description": list[str] of length N}``.
    """
    if quat_order not in QUAT_ORDERS:
        raise ValueError(f"quat_order must be one of {QUAT_ORDERS}, got {quat_order!r}")
    if not isinstance(task_description, str):
        raise TypeError(f"task_description must be a str, got {type(task_description).__name__}")
    images = {}
    num_envs = None
    for input_key, term in (("table_image", "table_cam"), ("wrist_image", "wrist_cam")):
        image = _read(policy_obs, term)
        if image.ndim != 4 or image.shape[-1] != 3 or (num_envs is not None and image.shape[0] != num_envs):
            raise ValueError(f"policy observation term {term!r} has shape {tuple(image.shape)}, expected "
                             f"({'N' if num_envs is None else num_envs}, H, W, 3) RGB")
        if image.dtype != torch.uint8:
            raise ValueError(f"policy observation term {term!r} has dtype {image.dtype}, expected torch.uint8")
        num_envs = image.shape[0]
        images[input_key] = image
    state = state_fn(policy_obs, quat_order)
    if tuple(state.shape) != (num_envs, state_dim) or state.dtype != torch.float32:
        raise ValueError(f"state_fn returned {tuple(state.shape)} {state.dtype}, expected ({num_envs}, {state_dim}) "
                         f"torch.float32")
    if state.device != images["table_image"].device:
        raise ValueError(f"state is on {state.device} but the camera images are on {images['table_image'].device}")
    return {**images, "state": state, "task_description": [task_description] * num_envs}
