"""Scripted experts: batched state machines that solve the embedded tasks from the policy observations (plus the
env's episode counters, to notice same-step auto-resets).

They produce actions in the env's own convention (0.5-scaled relative TCP pose deltas + gripper sign), so their
rollouts serve as demonstrations / SFT data and prove each task is solvable. The arm tracks only part of a commanded
delta per 20 Hz step (the stiff-but-damped joint PD of IsaacLab's high-PD Franka), so the experts run a proportional
controller on the TCP pose error and re-plan every step.

Pick-and-place cycle per cube (stack: red onto blue, then green onto red; lift: red, then hold it up):
APPROACH (above the cube, gripper yaw aligned with a cube face) -> DESCEND -> GRASP (close, wait) -> LIFT -> CARRY
(above the destination) -> LOWER -> RELEASE (open, wait) -> RETREAT, then the next cube or DONE. A phase that
overstays its budget, or a cube that slips out of the grasp, sends the env back to APPROACH of the first unfinished
cube, which is recomputed from the cube poses (so a knocked-over tower is rebuilt).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from jaxrl_isaac.envs.contract import POLICY_GROUP
from jaxrl_isaac.envs.embedded import rotations, scene, tasks
from jaxrl_isaac.envs.embedded.franka_env import EmbeddedFrankaEnv

APPROACH, DESCEND, GRASP, LIFT, CARRY, LOWER, RELEASE, RETREAT, DONE = range(9)
# Control steps before a phase is abandoned (DONE too: if the tower does not count as stacked, rebuild it).
_PHASE_BUDGET = np.array([60, 40, 8, 40, 60, 40, 6, 20, 30])


@dataclasses.dataclass(frozen=True)
class ExpertConfig:
    position_gain: float = 2.0  # commanded delta = gain * error (the arm realises ~1/4 of a delta per step)
    rotation_gain: float = 1.5
    max_delta: float = 0.08  # m, largest commanded translation per step
    max_rotation: float = 0.5  # rad, largest commanded rotation per step
    hover_height: float = 0.08  # m above a cube before descending onto it
    carry_height: float = 0.06  # m of clearance above the destination while carrying
    grasp_steps: int = 6
    release_steps: int = 5


def _cube_yaw(quat_xyzw: np.ndarray) -> np.ndarray:
    """Yaw (about world z) of cubes given as xyzw quaternions (..., 4); cubes stay roughly upright."""
    x, y, z, w = np.moveaxis(quat_xyzw, -1, 0)
    return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def _down_quat(yaw: np.ndarray) -> np.ndarray:
    """wxyz orientation of a TCP pointing straight down with its x axis at ``yaw`` (the default hand attitude)."""
    flip = np.array([0.0, 1.0, 0.0, 0.0])  # rotation by pi about x: z down, y flipped
    return rotations.quat_mul(rotations.quat_from_yaw(yaw), np.broadcast_to(flip, yaw.shape + (4,)))


def _hand_yaw(tcp_quat: np.ndarray) -> np.ndarray:
    """Yaw of the TCP's x axis in the world xy plane; tcp_quat (N, 4) wxyz."""
    x_axis = rotations.quat_mul(rotations.quat_mul(tcp_quat, np.broadcast_to([0.0, 1.0, 0.0, 0.0], tcp_quat.shape)),
                                rotations.quat_conj(tcp_quat))[:, 1:]
    return np.arctan2(x_axis[:, 1], x_axis[:, 0])


def _read_pose(group) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) TCP position and (N, 4) wxyz orientation from the policy group."""
    tcp = group["eef_pos"].cpu().numpy().astype(np.float64)
    return tcp, rotations.xyzw_to_wxyz(group["eef_quat"].cpu().numpy().astype(np.float64))


def pose_command(tcp: np.ndarray, tcp_quat: np.ndarray, target: np.ndarray, yaw: np.ndarray, close: np.ndarray,
                 config: ExpertConfig, action_scale: float) -> np.ndarray:
    """Proportional pose controller -> raw (N, 7) env action (undoing the env's action scale).

    The TCP is driven toward ``target`` pointing down with its x axis at ``yaw``; ``close`` picks the gripper sign.
    """
    delta = config.position_gain * (target - tcp)
    norm = np.linalg.norm(delta, axis=-1, keepdims=True)
    delta = delta * np.minimum(1.0, config.max_delta / np.maximum(norm, 1e-9))
    rot = config.rotation_gain * rotations.axis_angle_from_quat(
        rotations.quat_mul(_down_quat(yaw), rotations.quat_conj(tcp_quat)))
    norm = np.linalg.norm(rot, axis=-1, keepdims=True)
    rot = rot * np.minimum(1.0, config.max_rotation / np.maximum(norm, 1e-9))
    gripper = np.where(close, -1.0, 1.0)[:, None]
    return np.concatenate([delta / action_scale, rot / action_scale, gripper], axis=-1)


def _grasp_yaw(cube_pos: np.ndarray, cube_yaw: np.ndarray, cube: np.ndarray, current_yaw: np.ndarray) -> np.ndarray:
    """Gripper yaw for grasping ``cube`` (N,): one of its two face-aligned yaws, preferring the one whose fingers
    and 19 cm-wide hand keep clear of the other cubes (a finished tower beside the target would block the hand).

    Among collision-free candidates (or, failing that, the least bad) it takes the smaller rotation.
    """
    rows = np.arange(len(cube))
    first = _nearest_face_yaw(cube_yaw[rows, cube], current_yaw)
    candidates = np.stack([first, first + np.pi / 2.0, first - np.pi / 2.0], axis=1)  # (N, 3)
    target = cube_pos[rows, cube]
    clash = np.zeros(candidates.shape)
    for other in range(3):
        rel = (cube_pos[:, other] - target)[:, None, :2]  # (N, 1, 2)
        finger_axis = np.stack([-np.sin(candidates), np.cos(candidates)], axis=-1)
        palm_axis = np.stack([np.cos(candidates), np.sin(candidates)], axis=-1)
        along = np.abs(np.sum(rel * finger_axis, axis=-1))
        across = np.abs(np.sum(rel * palm_axis, axis=-1))
        reach = scene.CUBE_EDGE * 0.75  # half-diagonal of a cube, rounded up
        # Open fingers reach 6 cm from the TCP and are 2 cm thick; the hand body is 19 cm long, 4.4 cm thick and
        # sits ~4.5 cm above the TCP, so only a cube standing on another can reach it.
        fingers = (along < 0.06 + reach) & (across < 0.012 + reach)
        tall = cube_pos[:, other, 2] > target[:, 2] + scene.CUBE_EDGE / 2.0
        hand = tall[:, None] & (along < 0.095 + reach) & (across < 0.022 + reach)
        clash += np.where(other == cube[:, None], 0.0, (fingers | hand).astype(float))
    turn = np.abs(candidates - current_yaw[:, None])
    best = np.argmin(clash * 10.0 + turn, axis=1)
    return candidates[rows, best]


def _nearest_face_yaw(cube_yaw: np.ndarray, current_yaw: np.ndarray) -> np.ndarray:
    """The cube yaw plus a multiple of 90 degrees closest to the gripper's current yaw (cubes are symmetric)."""
    quarter = np.pi / 2.0
    return current_yaw + (np.mod(cube_yaw - current_yaw + quarter / 2.0, quarter) - quarter / 2.0)


class PickPlaceExpert:
    """Batched pick-and-place state machine over the env's sub-envs.

    Args:
      env: the env it acts in (for N, device, and episode counters that signal auto-resets).
      plan: ((cube, destination), ...) with cube indices 0..2 and destination a cube index, or None for
        "lift and hold" (lift task).
    """

    def __init__(self, env: EmbeddedFrankaEnv, plan: tuple[tuple[int, int | None], ...],
                 config: ExpertConfig = ExpertConfig()):
        self.env = env
        self.plan = plan
        self.config = config
        n = env.num_envs
        self.phase = np.full(n, APPROACH)
        self.stage = np.zeros(n, dtype=np.int64)
        self.steps_in_phase = np.zeros(n, dtype=np.int64)
        self.grasp_offset = np.zeros((n, 3))  # cube centre minus TCP while held
        self.hold_pos = np.zeros((n, 3))  # where the TCP waits during GRASP/RELEASE/RETREAT
        self.goal_yaw = np.zeros(n)

    def _restart(self, mask: np.ndarray, cube_pos: np.ndarray) -> None:
        """Send ``mask`` envs to APPROACH of the first plan stage whose cube is not yet in place."""
        stage = np.zeros(len(mask), dtype=np.int64)
        for k, (cube, dest) in enumerate(self.plan[:-1]):
            in_place = tasks.cube_on_cube(cube_pos[:, cube], cube_pos[:, dest]) if dest is not None else False
            stage = np.where((stage == k) & in_place, k + 1, stage)
        self.stage[mask] = stage[mask]
        self.phase[mask] = APPROACH
        self.steps_in_phase[mask] = 0

    def __call__(self, obs) -> torch.Tensor:
        group = obs[POLICY_GROUP]
        tcp, tcp_quat = _read_pose(group)
        cube_pos = group["cube_positions"].cpu().numpy().astype(np.float64).reshape(-1, 3, 3)
        cube_yaw = _cube_yaw(group["cube_orientations"].cpu().numpy().astype(np.float64).reshape(-1, 3, 4))
        cfg, n = self.config, self.env.num_envs
        rows = np.arange(n)
        lift_only = self.plan[0][1] is None

        restart = self.env.episode_length_buf.cpu().numpy() == 0  # sub-envs auto-reset by the last step
        restart |= self.steps_in_phase >= _PHASE_BUDGET[self.phase]
        cube = np.array([c for c, _ in self.plan])[self.stage]
        held = cube_pos[rows, cube]
        # A cube that left the fingers while it should be held: start over from what is now on the table.
        carrying = (self.phase >= LIFT) & (self.phase <= LOWER)
        restart |= carrying & (np.linalg.norm(held - tcp - self.grasp_offset, axis=-1) > 0.02)
        if restart.any():
            self._restart(restart, cube_pos)

        cube = np.array([c for c, _ in self.plan])[self.stage]
        dest = np.array([-1 if d is None else d for _, d in self.plan])[self.stage]
        held = cube_pos[rows, cube]
        below = cube_pos[rows, np.maximum(dest, 0)]
        current_yaw = _hand_yaw(tcp_quat)
        on_top = below + np.array([0.0, 0.0, scene.CUBE_EDGE])  # where the held cube's centre goes
        # Servo the held cube, not the TCP: the cube may have shifted in the fingers since the grasp.
        place_tcp = tcp + (on_top + np.array([0.0, 0.0, 0.003]) - held)

        target = tcp.copy()
        yaw = current_yaw.copy()
        close = np.zeros(n, dtype=bool)
        advance = np.zeros(n, dtype=bool)
        phase = self.phase.copy()

        m = phase == APPROACH
        if m.any():
            self.goal_yaw[m] = _grasp_yaw(cube_pos, cube_yaw, cube, current_yaw)[m]
            hover = held + np.array([0.0, 0.0, cfg.hover_height])
            target[m], yaw[m] = hover[m], self.goal_yaw[m]
            advance |= m & (np.linalg.norm(hover - tcp, axis=-1) < 0.01) & (np.abs(yaw - current_yaw) < 0.05)
        m = phase == DESCEND
        if m.any():
            target[m], yaw[m] = held[m], self.goal_yaw[m]
            advance |= m & (np.linalg.norm(held - tcp, axis=-1) < 0.006)
            self.hold_pos[m] = tcp[m]
        m = phase == GRASP
        if m.any():
            target[m], yaw[m], close[m] = self.hold_pos[m], self.goal_yaw[m], True
            advance |= m & (self.steps_in_phase >= cfg.grasp_steps)
            self.grasp_offset[m] = (held - tcp)[m]
        m = phase == LIFT
        if m.any():
            lift_to = self.hold_pos.copy()
            if lift_only:  # go well past the success height; the success ends the episode
                lift_to[:, 2] = tasks.CUBE_REST_Z + tasks.LIFT_HEIGHT + 0.05
            else:
                lift_to[:, 2] = np.maximum(on_top[:, 2], tasks.CUBE_REST_Z) + cfg.carry_height + 0.05
            target[m], yaw[m], close[m] = lift_to[m], self.goal_yaw[m], True
            advance |= m & (not lift_only) & (np.abs(lift_to[:, 2] - tcp[:, 2]) < 0.02)
        m = phase == CARRY
        if m.any():
            self.goal_yaw[m] = _nearest_face_yaw(cube_yaw[rows, np.maximum(dest, 0)], current_yaw)[m]
            carry = place_tcp + np.array([0.0, 0.0, cfg.carry_height])
            target[m], yaw[m], close[m] = carry[m], self.goal_yaw[m], True
            advance |= m & (np.linalg.norm((on_top - held)[:, :2], axis=-1) < 0.004) & (
                np.abs(carry[:, 2] - tcp[:, 2]) < 0.015) & (np.abs(yaw - current_yaw) < 0.05)
        m = phase == LOWER
        if m.any():
            target[m], yaw[m], close[m] = place_tcp[m], self.goal_yaw[m], True
            advance |= m & (np.linalg.norm((held - on_top)[:, :2], axis=-1) < 0.006) & (
                np.abs(held[:, 2] - on_top[:, 2]) < 0.005)
            self.hold_pos[m] = tcp[m]
        m = phase == RELEASE
        if m.any():
            target[m], yaw[m] = self.hold_pos[m], self.goal_yaw[m]
            advance |= m & (self.steps_in_phase >= cfg.release_steps)
        m = phase == RETREAT
        if m.any():
            up = self.hold_pos + np.array([0.0, 0.0, cfg.hover_height])
            target[m], yaw[m] = up[m], self.goal_yaw[m]
            advance |= m & (np.abs(up[:, 2] - tcp[:, 2]) < 0.02)
        m = phase == DONE  # wait, gripper open, for the success check (fingers open, cubes at rest)
        if m.any():
            target[m], yaw[m] = self.hold_pos[m], self.goal_yaw[m]

        action = pose_command(tcp, tcp_quat, target, yaw, close, cfg, self.env.ik.action_scale)
        self._advance(advance)
        return torch.from_numpy(action.astype(np.float32)).to(self.env.device)

    def _advance(self, advance: np.ndarray) -> None:
        self.steps_in_phase += 1
        finished_retreat = advance & (self.phase == RETREAT)
        last_stage = self.stage >= len(self.plan) - 1
        self.stage = np.where(finished_retreat & ~last_stage, self.stage + 1, self.stage)
        next_phase = np.where(self.phase == RETREAT, np.where(last_stage, DONE, APPROACH), self.phase + 1)
        self.phase = np.where(advance, next_phase, self.phase)
        self.steps_in_phase[advance] = 0


class ReachExpert:
    """Moves the TCP straight to ``target_pos`` keeping the gripper pointing down at its current yaw."""

    def __init__(self, env: EmbeddedFrankaEnv, config: ExpertConfig = ExpertConfig()):
        self.env = env
        self.config = config

    def __call__(self, obs) -> torch.Tensor:
        group = obs[POLICY_GROUP]
        tcp, tcp_quat = _read_pose(group)
        target = group["target_pos"].cpu().numpy().astype(np.float64)
        action = pose_command(tcp, tcp_quat, target, _hand_yaw(tcp_quat), np.zeros(len(tcp), dtype=bool),
                              self.config, self.env.ik.action_scale)
        return torch.from_numpy(action.astype(np.float32)).to(self.env.device)


def make_expert(task_id: str, env: EmbeddedFrankaEnv):
    """The scripted expert of ``task_id``; ``expert(obs)`` -> (N, 7) action tensor on ``env.device``."""
    tasks.get_task(task_id)
    if env.task_id != task_id:
        raise ValueError(f"expert for {task_id!r} asked for an env running {env.task_id!r}")
    if task_id == tasks.REACH_ID:
        return ReachExpert(env)
    if task_id == tasks.LIFT_ID:
        return PickPlaceExpert(env, ((1, None),))
    return PickPlaceExpert(env, ((1, 0), (2, 1)))
