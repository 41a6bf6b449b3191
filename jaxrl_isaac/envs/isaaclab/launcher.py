"""Starting IsaacLab (3.0, or 2.x as a fallback) and building one raw task env.

The two APIs differ in order and names (isaaclab_and_dlpack.md §3.2):

  IsaacLab 3.0 (Python 3.12, quaternions xyzw)              IsaacLab 2.x (quaternions wxyz)
  1. import isaaclab_tasks (registers the gym ids)            1. AppLauncher(headless=True, enable_cameras=True)
  2. parse_env_cfg(task_id, device=..., num_envs=...)        2. import isaaclab_tasks (needs the running app)
  3. with launch_simulation(env_cfg, launcher_args):         3. parse_env_cfg(task_id, device=..., num_envs=...)
       gym.make(task_id, cfg=env_cfg).unwrapped               4. gym.make(task_id, cfg=env_cfg).unwrapped
     (starts Kit only if the cfg needs it; auto-enables
      cameras for Kit camera sensors; closes Kit on exit)

Contributed task ids changed too: ``Isaac-<name>-v0`` (2.x) became ``IsaacContrib-<name>`` (3.0).

Nothing here imports IsaacLab at module import time. Every import goes through a ``ModuleSource`` so that tests can
hand in a fake IsaacLab (``tests/isaaclab_double.py``) and run this exact code path on a CPU machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import importlib.metadata
import logging
import os
import sys
from typing import Any, Callable, Mapping, Protocol

from jaxrl_isaac.envs.isaaclab.registry import ApiVersion, id_in_convention

logger = logging.getLogger(__name__)

# Top-level modules whose absence means "IsaacLab is not installed" rather than a bug in a task package.
_ISAACLAB_MODULE_ROOTS = frozenset({"isaaclab", "isaaclab_tasks", "isaacsim", "omni", "carb", "pxr", "gymnasium"})
QUAT_ORDER_BY_API: dict[ApiVersion, str] = {"3.0": "xyzw", "2.x": "wxyz"}


class IsaacLabNotInstalled(ImportError):
    """The IsaacLab backend was selected but IsaacLab (or Isaac Sim) cannot be imported."""


def _not_installed(missing: str) -> IsaacLabNotInstalled:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return IsaacLabNotInstalled(
        f"env_type=isaaclab needs IsaacLab, but module {missing!r} is not importable (Python {python}): IsaacLab 3.0 "
        f"needs Python 3.12, Isaac Sim 6.2 and an RTX GPU for its camera tasks; install it with "
        f"`uv pip install \"isaaclab[isaacsim,all]==3.0.0\" --extra-index-url https://pypi.nvidia.com` (with the uv "
        f"override file from IsaacLab's pip install guide) or from a source checkout with `./isaaclab.sh --install`; "
        f"or use env_type=embedded, the default simulator, which needs none of this")


class ModuleSource(Protocol):
    """Where the launcher gets IsaacLab's modules from (the real ones, or a test double)."""

    def import_module(self, name: str) -> Any: ...

    def distribution_version(self, name: str) -> str | None: ...


class SystemModules:
    """The installed packages."""

    def import_module(self, name: str) -> Any:
        return importlib.import_module(name)

    def distribution_version(self, name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None


def default_module_source() -> ModuleSource:
    """The source ``launch_isaaclab`` uses when none is given (tests replace this function)."""
    return SystemModules()


def detect_api_version(isaaclab_version: str | None, app_module: Any) -> ApiVersion:
    """"3.0" or "2.x", from the ``isaaclab`` distribution's version, else from ``isaaclab.app``'s contents.

    The version decides the quaternion order (3.0 switched to xyzw), so the package metadata is trusted first;
    a checkout without metadata is 3.0 if ``isaaclab.app`` has ``launch_simulation``.
    """
    if isaaclab_version:
        try:
            major = int(isaaclab_version.split(".")[0])
        except ValueError:
            raise ValueError(f"cannot parse the isaaclab version {isaaclab_version!r}") from None
        return "3.0" if major >= 3 else "2.x"
    return "3.0" if hasattr(app_module, "launch_simulation") else "2.x"


@dataclasses.dataclass(frozen=True)
class EnvCfgOverrides:
    """What we change on the task's env cfg before ``gym.make`` (as RLinf's ``make_env_isaaclab`` does).

    Attributes:
      num_envs: ``env_cfg.scene.num_envs``.
      seed: ``env_cfg.seed``.
      cameras: ``{scene sensor name: (height, width)}``, e.g. ``{"table_cam": (256, 256), "wrist_cam": (256, 256)}``.
      max_episode_steps: if set, IsaacLab's own ``time_out`` truncates (and auto-resets) after this many env steps.
      configure_env_cfg: task hook ``(env_cfg) -> None`` run last.
    """

    num_envs: int
    seed: int
    cameras: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    max_episode_steps: int | None = None
    configure_env_cfg: Callable[[Any], None] | None = None

    def __post_init__(self):
        if not isinstance(self.num_envs, int) or self.num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {self.num_envs!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        for sensor, size in self.cameras.items():
            if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
                raise ValueError(f"camera {sensor!r} size must be (height, width) positive ints, got {size!r}")
        if self.max_episode_steps is not None and (not isinstance(self.max_episode_steps, int)
                                                   or self.max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be a positive int or None, got {self.max_episode_steps!r}")


def apply_env_cfg_overrides(env_cfg: Any, overrides: EnvCfgOverrides) -> None:
    """Writes ``overrides`` into an IsaacLab ``ManagerBasedRLEnvCfg`` in place."""
    env_cfg.scene.num_envs = overrides.num_envs
    env_cfg.seed = overrides.seed
    for sensor, (height, width) in overrides.cameras.items():
        camera = getattr(env_cfg.scene, sensor, None)
        if camera is None:
            raise ValueError(f"the task's env cfg has no camera scene.{sensor} (set IsaacLabTaskSpec.camera_sensors)")
        camera.height, camera.width = height, width
    if overrides.max_episode_steps is not None:
        # IsaacLab times out when episode_length_buf >= ceil(episode_length_s / step_dt). Half a step below the
        # target keeps float error (448 * 0.05 / 0.05 = 448.00000000000006) from adding a step.
        step_dt = env_cfg.sim.dt * env_cfg.decimation
        env_cfg.episode_length_s = (overrides.max_episode_steps - 0.5) * step_dt
    if overrides.configure_env_cfg is not None:
        overrides.configure_env_cfg(env_cfg)


class IsaacLabLauncher:
    """A started (2.x) or ready-to-start (3.0) IsaacLab app that builds one raw task env.

    Kit runs one stage per process, so a launcher makes at most one env (RLinf, too, gives every IsaacLab env its
    own process). ``close()`` closes the app; the adapter calls it after closing the env.
    """

    def __init__(self, modules: ModuleSource, api_version: ApiVersion, device: str, app_module: Any):
        self._modules = modules
        self.api_version = api_version
        self.quat_order = QUAT_ORDER_BY_API[api_version]
        self.device = device
        self._app_module = app_module
        self._exit_stack = contextlib.ExitStack()
        self._made = False
        self._closed = False
        if api_version == "2.x":
            # 2.x: the app must run before isaaclab_tasks is imported. Popping DISPLAY forces headless Kit and avoids
            # GLX errors on hosts with X forwarding (RLinf does the same, in a dedicated process).
            os.environ.pop("DISPLAY", None)
            app = app_module.AppLauncher(headless=True, enable_cameras=True, device=device).app
            self._exit_stack.callback(app.close)

    def _import(self, name: str) -> Any:
        return _import_or_explain(self._modules, name)

    def resolve_task_id(self, task_id: str, *, provided_by: str | None = None) -> str:
        """The id the installed IsaacLab registers for ``task_id`` (mapping 2.x <-> 3.0 spellings), else one error."""
        self._import("isaaclab_tasks")  # registers every task with gymnasium
        registry = self._import("gymnasium").registry
        if task_id in registry:
            return task_id
        renamed = id_in_convention(task_id, self.api_version)
        if renamed != task_id and renamed in registry:
            logger.info("IsaacLab %s registers %r as %r; using %r", self.api_version, task_id, renamed, renamed)
            return renamed
        tried = f" or {renamed!r}" if renamed != task_id else ""
        origin = f"; it is defined in {provided_by}, install that instead of stock IsaacLab" if provided_by else ""
        close = difflib.get_close_matches(renamed, list(registry), n=4, cutoff=0.6)
        raise ValueError(f"IsaacLab {self.api_version} has no task {task_id!r}{tried}{origin}; "
                         f"closest registered ids: {close or 'none'}")

    def make(self, task_id: str, overrides: EnvCfgOverrides, *, provided_by: str | None = None) -> Any:
        """Builds the raw ``ManagerBasedRLEnv`` (``gym.make(...).unwrapped``) of ``task_id`` with ``overrides``."""
        if self._closed:
            raise RuntimeError("this IsaacLab launcher is closed")
        if self._made:
            raise RuntimeError("an IsaacLab launcher makes one env (Kit runs one stage per process); "
                               "use num_envs for more sub-envs")
        resolved_id = self.resolve_task_id(task_id, provided_by=provided_by)
        parse_env_cfg = self._import("isaaclab_tasks.utils").parse_env_cfg
        env_cfg = parse_env_cfg(resolved_id, device=self.device, num_envs=overrides.num_envs)
        apply_env_cfg_overrides(env_cfg, overrides)
        if self.api_version == "3.0":
            os.environ.pop("DISPLAY", None)
            # Kit starts here, only if the cfg needs it (PhysX or RTX cameras); cameras are enabled explicitly
            # rather than relying on the auto-enable.
            self._exit_stack.enter_context(self._launch_simulation()(
                env_cfg, {"enable_cameras": True, "device": self.device}))
        env = self._import("gymnasium").make(resolved_id, cfg=env_cfg).unwrapped
        self._made = True
        logger.info("IsaacLab %s: made %r with %d envs on %s", self.api_version, resolved_id,
                    overrides.num_envs, self.device)
        return env

    def _launch_simulation(self) -> Callable[..., Any]:
        """``launch_simulation``: exported by ``isaaclab.app``, defined in its ``sim_launcher`` module, and
        re-exported by ``isaaclab_tasks.utils`` in some versions."""
        launch = getattr(self._app_module, "launch_simulation", None)
        for module_name in ("isaaclab.app.sim_launcher", "isaaclab_tasks.utils"):
            if launch is not None:
                break
            with contextlib.suppress(ModuleNotFoundError):
                launch = getattr(self._modules.import_module(module_name), "launch_simulation", None)
        if launch is None:
            raise RuntimeError("IsaacLab 3.0 without launch_simulation in isaaclab.app, isaaclab.app.sim_launcher "
                               "or isaaclab_tasks.utils")
        return launch

    def close(self) -> None:
        """Closes the app (3.0: leaves ``launch_simulation``; 2.x: ``app.close()``). Idempotent."""
        if not self._closed:
            self._closed = True
            self._exit_stack.close()


def _import_or_explain(modules: ModuleSource, name: str) -> Any:
    try:
        return modules.import_module(name)
    except ModuleNotFoundError as error:
        missing = error.name or name
        if missing.split(".")[0] in _ISAACLAB_MODULE_ROOTS:
            raise _not_installed(missing) from error
        raise


def launch_isaaclab(device: str = "cuda:0", *, modules: ModuleSource | None = None) -> IsaacLabLauncher:
    """Detects the installed IsaacLab API and returns its launcher (2.x starts the app here, 3.0 in ``make``).

    Raises:
      IsaacLabNotInstalled: one line saying what is missing and how to install it.
    """
    modules = modules if modules is not None else default_module_source()
    app_module = _import_or_explain(modules, "isaaclab.app")
    api_version = detect_api_version(modules.distribution_version("isaaclab"), app_module)
    logger.info("IsaacLab API %s (quaternions %s)", api_version, QUAT_ORDER_BY_API[api_version])
    return IsaacLabLauncher(modules, api_version, device, app_module)
