"""IsaacLab's vectorised env contract, as every simulator backend here implements it.

A backend is a batched env of ``num_envs`` sub-envs whose tensors live on ``device``:

    obs, extras = env.reset(seed=None)
    obs, reward, terminated, truncated, extras = env.step(action)

* ``obs``: ``{group: {term: Tensor}}``; the group ``"policy"`` holds at least
  ``table_cam`` (N, H, W, 3) uint8, ``wrist_cam`` (N, H, W, 3) uint8, ``eef_pos`` (N, 3) f32,
  ``eef_quat`` (N, 4) f32 (in ``env.quat_order``), ``gripper_pos`` (N, 2) f32,
  ``joint_pos`` (N, 9) f32 and ``joint_vel`` (N, 9) f32. A group may be lazy (a Mapping
  that renders cameras only when they are read).
* ``reward`` (N,) f32, ``terminated`` (N,) bool, ``truncated`` (N,) bool. IsaacLab reuses these
  buffers in place on the next step: a consumer that keeps them must copy them first.
* ``extras``: dict; backends here add ``extras["success"]`` (N,) bool, true on the step whose
  termination was the task's success (never on a dropped cube), and ``extras["log"]``.
* Auto-reset is same-step: a sub-env that terminated or truncated is reset inside ``step`` and the
  returned obs is the first obs of its new episode.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, runtime_checkable

import torch

# Observation terms the model-input mapping needs from the "policy" group.
POLICY_GROUP = "policy"
CAMERA_KEYS = ("table_cam", "wrist_cam")
PROPRIO_KEYS = ("eef_pos", "eef_quat", "gripper_pos", "joint_pos", "joint_vel")
QUAT_ORDERS = ("wxyz", "xyzw")


class EnvInputError(ValueError):
    """A bad action (or other input) was given to an env; raised before the simulator is touched."""


class EnvOutputError(ValueError):
    """An env returned something unusable (NaN/inf reward or observation); raised before it reaches training."""


def check_finite(name: str, x: torch.Tensor) -> None:
    """One line naming the term and the envs if a float tensor (leading axis = env) holds NaN or inf."""
    if x.dtype.is_floating_point:
        finite = torch.isfinite(x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(-1, 1))
        if not bool(finite.all()):
            bad = (~finite).any(dim=1).nonzero().flatten().tolist()
            raise EnvOutputError(f"the env returned NaN or inf in {name} for env(s) {bad[:8]}"
                                 f"{' ...' if len(bad) > 8 else ''}")


class UnknownTaskId(EnvInputError, KeyError):
    """A task id no backend registers. A KeyError too (registries are mappings), but printed without quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@runtime_checkable
class VecEnv(Protocol):
    """The subset of IsaacLab's ``ManagerBasedRLEnv`` API that the runner relies on."""

    num_envs: int
    device: torch.device
    action_dim: int
    quat_order: str  # "wxyz" (IsaacLab 2.x) or "xyzw" (IsaacLab 3.0, the embedded simulator)

    def reset(self, seed: int | None = None, env_ids: Any = None, options: dict | None = None
              ) -> tuple[Mapping[str, Mapping[str, torch.Tensor]], dict]: ...

    def step(self, action: torch.Tensor) -> tuple[
        Mapping[str, Mapping[str, torch.Tensor]], torch.Tensor, torch.Tensor, torch.Tensor, dict]: ...

    def close(self) -> None: ...


def validate_action(action: Any, num_envs: int, action_dim: int, device: torch.device | str) -> torch.Tensor:
    """Check an action batch before it reaches a simulator; one clear line per problem.

    Args:
      action: (num_envs, action_dim) floating torch tensor on ``device``.
    Returns:
      The same tensor, as float32.
    Raises:
      EnvInputError naming what is wrong (type, shape, dtype, device, non-finite entries).
    """
    if not isinstance(action, torch.Tensor):
        raise EnvInputError(f"action must be a torch.Tensor of shape ({num_envs}, {action_dim}), "
                            f"got {type(action).__name__}")
    if tuple(action.shape) != (num_envs, action_dim):
        raise EnvInputError(f"action has shape {tuple(action.shape)}, expected ({num_envs}, {action_dim}) "
                            f"= (num_envs, action_dim)")
    if not action.dtype.is_floating_point:
        raise EnvInputError(f"action has dtype {action.dtype}, expected a floating dtype (float32)")
    expected = torch.device(device)
    if action.device.type != expected.type or (
            expected.index is not None and action.device.index not in (None, expected.index)):
        raise EnvInputError(f"action is on device {action.device}, the env runs on {expected}")
    finite = torch.isfinite(action)
    if not bool(finite.all()):
        bad_envs = (~finite).any(dim=1).nonzero().flatten().tolist()
        raise EnvInputError(f"action contains NaN or inf in env(s) {bad_envs[:8]}"
                            f"{' ...' if len(bad_envs) > 8 else ''}")
    return action.float()
