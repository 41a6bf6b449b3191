"""Batched quaternion helpers in numpy. Internally quaternions are (w, x, y, z) as in MuJoCo; the env converts to
(x, y, z, w) (IsaacLab 3.0's order) only when it builds observations."""

from __future__ import annotations

import numpy as np


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b; (..., 4) wxyz."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def quat_conj(q: np.ndarray) -> np.ndarray:
    """Conjugate (the inverse of a unit quaternion); (..., 4) wxyz."""
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_from_axis_angle(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle, (..., 3)) -> unit quaternion (..., 4) wxyz; zero vector -> identity."""
    angle = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(half)/angle -> 0.5 as angle -> 0; the series keeps it finite.
    scale = np.where(angle > 1e-8, np.sin(half) / np.maximum(angle, 1e-12), 0.5 - angle ** 2 / 48.0)
    return np.concatenate([np.cos(half), rotvec * scale], axis=-1)


def axis_angle_from_quat(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (..., 4) wxyz -> rotation vector (..., 3) of the shortest rotation (angle in [0, pi])."""
    q = np.where(q[..., :1] < 0.0, -q, q)  # same rotation, w >= 0 picks the short way round
    vec = q[..., 1:]
    sin_half = np.linalg.norm(vec, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, q[..., :1])
    scale = np.where(sin_half > 1e-8, angle / np.maximum(sin_half, 1e-12), 2.0 / np.maximum(q[..., :1], 1e-12))
    return vec * scale


def quat_from_yaw(yaw: np.ndarray) -> np.ndarray:
    """Rotation about world z by ``yaw`` (...,) -> (..., 4) wxyz."""
    half = 0.5 * np.asarray(yaw)
    zeros = np.zeros_like(half)
    return np.stack([np.cos(half), zeros, zeros, np.sin(half)], axis=-1)


def wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    return q[..., [1, 2, 3, 0]]


def xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    return q[..., [3, 0, 1, 2]]
