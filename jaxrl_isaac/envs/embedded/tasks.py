"""Task definitions for the embedded Franka scene: ids, descriptions, reset distributions, success tests and
shaping potentials. Everything here is batched numpy over sub-envs and free of simulator calls, so the success
detectors can be tested on hand-made states.

Tasks (all share the scene, the 7-D relative-pose + binary-gripper action and the 20 Hz control rate):

* ``Embedded-Reach-Franka-IK-Rel-v0``: bring the TCP within ``REACH_TOLERANCE`` (0.02 m) of a random target.
* ``Embedded-Lift-Cube-Franka-IK-Rel-v0``: grasp cube_2 (red) and raise it ``LIFT_HEIGHT`` (0.1 m) above its
  resting height on the table.
* ``Embedded-Stack-Cube-Franka-IK-Rel-Visuomotor-v0``: IsaacLab's visuomotor stack task: red on blue, green on
  red, gripper released, cubes at rest. A VLA's state is RLinf's 8 dims: the cubes are seen only by the cameras.
* ``Embedded-Stack-Cube-Franka-IK-Rel-v0``: the same task with the cube poses in the VLA's state (20 dims,
  ``obs_mapping.STACK_STATE_KEYS``), as IsaacLab's state-based ``Isaac-Stack-Cube-Franka-IK-Rel-v0``. A small policy
  learns it without having to learn vision first.

Every task terminates on success and on a dropped cube (any cube centre below table top - 0.05 m, i.e. pushed off
the table), and truncates at ``max_episode_steps``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from jaxrl_isaac.envs import obs_mapping
from jaxrl_isaac.envs.contract import UnknownTaskId
from jaxrl_isaac.envs.embedded import scene

REACH_TOLERANCE = 0.02  # m, TCP-to-target distance that counts as reached
LIFT_HEIGHT = 0.1  # m above the cube's resting height
CUBE_REST_Z = scene.TABLE_TOP_Z + scene.CUBE_EDGE / 2.0
DROP_Z = scene.TABLE_TOP_Z - 0.05  # IsaacLab's cube_*_dropping: root height below -0.05

# cubes_stacked thresholds (IsaacLab mdp/terminations.py defaults).
STACK_XY_THRESHOLD = 0.04
STACK_HEIGHT_DIFF = scene.CUBE_EDGE
STACK_HEIGHT_THRESHOLD = 0.005
STACK_MAX_LIN_VEL = 0.05  # m/s, every cube must be at rest
# "Released" exactly as IsaacLab: each finger isclose(q, 0.04, atol=1e-4, rtol=1e-4). Reachable here: a finger
# driven to its 0.04 m joint limit settles within ~5e-6 m once it no longer touches a cube.
GRIPPER_OPEN_ATOL = 1e-4
GRIPPER_OPEN_RTOL = 1e-4

# IsaacLab's reset distribution for the stack cubes (randomize_object_pose).
CUBE_X_RANGE = (0.4, 0.6)
CUBE_Y_RANGE = (-0.1, 0.1)
CUBE_YAW_RANGE = (-1.0, 1.0)
CUBE_MIN_SEPARATION = 0.1
CUBE_MAX_SAMPLE_TRIES = 5000
JOINT_NOISE_STD = 0.02  # randomize_joint_by_gaussian_offset std, arm joints only

# Reach targets: a box in front of the robot above the cubes, inside the table camera's view.
REACH_TARGET_LOW = np.array([0.35, -0.25, 0.1])
REACH_TARGET_HIGH = np.array([0.65, 0.25, 0.3])


@dataclasses.dataclass(frozen=True)
class SimState:
    """What the task functions see of a batch of N sub-envs (env frame = robot base frame)."""

    tcp_pos: np.ndarray  # (N, 3)
    finger_q: np.ndarray  # (N, 2) finger joint positions, 0.04 = open
    cube_pos: np.ndarray  # (N, 3, 3) cube_1, cube_2, cube_3 centres
    cube_linvel: np.ndarray  # (N, 3, 3) world-frame linear velocities
    target_pos: np.ndarray  # (N, 3) reach target (zeros for other tasks)


@dataclasses.dataclass(frozen=True)
class InitialStates:
    """A batch of sampled episode starts."""

    arm_q: np.ndarray  # (n, 7) absolute arm joint positions
    cube_pos: np.ndarray  # (n, 3, 3)
    cube_yaw: np.ndarray  # (n, 3)
    target_pos: np.ndarray  # (n, 3)

    def repeat(self, times: int) -> "InitialStates":
        """Each start repeated ``times`` times in a row (GRPO groups share a start)."""
        return InitialStates(*(np.repeat(getattr(self, f.name), times, axis=0) for f in dataclasses.fields(self)))


# --- Success and failure tests ---------------------------------------------------------------------------------

def cubes_dropped(cube_pos: np.ndarray) -> np.ndarray:
    """(N,) bool: some cube fell below the table top by more than 5 cm."""
    return np.any(cube_pos[..., 2] < DROP_Z, axis=-1)


def gripper_open(finger_q: np.ndarray) -> np.ndarray:
    """(N,) bool: both fingers at the open position (0.04 m), with torch.isclose's tolerance rule."""
    tolerance = GRIPPER_OPEN_ATOL + GRIPPER_OPEN_RTOL * scene.FINGER_OPEN
    return np.all(np.abs(finger_q - scene.FINGER_OPEN) <= tolerance, axis=-1)


def cube_on_cube(upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """(N,) bool: ``upper`` rests on ``lower`` (xy within 0.04 m, height gap within 0.0468 +- 0.005 m, above it).

    IsaacLab only bounds the gap from above (gap - 0.0468 < 0.005); for non-penetrating cubes whose centres are
    within 0.04 m in xy the gap cannot be much below 0.0468, so the two-sided test agrees on physical states.
    """
    diff = upper - lower
    xy_ok = np.linalg.norm(diff[..., :2], axis=-1) < STACK_XY_THRESHOLD
    gap_ok = np.abs(diff[..., 2] - STACK_HEIGHT_DIFF) < STACK_HEIGHT_THRESHOLD
    return xy_ok & gap_ok & (diff[..., 2] > 0.0)


def cubes_stacked(cube_pos: np.ndarray, cube_linvel: np.ndarray, finger_q: np.ndarray) -> np.ndarray:
    """IsaacLab's ``cubes_stacked``: cube_2 on cube_1, cube_3 on cube_2, gripper released, all cubes at rest.

    Args:
      cube_pos: (N, 3, 3); cube_linvel: (N, 3, 3); finger_q: (N, 2).
    Returns:
      (N,) bool.
    """
    on_12 = cube_on_cube(cube_pos[:, 1], cube_pos[:, 0])
    on_23 = cube_on_cube(cube_pos[:, 2], cube_pos[:, 1])
    at_rest = np.all(np.linalg.norm(cube_linvel, axis=-1) < STACK_MAX_LIN_VEL, axis=-1)
    return on_12 & on_23 & gripper_open(finger_q) & at_rest


def cube_grasped(tcp_pos: np.ndarray, cube: np.ndarray, finger_q: np.ndarray) -> np.ndarray:
    """(N,) bool: the TCP is at the cube and the fingers are closed on something cube-sized (not open, not shut)."""
    near = np.linalg.norm(cube - tcp_pos, axis=-1) < 0.03
    closing = np.all(finger_q < scene.FINGER_OPEN - 0.005, axis=-1) & np.all(finger_q > 0.01, axis=-1)
    return near & closing


def reach_success(state: SimState) -> np.ndarray:
    return np.linalg.norm(state.tcp_pos - state.target_pos, axis=-1) < REACH_TOLERANCE


def lift_success(state: SimState) -> np.ndarray:
    return state.cube_pos[:, 1, 2] >= CUBE_REST_Z + LIFT_HEIGHT


def stack_success(state: SimState) -> np.ndarray:
    return cubes_stacked(state.cube_pos, state.cube_linvel, state.finger_q)


# --- Shaping potentials (reward_type="shaped") ------------------------------------------------------------------
# The shaped reward is potential-based: r = success + phi(s') - phi(s), phi in [0, 1]. Over an episode it sums to
# success + phi(last) - phi(first), so it cannot be farmed by hovering and keeps the optimal policy of the sparse task.

def _closeness(distance: np.ndarray) -> np.ndarray:
    return 1.0 - np.tanh(10.0 * distance)


def reach_potential(state: SimState) -> np.ndarray:
    """phi = 1 - tanh(10 * |tcp - target|)."""
    return _closeness(np.linalg.norm(state.tcp_pos - state.target_pos, axis=-1))


def _pick_place_potential(state: SimState, cube: int, goal: np.ndarray) -> np.ndarray:
    """Mean of: TCP close to the cube, cube grasped, cube close to ``goal`` (N, 3)."""
    reach = _closeness(np.linalg.norm(state.cube_pos[:, cube] - state.tcp_pos, axis=-1))
    grasped = cube_grasped(state.tcp_pos, state.cube_pos[:, cube], state.finger_q).astype(np.float64)
    place = _closeness(np.linalg.norm(state.cube_pos[:, cube] - goal, axis=-1))
    return (reach + grasped + place) / 3.0


def lift_potential(state: SimState) -> np.ndarray:
    """Mean of reach-cube_2, grasped, and closeness of cube_2 to LIFT_HEIGHT above its resting point."""
    goal = state.cube_pos[:, 1].copy()
    goal[:, 2] = CUBE_REST_Z + LIFT_HEIGHT
    return _pick_place_potential(state, 1, goal)


def stack_potential(state: SimState) -> np.ndarray:
    """Two stages of 0.5 each: (reach, grasp, place) for cube_2 onto cube_1, then for cube_3 onto cube_2."""
    lift = np.array([0.0, 0.0, scene.CUBE_EDGE])
    first_done = cube_on_cube(state.cube_pos[:, 1], state.cube_pos[:, 0])
    first = _pick_place_potential(state, 1, state.cube_pos[:, 0] + lift)
    second = _pick_place_potential(state, 2, state.cube_pos[:, 1] + lift)
    return np.where(first_done, 0.5 + 0.5 * second, 0.5 * first)


# --- Reset distributions ------------------------------------------------------------------------------------------

def sample_cube_layout(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One layout of the three cubes as IsaacLab's ``sample_object_poses``: uniform x, y, yaw, rejection-sampled
    until every pair is more than 0.1 m apart (the last try is accepted). Returns (3, 3) positions, (3,) yaws."""
    positions: list[np.ndarray] = []
    yaws = rng.uniform(*CUBE_YAW_RANGE, size=3)
    for _ in range(3):
        for attempt in range(CUBE_MAX_SAMPLE_TRIES):
            candidate = np.array([rng.uniform(*CUBE_X_RANGE), rng.uniform(*CUBE_Y_RANGE), CUBE_REST_Z])
            if (not positions or attempt == CUBE_MAX_SAMPLE_TRIES - 1
                    or all(np.linalg.norm(candidate - p) > CUBE_MIN_SEPARATION for p in positions)):
                positions.append(candidate)
                break
    return np.stack(positions), yaws


def sample_initial_states(rng: np.random.Generator, count: int, with_reach_target: bool) -> InitialStates:
    """``count`` independent episode starts: default arm pose + N(0, 0.02) joint noise clamped to the limits,
    a random cube layout, and (for reach) a random target."""
    limits = scene.ARM_JOINT_LIMITS
    arm_q = np.clip(scene.DEFAULT_JOINT_POS[:7] + rng.normal(0.0, JOINT_NOISE_STD, size=(count, 7)),
                    limits[:, 0], limits[:, 1])
    layouts = [sample_cube_layout(rng) for _ in range(count)]
    target = (rng.uniform(REACH_TARGET_LOW, REACH_TARGET_HIGH, size=(count, 3)) if with_reach_target
              else np.zeros((count, 3)))
    return InitialStates(arm_q=arm_q, cube_pos=np.stack([p for p, _ in layouts]),
                         cube_yaw=np.stack([y for _, y in layouts]), target_pos=target)


# --- Registry --------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """An embedded task. ``state_keys`` / ``state_fn``: the VLA's proprioceptive state (metadata.json keys and
    widths, and the builder from the policy group); RLinf's 8-dim Franka state unless the task needs more."""

    task_id: str
    description: str  # default language instruction
    success: Callable[[SimState], np.ndarray]
    potential: Callable[[SimState], np.ndarray]
    has_reach_target: bool = False
    state_keys: tuple[tuple[str, int], ...] = obs_mapping.FRANKA_EEF_STATE_KEYS
    state_fn: obs_mapping.StateFn = obs_mapping.eef_axis_angle_gripper_state


REACH_ID = "Embedded-Reach-Franka-IK-Rel-v0"
LIFT_ID = "Embedded-Lift-Cube-Franka-IK-Rel-v0"
STACK_ID = "Embedded-Stack-Cube-Franka-IK-Rel-Visuomotor-v0"
STACK_STATE_ID = "Embedded-Stack-Cube-Franka-IK-Rel-v0"
STACK_IDS = (STACK_ID, STACK_STATE_ID)
_STACK_DESCRIPTION = "Stack the red block on the blue block, then stack the green block on the red block."

TASKS: dict[str, TaskSpec] = {
    REACH_ID: TaskSpec(REACH_ID, "Move the gripper to the orange target.", reach_success, reach_potential,
                       has_reach_target=True, state_keys=obs_mapping.REACH_STATE_KEYS,
                       state_fn=obs_mapping.eef_gripper_target_state),
    LIFT_ID: TaskSpec(LIFT_ID, "Pick up the red block and lift it.", lift_success, lift_potential),
    STACK_ID: TaskSpec(STACK_ID, _STACK_DESCRIPTION, stack_success, stack_potential),
    STACK_STATE_ID: TaskSpec(STACK_STATE_ID, _STACK_DESCRIPTION, stack_success, stack_potential,
                             state_keys=obs_mapping.STACK_STATE_KEYS, state_fn=obs_mapping.eef_gripper_cubes_state),
}
TASK_IDS: tuple[str, ...] = tuple(TASKS)


def get_task(task_id: str) -> TaskSpec:
    if task_id not in TASKS:
        raise UnknownTaskId(f"unknown embedded task id {task_id!r}; known ids: {', '.join(TASK_IDS)}")
    return TASKS[task_id]


def task_description(task_id: str) -> str:
    """The default language instruction of a task."""
    return get_task(task_id).description
