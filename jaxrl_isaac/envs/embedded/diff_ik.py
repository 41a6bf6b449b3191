"""Relative-pose differential IK with damped least squares, batched over sub-envs (IsaacLab's
``DifferentialIKController(command_type="pose", use_relative_mode=True, ik_method="dls")``).

Per control step the 6-D action sets a fixed target pose relative to the current control frame; every physics
substep then solves ``dq = J^T (J J^T + lambda^2 I)^-1 e`` for the current pose error ``e`` and commands
``q + dq`` as the joint position targets.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrl_isaac.envs.embedded import rotations


@dataclasses.dataclass(frozen=True)
class DiffIKConfig:
    action_scale: float = 0.5  # DifferentialInverseKinematicsActionCfg.scale
    damping: float = 0.01  # DLS lambda (IsaacLab's ik_params["lambda_val"] default)


def relative_target(pos: np.ndarray, quat: np.ndarray, delta: np.ndarray, scale: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Target pose from a relative command, as IsaacLab's ``apply_delta_pose``.

    Args:
      pos: (N, 3) current control-frame position (robot base frame).
      quat: (N, 4) current orientation, wxyz.
      delta: (N, 6) raw action (dx, dy, dz, droll, dpitch, dyaw); rotation is an axis-angle vector in the base frame.
      scale: multiplies the raw action.
    Returns:
      (N, 3) target position and (N, 4) wxyz target orientation (the delta rotation applied on the left).
    """
    delta = delta * scale
    target_quat = rotations.quat_mul(rotations.quat_from_axis_angle(delta[:, 3:6]), quat)
    return pos + delta[:, 0:3], target_quat


def pose_error(pos: np.ndarray, quat: np.ndarray, target_pos: np.ndarray, target_quat: np.ndarray) -> np.ndarray:
    """(N, 6) = position error and axis-angle orientation error (target relative to current, base frame)."""
    rot_err = rotations.axis_angle_from_quat(rotations.quat_mul(target_quat, rotations.quat_conj(quat)))
    return np.concatenate([target_pos - pos, rot_err], axis=-1)


def dls_joint_delta(jacobian: np.ndarray, error: np.ndarray, damping: float) -> np.ndarray:
    """Damped-least-squares joint step.

    Args:
      jacobian: (N, 6, J) rows = linear then angular velocity of the control frame per joint velocity.
      error: (N, 6) pose error.
      damping: lambda; regularises near singularities.
    Returns:
      (N, J) joint position change.
    """
    jjt = jacobian @ np.swapaxes(jacobian, 1, 2)
    jjt[:, np.arange(6), np.arange(6)] += damping ** 2
    return np.einsum("nij,ni->nj", jacobian, np.linalg.solve(jjt, error[..., None])[..., 0])
