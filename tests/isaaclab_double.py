"""A CPU test double of IsaacLab (3.0 and 2.x) for the Franka cube-stack tasks, faithful where the adapter cares.

What it reproduces (isaaclab_and_dlpack.md §2-§3, IsaacLab's manager and env sources):
  * ``ManagerBasedRLEnv.step(action) -> (obs, reward_buf, reset_terminated, reset_time_outs, extras)`` with the
    three buffers persistent and overwritten in place every step, and same-step auto-reset (the returned obs of a
    reset sub-env is the first obs of its new episode);
  * observation groups ``policy`` (dict of terms: ``table_cam``/``wrist_cam`` (N, H, W, 3) uint8 at the cfg's camera
    size, ``eef_pos``, ``eef_quat`` in the version's order, ``gripper_pos``, ``joint_pos``, ``joint_vel``, ``actions``,
    ``object``, ``cube_positions``, ``cube_orientations``; Cosmos adds segmentation/normals/depth) and
    ``subtask_terms``;
  * a termination manager with ``time_out`` (truncation at ``ceil(episode_length_s / step_dt)``),
    ``cube_{1,2,3}_dropping`` and ``success``, ``active_terms`` and ``get_term`` (this step's per-env value);
  * a reward manager: no terms for Visuomotor/Cosmos (reward is 0 every step), a ``success`` term of weight 20 for
    RLinf's Rewarded fork task (value = term * weight * step_dt = 1.0);
  * ``extras["log"]`` rebuilt on every reset with ``Episode_Termination/<term>`` counts over the reset envs;
  * module-level API per version: 3.0 (``launch_simulation`` context manager that auto-enables cameras, parse_env_cfg,
    ``IsaacContrib-...`` ids, quaternions xyzw) and 2.x (``AppLauncher`` that must start before ``isaaclab_tasks`` is
    imported, ``-v0`` ids, quaternions wxyz).

Termination events are scripted: ``script={3: {"success": [1]}, 5: {"cube_2_dropping": [2]}}`` makes env 1 succeed
on the 3rd ``step()`` and env 2 drop a cube on the 5th (counted since the last full ``reset()``).

Usage: ``lab = FakeIsaacLab("3.0", script=...)``; pass ``lab`` wherever the launcher takes ``modules``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import types
from typing import Any, Mapping, Sequence

import torch

ACTION_DIM = 7  # 6-D relative IK pose + binary gripper
NUM_JOINTS = 9  # 7 arm joints + 2 fingers
STACK_TERMINATIONS = ("time_out", "cube_1_dropping", "cube_2_dropping", "cube_3_dropping", "success")
STACK_POLICY_TERMS = {  # obs term name -> what it holds
    "actions": "actions", "joint_pos": "joint_pos", "joint_vel": "joint_vel", "object": "object",
    "cube_positions": "cube_positions", "cube_orientations": "cube_orientations", "eef_pos": "eef_pos",
    "eef_quat": "eef_quat", "gripper_pos": "gripper_pos", "table_cam": "table_rgb", "wrist_cam": "wrist_rgb",
}
COSMOS_EXTRA_TERMS = {"table_cam_segmentation": "segmentation", "table_cam_normals": "normals",
                      "table_cam_depth": "depth"}
_TERM_WIDTH = {"actions": ACTION_DIM, "joint_pos": NUM_JOINTS, "joint_vel": NUM_JOINTS, "object": 39,
               "cube_positions": 9, "cube_orientations": 12, "eef_pos": 3, "gripper_pos": 2}

VISUOMOTOR = "Stack-Cube-Franka-IK-Rel-Visuomotor"
COSMOS = "Stack-Cube-Franka-IK-Rel-Visuomotor-Cosmos"
REWARDED = "Stack-Cube-Franka-IK-Rel-Visuomotor-Rewarded"


@dataclasses.dataclass(frozen=True)
class FakeTask:
    """One registered task: its observation terms, cameras, termination and reward terms."""

    policy_terms: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(STACK_POLICY_TERMS))
    camera_sensors: tuple[str, str] = ("table_cam", "wrist_cam")  # the sensors the table_rgb/wrist_rgb terms read
    terminations: tuple[str, ...] = STACK_TERMINATIONS
    reward_weights: Mapping[str, float] = dataclasses.field(default_factory=dict)  # term -> weight (on its value)


STOCK_STACK = FakeTask()
COSMOS_STACK = FakeTask(policy_terms={**STACK_POLICY_TERMS, **COSMOS_EXTRA_TERMS})
RLINF_REWARDED_STACK = FakeTask(reward_weights={"success": 20.0})


# --- configs --------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class FakeCameraCfg:
    height: int = 200
    width: int = 200


@dataclasses.dataclass
class FakeSimCfg:
    dt: float = 0.01
    device: str = "cuda:0"
    render_interval: int = 2


@dataclasses.dataclass
class FakeStackEnvCfg:
    """The parts of ``StackEnvCfg`` the launcher touches (defaults as in IsaacLab: one env, 30 s at 20 Hz)."""

    scene: types.SimpleNamespace
    sim: FakeSimCfg = dataclasses.field(default_factory=FakeSimCfg)
    decimation: int = 5
    episode_length_s: float = 30.0
    seed: int | None = None


def make_cfg(task: FakeTask) -> FakeStackEnvCfg:
    scene = types.SimpleNamespace(num_envs=1, env_spacing=2.5,
                                  **{sensor: FakeCameraCfg() for sensor in task.camera_sensors})
    return FakeStackEnvCfg(scene=scene)


# --- managers -------------------------------------------------------------------------------------------------------

class FakeTerminationManager:
    """IsaacLab's TerminationManager: persistent per-term buffers, `compute` ORs terms into terminated/time_outs."""

    def __init__(self, term_names: Sequence[str], num_envs: int, device: str):
        self._term_names = list(term_names)
        self._term_dones = {name: torch.zeros(num_envs, dtype=torch.bool, device=device) for name in term_names}
        self._truncated_buf = torch.zeros(num_envs, dtype=torch.bool, device=device)
        self._terminated_buf = torch.zeros_like(self._truncated_buf)

    @property
    def active_terms(self) -> list[str]:
        return self._term_names

    @property
    def terminated(self) -> torch.Tensor:
        return self._terminated_buf

    @property
    def time_outs(self) -> torch.Tensor:
        return self._truncated_buf

    @property
    def dones(self) -> torch.Tensor:
        return self._truncated_buf | self._terminated_buf

    def compute(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        self._truncated_buf[:] = False
        self._terminated_buf[:] = False
        for name in self._term_names:
            if name == "time_out":
                self._truncated_buf |= values[name]
            else:
                self._terminated_buf |= values[name]
            self._term_dones[name][:] = values[name]
        return self._truncated_buf | self._terminated_buf

    def get_term(self, name: str) -> torch.Tensor:
        return self._term_dones[name]

    def reset(self, env_ids: torch.Tensor) -> dict[str, int]:
        return {f"Episode_Termination/{name}": int(torch.count_nonzero(done[env_ids])) for name, done in
                self._term_dones.items()}


class FakeRewardManager:
    def __init__(self, weights: Mapping[str, float]):
        self.weights = dict(weights)

    @property
    def active_terms(self) -> list[str]:
        return list(self.weights)


# --- the env --------------------------------------------------------------------------------------------------------

class FakeManagerBasedRLEnv:
    """``isaaclab.envs.ManagerBasedRLEnv`` for a cube-stack-like task, with scripted terminations."""

    def __init__(self, cfg: FakeStackEnvCfg, task: FakeTask, *, api_version: str,
                 script: Mapping[int, Mapping[str, Sequence[int]]], made_inside_app: bool):
        self.cfg = cfg
        self.task = task
        self.api_version = api_version
        self.quat_order = "xyzw" if api_version == "3.0" else "wxyz"
        self.script = {int(step): {term: list(ids) for term, ids in events.items()} for step, events in script.items()}
        self.made_inside_app = made_inside_app
        self.num_envs = cfg.scene.num_envs
        self.device = cfg.sim.device  # IsaacLab exposes the sim device as a str
        self.step_dt = cfg.sim.dt * cfg.decimation
        self.max_episode_length = math.ceil(cfg.episode_length_s / self.step_dt)
        self.termination_manager = FakeTerminationManager(task.terminations, self.num_envs, self.device)
        self.reward_manager = FakeRewardManager(task.reward_weights)
        self.action_manager = types.SimpleNamespace(total_action_dim=ACTION_DIM, action=None)
        self.reward_buf = torch.zeros(self.num_envs, dtype=torch.float32, device=self.device)
        self.reset_terminated = self.termination_manager.terminated
        self.reset_time_outs = self.termination_manager.time_outs
        self.episode_length_buf = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.episode_index = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.extras: dict[str, Any] = {}
        self.steps_since_reset = 0
        self.step_calls = 0
        self.camera_renders = 0
        self.closed = False
        self.last_eef_quat_xyzw: torch.Tensor | None = None
        self._generator = torch.Generator().manual_seed(cfg.seed if cfg.seed is not None else 0)

    @property
    def unwrapped(self) -> "FakeManagerBasedRLEnv":
        return self

    def _uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self._generator).to(self.device)

    def _random_unit_quats_xyzw(self) -> torch.Tensor:
        quat = torch.randn(self.num_envs, 4, generator=self._generator, dtype=torch.float64)
        quat = quat / quat.norm(dim=1, keepdim=True)
        return quat.float().to(self.device)

    def _observations(self) -> dict[str, dict[str, torch.Tensor]]:
        """Fresh tensors every call, as IsaacLab's observation manager gives."""
        n = self.num_envs
        self.last_eef_quat_xyzw = self._random_unit_quats_xyzw()
        eef_quat = self.last_eef_quat_xyzw if self.quat_order == "xyzw" else self.last_eef_quat_xyzw[:, [3, 0, 1, 2]]
        table_sensor, wrist_sensor = self.task.camera_sensors
        policy = {}
        for term, kind in self.task.policy_terms.items():
            if kind in ("table_rgb", "wrist_rgb"):
                camera = getattr(self.cfg.scene, table_sensor if kind == "table_rgb" else wrist_sensor)
                self.camera_renders += 1
                image = (self._uniform(n, camera.height, camera.width, 3) * 255).to(torch.uint8)
                policy[term] = image
            elif kind in ("segmentation", "normals", "depth"):
                camera = getattr(self.cfg.scene, table_sensor)
                channels = {"segmentation": 4, "normals": 3, "depth": 1}[kind]
                policy[term] = self._uniform(n, camera.height, camera.width, channels)
            elif kind == "eef_quat":
                policy[term] = eef_quat.clone()
            elif kind == "gripper_pos":
                policy[term] = 0.04 * self._uniform(n, 1).expand(n, 2).clone()
            elif kind == "actions":
                last = self.action_manager.action
                policy[term] = last.clone() if last is not None else torch.zeros(n, ACTION_DIM, device=self.device)
            else:
                policy[term] = self._uniform(n, _TERM_WIDTH[kind]) - 0.5
        subtask_terms = {name: torch.zeros(n, dtype=torch.bool, device=self.device)
                         for name in ("grasp_1", "stack_1", "grasp_2")}
        return {"policy": policy, "subtask_terms": subtask_terms}

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        self.extras["log"] = {}
        for term in self.reward_manager.weights:
            self.extras["log"][f"Episode_Reward/{term}"] = 0.0  # episode sums are not modelled
        self.extras["log"].update(self.termination_manager.reset(env_ids))
        self.episode_length_buf[env_ids] = 0
        self.episode_index[env_ids] += 1

    def reset(self, *args, **kwargs):
        if self.closed:
            raise RuntimeError("reset() on a closed env")
        if self.api_version == "3.0":
            return self._reset_v3(*args, **kwargs)
        return self._reset_v2(*args, **kwargs)

    def _reset_v3(self, env_ids=slice(None), *, seed=None, options=None):
        return self._do_reset(env_ids, seed)

    def _reset_v2(self, seed=None, env_ids=None, options=None):
        return self._do_reset(slice(None) if env_ids is None else env_ids, seed)

    def _do_reset(self, env_ids, seed):
        if seed is not None:
            self._generator.manual_seed(seed)
        all_ids = torch.arange(self.num_envs, device=self.device)
        ids = all_ids[env_ids] if not isinstance(env_ids, torch.Tensor) else env_ids
        self._reset_idx(ids)
        if isinstance(env_ids, slice) and env_ids == slice(None):
            self.steps_since_reset = 0
        return self._observations(), self.extras

    def step(self, action: torch.Tensor):
        if self.closed:
            raise RuntimeError("step() on a closed env")
        action = action.to(self.device)
        self.action_manager.action = action.clone()
        self.steps_since_reset += 1
        self.step_calls += 1
        self.episode_length_buf += 1
        events = self.script.get(self.steps_since_reset, {})
        values = {}
        for term in self.task.terminations:
            if term == "time_out":
                values[term] = self.episode_length_buf >= self.max_episode_length
            else:
                value = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
                value[list(events.get(term, []))] = True
                values[term] = value
        unknown = set(events) - set(self.task.terminations)
        if unknown:
            raise KeyError(f"scripted events for unknown termination terms {sorted(unknown)}")
        dones = self.termination_manager.compute(values)
        # RewardManager.compute: sum over terms of value * weight * dt, into the persistent buffer.
        self.reward_buf[:] = 0.0
        for term, weight in self.reward_manager.weights.items():
            self.reward_buf += self.termination_manager.get_term(term).float() * weight * self.step_dt
        reset_ids = dones.nonzero().flatten()
        if len(reset_ids) > 0:
            self._reset_idx(reset_ids)
        return self._observations(), self.reward_buf, self.reset_terminated, self.reset_time_outs, self.extras

    def close(self) -> None:
        self.closed = True


# --- the modules ----------------------------------------------------------------------------------------------------

class _GymWrapper:
    """What ``gym.make`` returns (OrderEnforcing around the env); the launcher takes ``.unwrapped``."""

    def __init__(self, env: FakeManagerBasedRLEnv):
        self.unwrapped = env


class FakeSimulationApp:
    def __init__(self, lab: "FakeIsaacLab"):
        self._lab = lab

    def close(self) -> None:
        self._lab.app_running = False
        self._lab.app_closes += 1


class FakeIsaacLab:
    """A fake install of IsaacLab ``api_version`` ("3.0" or "2.x"), usable as the launcher's ``ModuleSource``.

    Records what the launcher did: ``app_launches`` (kwargs/launcher args), ``display_at_launch``,
    ``parse_calls``, ``made_envs``, ``app_running``, ``app_closes``, ``imported``.
    """

    def __init__(self, api_version: str = "3.0", *, script: Mapping[int, Mapping[str, Sequence[int]]] | None = None,
                 rlinf_fork: bool = False, extra_tasks: Mapping[str, FakeTask] | None = None, installed: bool = True,
                 version_string: str | None = None):
        if api_version not in ("3.0", "2.x"):
            raise ValueError(f"api_version must be '3.0' or '2.x', got {api_version!r}")
        self.api_version = api_version
        self.script = dict(script or {})
        self.installed = installed
        self.version_string = version_string or ("3.0.0" if api_version == "3.0" else "2.3.2")
        if api_version == "3.0":
            # 3.0 renamed contributed tasks (IsaacContrib-, no -v0); Mimic variants kept the old style.
            tasks = {f"IsaacContrib-{VISUOMOTOR}": STOCK_STACK, f"IsaacContrib-{COSMOS}": COSMOS_STACK,
                     f"Isaac-{VISUOMOTOR}-Mimic-v0": STOCK_STACK}
        else:
            tasks = {f"Isaac-{VISUOMOTOR}-v0": STOCK_STACK, f"Isaac-{COSMOS}-v0": COSMOS_STACK}
        if rlinf_fork:
            tasks[f"Isaac-{REWARDED}-v0"] = RLINF_REWARDED_STACK
        tasks.update(extra_tasks or {})
        self._tasks = tasks
        self.registry: dict[str, dict[str, Any]] = {}  # filled when isaaclab_tasks is imported
        self.app_running = False
        self.app_launches: list[dict[str, Any]] = []
        self.display_at_launch: list[str | None] = []
        self.app_closes = 0
        self.parse_calls: list[dict[str, Any]] = []
        self.made_envs: list[FakeManagerBasedRLEnv] = []
        self.imported: list[str] = []
        self._modules = self._build_modules()

    # ModuleSource
    def import_module(self, name: str) -> Any:
        if not self.installed and name.split(".")[0] in ("isaaclab", "isaaclab_tasks", "gymnasium"):
            root = name.split(".")[0]
            raise ModuleNotFoundError(f"No module named {root!r}", name=root)
        if name not in self._modules:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        if name.startswith("isaaclab_tasks"):
            if self.api_version == "2.x" and not self.app_running:
                # Real 2.x fails here with an import error from Kit's modules (omni.*, isaacsim.*).
                raise RuntimeError("fake IsaacLab 2.x: isaaclab_tasks imported before AppLauncher started the app")
            self.registry.update({task_id: {"env_cfg_entry_point": task} for task_id, task in self._tasks.items()})
        self.imported.append(name)
        return self._modules[name]

    def distribution_version(self, name: str) -> str | None:
        return self.version_string if (self.installed and name == "isaaclab") else None

    # isaaclab.app
    def _one_app_per_process(self) -> None:
        if self.app_running:  # Kit runs one stage per process (one FakeIsaacLab stands for one process's install)
            raise RuntimeError("fake IsaacLab: a SimulationApp is already running in this process")

    def _app_launcher(self, launcher_args: Any = None, **kwargs: Any) -> types.SimpleNamespace:
        self._one_app_per_process()
        args = {**(launcher_args or {}), **kwargs}
        self.app_launches.append(args)
        self.display_at_launch.append(os.environ.get("DISPLAY"))
        self.app_running = True
        return types.SimpleNamespace(app=FakeSimulationApp(self), device=args.get("device", "cuda:0"))

    @contextlib.contextmanager
    def _launch_simulation(self, cfg: Any, launcher_args: Any = None):
        self._one_app_per_process()
        if launcher_args is not None and not launcher_args.get("enable_cameras", False):
            launcher_args["enable_cameras"] = True  # auto-enabled: the stack scene has Kit camera sensors
        self.app_launches.append(dict(launcher_args or {}))
        self.display_at_launch.append(os.environ.get("DISPLAY"))
        self.app_running = True
        try:
            yield None
        finally:
            self.app_running = False
            self.app_closes += 1

    # isaaclab_tasks.utils
    def _task(self, task_name: str) -> FakeTask:
        if task_name not in self.registry:
            raise ValueError(f"Environment `{task_name}` doesn't exist.")  # gymnasium's NameNotFound wording
        return self.registry[task_name]["env_cfg_entry_point"]

    def _load_cfg_from_registry(self, task_name: str, entry_point_key: str) -> FakeStackEnvCfg:
        return make_cfg(self._task(task_name))

    def _parse_env_cfg(self, task_name: str, device: str | None = "cuda:0", num_envs: int | None = None,
                       use_fabric: bool | None = None, overrides: Sequence[str] = ()) -> FakeStackEnvCfg:
        self.parse_calls.append({"task_name": task_name, "device": device, "num_envs": num_envs})
        cfg = self._load_cfg_from_registry(task_name, "env_cfg_entry_point")
        if device is not None:
            cfg.sim.device = device
        if num_envs is not None:
            cfg.scene.num_envs = num_envs
        return cfg

    # gymnasium
    def _gym_make(self, task_id: str, cfg: FakeStackEnvCfg | None = None, **kwargs: Any) -> _GymWrapper:
        if cfg is None:
            raise TypeError("IsaacLab envs need cfg=")
        env = FakeManagerBasedRLEnv(cfg, self._task(task_id), api_version=self.api_version, script=self.script,
                                    made_inside_app=self.app_running)
        self.made_envs.append(env)
        return _GymWrapper(env)

    def _build_modules(self) -> dict[str, Any]:
        app = types.SimpleNamespace(AppLauncher=self._app_launcher)
        utils = types.SimpleNamespace(parse_env_cfg=self._parse_env_cfg,
                                      load_cfg_from_registry=self._load_cfg_from_registry)
        if self.api_version == "3.0":
            app.launch_simulation = self._launch_simulation
        gym = types.SimpleNamespace(registry=self.registry, make=self._gym_make,
                                    spec=lambda task_id: types.SimpleNamespace(kwargs=self.registry[task_id]))
        return {"isaaclab": types.SimpleNamespace(), "isaaclab.app": app, "isaaclab_tasks": types.SimpleNamespace(),
                "isaaclab_tasks.utils": utils, "gymnasium": gym}

    @property
    def env(self) -> FakeManagerBasedRLEnv:
        """The (single) env made so far."""
        assert len(self.made_envs) == 1, f"{len(self.made_envs)} envs were made"
        return self.made_envs[0]


def make_env_in_child(split_cfg: Any, api_version: str = "3.0", script: Mapping[int, Mapping[str, Sequence[int]]]
                      | None = None) -> Any:
    """``factory.make_env(split_cfg)`` over a fresh ``FakeIsaacLab`` (this process's own "install"): the picklable
    ``make_env`` an ``EnvProcess`` runs in its child when the test has no real IsaacLab."""
    from jaxrl_isaac.envs.isaaclab import launcher
    from jaxrl_isaac.envs import factory
    lab = FakeIsaacLab(api_version, script=script)
    launcher.default_module_source = lambda: lab
    return factory.make_env(split_cfg)
