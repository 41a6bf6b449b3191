"""The IsaacLab backend: launcher (IsaacLab 3.0, 2.x fallback), task registry and the env-contract adapter.

Importing this package imports nothing from IsaacLab; ``make_isaaclab_env`` does, and raises
``IsaacLabNotInstalled`` (one line: what is missing, how to install it) when it is absent.
"""

from jaxrl_isaac.envs.isaaclab.adapter import IsaacLabEnv, make_isaaclab_env
from jaxrl_isaac.envs.isaaclab.launcher import (EnvCfgOverrides, IsaacLabLauncher, IsaacLabNotInstalled,
                                                 detect_api_version, launch_isaaclab)
from jaxrl_isaac.envs.isaaclab.registry import (STACK_CUBE_TASK_IDS, IsaacLabTaskSpec, ObsTermNames,
                                                 get_isaaclab_task, id_in_convention, register_isaaclab_task,
                                                 registered_isaaclab_tasks)

__all__ = [
    "EnvCfgOverrides",
    "IsaacLabEnv",
    "IsaacLabLauncher",
    "IsaacLabNotInstalled",
    "IsaacLabTaskSpec",
    "ObsTermNames",
    "STACK_CUBE_TASK_IDS",
    "detect_api_version",
    "get_isaaclab_task",
    "id_in_convention",
    "launch_isaaclab",
    "make_isaaclab_env",
    "register_isaaclab_task",
    "registered_isaaclab_tasks",
]
