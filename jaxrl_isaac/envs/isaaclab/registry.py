"""IsaacLab tasks this backend knows how to drive (the idea of RLinf's ``REGISTER_ISAACLAB_ENVS``).

A task spec says how to read one IsaacLab task: which termination term is success and which are failures, whether
the task has reward terms, which observation terms feed the model, which scene cameras to resize, and an optional
hook for extra env-cfg edits. Importing this module imports nothing from IsaacLab.

IsaacLab 3.0 renamed the contributed tasks (CHANGELOG 8.0.0): ``Isaac-<name>-v0`` became ``IsaacContrib-<name>``.
The stack-cube specs are registered under both spellings; the launcher maps a user's id to whichever spelling the
installed IsaacLab registers.

Register your own task from your module, before building the env::

    from jaxrl_isaac.envs.isaaclab import IsaacLabTaskSpec, register_isaaclab_task

    register_isaaclab_task("MyLab-Stack-Two-Cubes-Franka-v0", IsaacLabTaskSpec(
        task_description="Stack the red block on the blue block.",
        success_term="success", failure_terms=("cube_1_dropping", "cube_2_dropping"), has_reward_terms=False))
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

from jaxrl_isaac.envs.contract import CAMERA_KEYS, POLICY_GROUP, PROPRIO_KEYS, UnknownTaskId
from jaxrl_isaac.envs.obs_mapping import FRANKA_EEF_STATE_KEYS, StateFn, eef_axis_angle_gripper_state

ApiVersion = str  # "3.0" or "2.x"
API_VERSIONS = ("3.0", "2.x")


@dataclasses.dataclass(frozen=True)
class ObsTermNames:
    """Where the contract's policy terms live in the task's observations (identity for the stack tasks)."""

    group: str = POLICY_GROUP
    table_cam: str = "table_cam"
    wrist_cam: str = "wrist_cam"
    eef_pos: str = "eef_pos"
    eef_quat: str = "eef_quat"
    gripper_pos: str = "gripper_pos"
    joint_pos: str = "joint_pos"
    joint_vel: str = "joint_vel"

    def renames(self) -> dict[str, str]:
        """{contract term: task term} for the terms whose names differ."""
        return {key: getattr(self, key) for key in (*CAMERA_KEYS, *PROPRIO_KEYS) if getattr(self, key) != key}


@dataclasses.dataclass(frozen=True)
class IsaacLabTaskSpec:
    """How to build, read and score one IsaacLab task.

    Attributes:
      task_description: default instruction (``init_params.task_description`` overrides it).
      success_term: termination term that means the task was solved.
      failure_terms: termination terms that mean failure (a dropped cube); a step where one fires is never a success.
      has_reward_terms: whether the task's ``RewardsCfg`` defines terms. If not, IsaacLab's reward is always 0 and the
        adapter returns ``sparse_success_reward`` on success steps instead; if so, the env's reward passes through.
      sparse_success_reward: reward on a success step when the task has no reward terms. 1.0 matches RLinf's
        Rewarded variant (a ``success`` term of weight 20 times step_dt 0.05 s).
      camera_sensors: names of the table and wrist camera sensors on ``env_cfg.scene`` (resized from the config).
      obs_terms: where the contract's policy terms are in the task's observations.
      state_fn: builds the (N, D) model state from the (contract-named) policy group.
      state_keys: metadata.json state keys and widths that ``state_fn``'s columns are (RLinf's 8-dim Franka state).
      configure_env_cfg: optional hook ``(env_cfg) -> None`` run after the standard overrides, before ``gym.make``.
      provided_by: where the task comes from when stock IsaacLab does not register it (named in the error).
    """

    task_description: str
    success_term: str = "success"
    failure_terms: tuple[str, ...] = ()
    has_reward_terms: bool = False
    sparse_success_reward: float = 1.0
    camera_sensors: tuple[str, str] = ("table_cam", "wrist_cam")
    obs_terms: ObsTermNames = ObsTermNames()
    state_fn: StateFn = eef_axis_angle_gripper_state
    state_keys: tuple[tuple[str, int], ...] = FRANKA_EEF_STATE_KEYS
    configure_env_cfg: Callable[[Any], None] | None = None
    provided_by: str | None = None

    def __post_init__(self):
        if not isinstance(self.task_description, str) or not self.task_description:
            raise ValueError(f"IsaacLabTaskSpec.task_description must be a non-empty str, got {self.task_description!r}")
        if isinstance(self.failure_terms, str):
            raise TypeError(f"IsaacLabTaskSpec.failure_terms must be a tuple of term names, got the str "
                            f"{self.failure_terms!r}")
        if self.success_term in self.failure_terms:
            raise ValueError(f"IsaacLabTaskSpec: {self.success_term!r} is both the success term and a failure term")
        if len(self.camera_sensors) != 2:
            raise ValueError(f"IsaacLabTaskSpec.camera_sensors must be (table, wrist), got {self.camera_sensors!r}")


_TASKS: dict[str, IsaacLabTaskSpec] = {}


def register_isaaclab_task(task_id: str, spec: IsaacLabTaskSpec, *, replace: bool = False) -> IsaacLabTaskSpec:
    """Registers ``spec`` under the exact IsaacLab id ``task_id``; returns ``spec``.

    Register each spelling you want to accept (e.g. both ``Isaac-X-v0`` and ``IsaacContrib-X``), or rely on the
    launcher's mapping between conventions for the gym id while registering the one your config uses.
    """
    if not isinstance(task_id, str) or not task_id:
        raise ValueError(f"task_id must be a non-empty str, got {task_id!r}")
    if not isinstance(spec, IsaacLabTaskSpec):
        raise TypeError(f"spec for {task_id!r} must be an IsaacLabTaskSpec, got {type(spec).__name__}")
    if task_id in _TASKS and not replace and _TASKS[task_id] != spec:
        raise ValueError(f"IsaacLab task {task_id!r} is already registered; pass replace=True to override it")
    _TASKS[task_id] = spec
    return spec


def registered_isaaclab_tasks() -> tuple[str, ...]:
    """Registered task ids, sorted."""
    return tuple(sorted(_TASKS))


def get_isaaclab_task(task_id: str) -> IsaacLabTaskSpec:
    """The spec registered under ``task_id``; one-line error listing the registered ids otherwise."""
    try:
        return _TASKS[task_id]
    except KeyError:
        raise UnknownTaskId(f"unknown IsaacLab task id {task_id!r}; registered: {', '.join(registered_isaaclab_tasks())} "
                       f"(add yours with jaxrl_isaac.envs.isaaclab.register_isaaclab_task)") from None


_V2_ID = re.compile(r"^Isaac-(?P<name>.+)-v(?P<version>\d+)$")
_V3_CONTRIB_ID = re.compile(r"^IsaacContrib-(?P<name>.+)$")


def id_in_convention(task_id: str, api_version: ApiVersion) -> str:
    """Spells ``task_id`` the way IsaacLab ``api_version`` names contributed tasks.

    ``Isaac-<name>-v0`` <-> ``IsaacContrib-<name>``. Only contributed tasks were renamed in 3.0, so the launcher uses
    this as a fallback when the id as given is not registered.
    """
    if api_version == "3.0":
        match = _V2_ID.match(task_id)
        return f"IsaacContrib-{match['name']}" if match and match["version"] == "0" else task_id
    if api_version == "2.x":
        match = _V3_CONTRIB_ID.match(task_id)
        return f"Isaac-{match['name']}-v0" if match else task_id
    raise ValueError(f"api_version must be one of {API_VERSIONS}, got {api_version!r}")


# --- The Franka cube-stack tasks ------------------------------------------------------------------------------------

# RLinf's instruction for this task (its isaaclab_stack_cube env config). Cube 1 is blue,
# cube 2 red, cube 3 green in the stack scene.
STACK_CUBE_TASK_DESCRIPTION = "Stack the red block on the blue block, then stack the green block on the red block."
STACK_CUBE_FAILURE_TERMS = ("cube_1_dropping", "cube_2_dropping", "cube_3_dropping")
RLINF_ISAACLAB_FORK = "RLinf's IsaacLab fork (github.com/RLinf/IsaacLab, based on IsaacLab 2.x)"

_STACK_CUBE = IsaacLabTaskSpec(task_description=STACK_CUBE_TASK_DESCRIPTION, failure_terms=STACK_CUBE_FAILURE_TERMS)

STACK_CUBE_TASK_IDS = (
    # Stock IsaacLab: imitation-learning tasks without reward terms (the adapter adds the sparse success reward).
    "Isaac-Stack-Cube-Franka-IK-Rel-Visuomotor-v0",
    "IsaacContrib-Stack-Cube-Franka-IK-Rel-Visuomotor",
    "Isaac-Stack-Cube-Franka-IK-Rel-Visuomotor-Cosmos-v0",
    "IsaacContrib-Stack-Cube-Franka-IK-Rel-Visuomotor-Cosmos",
    # RLinf's fork: the Visuomotor task plus a `success` reward term (weight 20) and tiled cameras.
    "Isaac-Stack-Cube-Franka-IK-Rel-Visuomotor-Rewarded-v0",
    "IsaacContrib-Stack-Cube-Franka-IK-Rel-Visuomotor-Rewarded",
)

for _task_id in STACK_CUBE_TASK_IDS:
    register_isaaclab_task(_task_id, dataclasses.replace(_STACK_CUBE, has_reward_terms=True,
                                                         provided_by=RLINF_ISAACLAB_FORK)
                           if "Rewarded" in _task_id else _STACK_CUBE)
del _task_id
