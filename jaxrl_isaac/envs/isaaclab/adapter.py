"""``IsaacLabEnv``: the env contract (contract.py) over a raw IsaacLab ``ManagerBasedRLEnv``.

What it adds to IsaacLab's own ``step``:
  * the action is validated first (one-line errors) and then passed through untouched;
  * ``extras["success"]`` (N,) bool: the task's success termination term fired on this step and no failure term
    did (a dropped cube is never a success: RLinf's old ``success_once |= terminations`` counted drops, fixed in
    RLinf PR #686 together with issue #716); ``extras["dropped"]`` (N,) bool: a failure term fired;
  * for tasks without reward terms (stock Visuomotor and Cosmos: IsaacLab's reward is always 0) the reward is
    ``spec.sparse_success_reward`` (1.0) on success steps, as in RLinf's Rewarded variant; tasks with reward terms
    pass their reward through.

Success is read per env from the termination manager (``termination_manager.get_term(success_term)``, this step's
value of the term). ``extras["log"]["Episode_Termination/success"]`` is not used: it is a count over the envs
reset in the step, so it cannot say which env succeeded.

Buffer ownership: ``reward``, ``terminated`` and ``truncated`` are IsaacLab's persistent buffers, overwritten in
place by the next ``step`` (the sparse reward lives in one buffer of ours with the same rule). Nothing is cloned
here: a consumer that keeps them past the next ``step`` (or hands them to JAX zero-copy) must copy them first.
``extras["success"]`` and ``extras["dropped"]`` are fresh tensors every step.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Mapping

import torch

from jaxrl_isaac.envs import obs_mapping
from jaxrl_isaac.envs.contract import POLICY_GROUP, validate_action
from jaxrl_isaac.envs.isaaclab.launcher import EnvCfgOverrides, IsaacLabLauncher, ModuleSource, launch_isaaclab
from jaxrl_isaac.envs.isaaclab.registry import IsaacLabTaskSpec, get_isaaclab_task

logger = logging.getLogger(__name__)


class _ContractNamedGroup(Mapping):
    """A view of a task's observation group under the contract's term names; reads nothing until indexed."""

    def __init__(self, group: Mapping[str, torch.Tensor], renames: Mapping[str, str]):
        self._group = group
        self._renames = dict(renames)  # contract name -> task name
        self._hidden = set(self._renames.values())

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._group[self._renames.get(key, key)]

    def __iter__(self) -> Iterator[str]:
        yield from self._renames
        yield from (key for key in self._group if key not in self._hidden and key not in self._renames)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class IsaacLabEnv:
    """An IsaacLab task env behind the contract's ``VecEnv`` interface.

    Attributes:
      num_envs, device, action_dim: from the raw env (``action_manager.total_action_dim``).
      quat_order: "xyzw" on IsaacLab 3.0, "wxyz" on 2.x (the ``eef_quat`` term's order).
      api_version: "3.0" or "2.x".
      task_id: the id as the user gave it; spec: its ``IsaacLabTaskSpec``; task_description: the instruction.
    """

    def __init__(self, raw_env: Any, launcher: IsaacLabLauncher, spec: IsaacLabTaskSpec, *, task_id: str,
                 task_description: str | None = None):
        self._env = raw_env
        self._launcher = launcher
        self.spec = spec
        self.task_id = task_id
        self.task_description = task_description or spec.task_description
        self.api_version = launcher.api_version
        self.quat_order = launcher.quat_order
        self.num_envs = int(raw_env.num_envs)
        self.device = torch.device(raw_env.device)
        self.action_dim = int(raw_env.action_manager.total_action_dim)
        self._check_task_matches_spec()
        self._renames = spec.obs_terms.renames()
        self._obs_group = spec.obs_terms.group
        self._sparse_reward = torch.zeros(self.num_envs, dtype=torch.float32, device=self.device)
        self._closed = False

    def _check_task_matches_spec(self) -> None:
        terminations = getattr(self._env, "termination_manager", None)
        if terminations is None:
            raise TypeError(f"task {self.task_id!r}: the env has no termination_manager (a DirectRLEnv?); the adapter "
                            f"reads per-env success from a manager-based env's termination terms")
        active = list(terminations.active_terms)
        missing = [term for term in (self.spec.success_term, *self.spec.failure_terms) if term not in active]
        if missing:
            raise ValueError(f"task {self.task_id!r}: termination terms {missing} from its IsaacLabTaskSpec are not "
                             f"in the env's {active}")
        rewards = getattr(self._env, "reward_manager", None)
        reward_terms = list(rewards.active_terms) if rewards is not None else []
        if bool(reward_terms) != self.spec.has_reward_terms:
            raise ValueError(f"task {self.task_id!r}: its IsaacLabTaskSpec says has_reward_terms="
                             f"{self.spec.has_reward_terms} but the env's reward terms are {reward_terms}")

    @property
    def unwrapped(self) -> Any:
        """The raw IsaacLab env."""
        return self._env

    @property
    def step_dt(self) -> float:
        """Seconds per env step (``sim.dt * decimation``; 0.05 for the stack tasks)."""
        return float(self._env.step_dt)

    @property
    def max_episode_length(self) -> int:
        """Env steps until IsaacLab's ``time_out`` truncates an episode."""
        return int(self._env.max_episode_length)

    def _to_contract_obs(self, obs: Mapping[str, Any]) -> Mapping[str, Any]:
        if not self._renames and self._obs_group == POLICY_GROUP:
            return obs
        return {**obs, POLICY_GROUP: _ContractNamedGroup(obs[self._obs_group], self._renames)}

    def _outcome(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(success, dropped), fresh (N,) bool tensors for the step just taken."""
        terminations = self._env.termination_manager
        dropped = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        for term in self.spec.failure_terms:
            dropped |= terminations.get_term(term).bool()
        success = terminations.get_term(self.spec.success_term).bool() & ~dropped
        return success, dropped

    def reset(self, seed: int | None = None, env_ids: Any = None, options: dict | None = None
              ) -> tuple[Mapping[str, Mapping[str, torch.Tensor]], dict]:
        """Resets all sub-envs (or ``env_ids``); ``seed`` reseeds IsaacLab's RNGs."""
        kwargs: dict[str, Any] = {"seed": seed, "options": options}
        if env_ids is not None:  # 3.0 defaults env_ids to slice(None) and does not accept None everywhere
            kwargs["env_ids"] = env_ids
        obs, raw_extras = self._env.reset(**kwargs)
        no_outcome = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        extras = {**raw_extras, "success": no_outcome, "dropped": no_outcome.clone()}
        return self._to_contract_obs(obs), extras

    def step(self, action: torch.Tensor) -> tuple[
            Mapping[str, Mapping[str, torch.Tensor]], torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """One env step for every sub-env (20 Hz for the stack tasks); same-step auto-reset happens inside.

        Args:
          action: (num_envs, action_dim) float tensor on ``device``; for the stack tasks 6-D relative IK pose
            (scaled 0.5 by IsaacLab) plus a gripper command (< 0 closes).
        Returns:
          ``(obs, reward (N,) f32, terminated (N,) bool, truncated (N,) bool, extras)``; see the module docstring for
          which of these are reused in place.
        """
        action = validate_action(action, self.num_envs, self.action_dim, self.device)
        with torch.no_grad():
            obs, reward, terminated, truncated, raw_extras = self._env.step(action)
        success, dropped = self._outcome()
        if not self.spec.has_reward_terms:
            reward = self._sparse_reward.copy_(success).mul_(self.spec.sparse_success_reward)
        extras = {**raw_extras, "success": success, "dropped": dropped}
        return self._to_contract_obs(obs), reward, terminated, truncated, extras

    def model_inputs(self, obs: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, Any]:
        """``obs_mapping.to_model_inputs`` of ``obs["policy"]`` with this task's quaternion order and state builder."""
        return obs_mapping.to_model_inputs(obs[POLICY_GROUP], self.quat_order, self.task_description,
                                           state_fn=self.spec.state_fn,
                                           state_dim=sum(d for _, d in self.spec.state_keys))

    def close(self) -> None:
        """Closes the env, then the IsaacLab app. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._env.close()
        finally:
            self._launcher.close()


def make_isaaclab_env(task_id: str, *, num_envs: int, device: str = "cuda:0", seed: int = 0,
                      table_cam: tuple[int, int] | None = None, wrist_cam: tuple[int, int] | None = None,
                      max_episode_steps: int | None = None, task_description: str | None = None,
                      modules: ModuleSource | None = None) -> IsaacLabEnv:
    """Starts IsaacLab and builds the registered task ``task_id`` behind the env contract.

    Args:
      task_id: a registered id in either convention (``Isaac-...-v0`` or ``IsaacContrib-...``).
      num_envs: sub-envs in this process.
      device: simulation device, e.g. "cuda:0".
      seed: ``env_cfg.seed``.
      table_cam, wrist_cam: (height, width) of the two cameras; None keeps the task's size (200x200 for stack).
      max_episode_steps: IsaacLab's ``time_out`` after this many steps; None keeps the task's (600 for stack).
      task_description: instruction; None uses the spec's default.
      modules: where IsaacLab is imported from (tests pass a fake); None means the installed packages.
    Raises:
      KeyError: unknown task id (lists the registered ones). IsaacLabNotInstalled: no IsaacLab.
    """
    spec = get_isaaclab_task(task_id)
    cameras = {sensor: size for sensor, size in zip(spec.camera_sensors, (table_cam, wrist_cam)) if size is not None}
    overrides = EnvCfgOverrides(num_envs=num_envs, seed=seed, cameras=cameras, max_episode_steps=max_episode_steps,
                                configure_env_cfg=spec.configure_env_cfg)
    launcher = launch_isaaclab(device, modules=modules)
    raw_env = None
    try:
        raw_env = launcher.make(task_id, overrides, provided_by=spec.provided_by)
        return IsaacLabEnv(raw_env, launcher, spec, task_id=task_id, task_description=task_description)
    except BaseException:
        if raw_env is not None:
            raw_env.close()
        launcher.close()
        raise
