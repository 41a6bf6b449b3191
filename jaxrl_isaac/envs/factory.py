"""Builds the env of one config split (``env.train`` or ``env.eval``) behind the env contract.

``env_type: embedded`` (the default, CPU-friendly MuJoCo simulator) or ``env_type: isaaclab`` (optional; needs
IsaacLab and an RTX GPU). Both backends are imported only when selected. The split config is read by attribute
only, so any object with the fields below works (the typed schema in jaxrl_isaac/config, or a namespace):

    env_type, total_num_envs, max_episode_steps, seed, group_size, device ("cpu" | "cuda" | "cuda:N"),
    init_params.{id, task_description, table_cam.{height, width}, wrist_cam.{height, width}, reward_type}
    and optionally init_params.max_episode_steps (overrides the split's when set) and num_workers (embedded only:
    processes that step the sub-envs, default 1 = in-process) and init_params.tiled_rendering (embedded only)
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from jaxrl_isaac.envs.contract import VecEnv

logger = logging.getLogger(__name__)

ENV_TYPES = ("embedded", "isaaclab")


def _camera_size(camera_cfg: Any, name: str) -> tuple[int, int] | None:
    if camera_cfg is None:
        return None
    height, width = camera_cfg.height, camera_cfg.width
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise ValueError(f"init_params.{name} must have positive int height and width, got {height!r}x{width!r}")
    return height, width


def make_env(split_cfg: Any, *, seed_offset: int = 0, num_envs: int | None = None) -> VecEnv:
    """Builds the split's env.

    Args:
      split_cfg: the env split config (fields above).
      seed_offset: added to ``split_cfg.seed`` (e.g. the env worker's rank), as RLinf's ``seed + seed_offset``.
      num_envs: sub-envs in this process; None means ``split_cfg.total_num_envs``.
    Returns:
      A ``VecEnv`` (not yet reset: call ``reset(seed=...)`` first).
    """
    env_type = split_cfg.env_type
    if env_type not in ENV_TYPES:
        raise ValueError(f"env_type must be one of {ENV_TYPES}, got {env_type!r}")
    init_params = split_cfg.init_params
    num_envs = split_cfg.total_num_envs if num_envs is None else num_envs
    seed = split_cfg.seed + seed_offset
    table_cam = _camera_size(init_params.table_cam, "table_cam")
    wrist_cam = _camera_size(init_params.wrist_cam, "wrist_cam")
    # init_params.max_episode_steps (RLinf's interpolated copy) wins when set; otherwise the split's.
    max_episode_steps = getattr(init_params, "max_episode_steps", None) or split_cfg.max_episode_steps

    if env_type == "embedded":
        embedded = importlib.import_module("jaxrl_isaac.envs.embedded")
        num_workers = getattr(split_cfg, "num_workers", 1)
        # Passed only when > 1, so callers and stubs of embedded.make written before num_workers keep working.
        parallel = {} if num_workers == 1 else {"num_workers": num_workers}
        if getattr(init_params, "tiled_rendering", False):
            parallel["tiled_rendering"] = True
        return embedded.make(init_params.id, num_envs, device=split_cfg.device, seed=seed, table_cam=table_cam,
                             wrist_cam=wrist_cam, max_episode_steps=max_episode_steps,
                             group_size=split_cfg.group_size, reward_type=init_params.reward_type, **parallel)

    from jaxrl_isaac.envs.isaaclab import get_isaaclab_task, make_isaaclab_env

    if split_cfg.group_size != 1:
        raise ValueError(f"group_size={split_cfg.group_size} needs identical reset states within each group (GRPO), "
                         f"but IsaacLab randomises every sub-env's reset independently; use group_size=1 (PPO) or "
                         f"env_type=embedded")
    spec = get_isaaclab_task(init_params.id)
    reward_type = init_params.reward_type
    if reward_type not in (None, "sparse"):
        if not spec.has_reward_terms:
            raise ValueError(f"init_params.reward_type={reward_type!r}, but task {init_params.id!r} has no reward "
                             f"terms: the IsaacLab backend gives it the sparse success reward only (reward_type=sparse)")
        logger.info("IsaacLab task %r: its own reward terms define the reward (reward_type=%r is not applied)",
                    init_params.id, reward_type)
    # IsaacLab wants an explicit GPU; "cuda" means the first visible one (each env process sees its own GPU).
    device = "cuda:0" if split_cfg.device in (None, "cuda") else split_cfg.device
    return make_isaaclab_env(init_params.id, num_envs=num_envs, device=device, seed=seed, table_cam=table_cam,
                             wrist_cam=wrist_cam, max_episode_steps=max_episode_steps,
                             task_description=init_params.task_description)


def needs_own_process(split_cfg: Any, other_split_cfg: Any | None) -> bool:
    """Whether ``split_cfg``'s env must run in a process of its own because this process holds ``other_split_cfg``'s.

    Kit (Isaac Sim) runs one stage per process, so a second IsaacLab env cannot share a process with a first.
    """
    return (other_split_cfg is not None and split_cfg.env_type == "isaaclab"
            and other_split_cfg.env_type == "isaaclab")


def make_env_process(split_cfg: Any, *, name: str = "env", **make_env_kwargs: Any) -> VecEnv:
    """``make_env(split_cfg, **make_env_kwargs)`` in a spawned process, behind the same contract (``EnvProcess``)."""
    import functools

    from jaxrl_isaac.envs.env_process import EnvProcess
    return EnvProcess(functools.partial(make_env, split_cfg, **make_env_kwargs), name=name)
