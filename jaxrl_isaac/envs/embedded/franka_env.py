"""The batched embedded Franka env: N MuJoCo sub-envs behind IsaacLab's ``step``/``reset`` contract.

One ``MjData`` per sub-env shares one ``MjModel``. A control step (20 Hz) is 5 physics steps of 0.01 s; on each
physics step the relative-pose IK is re-solved toward the target fixed at the start of the control step (as
IsaacLab's action manager does), using ``mj_step1`` (kinematics, Jacobians) / ``mj_step2`` (integration) so the
Jacobian matches the state being integrated. Tensors go out on ``device``; the simulation itself runs on CPU.
"""

from __future__ import annotations

import weakref
from typing import Any

import mujoco
import numpy as np
import torch

from jaxrl_isaac.envs.contract import CAMERA_KEYS, POLICY_GROUP, EnvInputError, validate_action
from jaxrl_isaac.envs.embedded import diff_ik, rotations, scene, tasks
from jaxrl_isaac.envs.embedded.observations import LazyObsGroup
from jaxrl_isaac.envs.embedded.rendering import CameraRenderer

REWARD_TYPES = ("sparse", "shaped")
RESET_OPTION_KEYS = ("joint_pos", "cube_positions", "cube_orientations", "target_pos")


def check_env_args(num_envs: int, group_size: int, max_episode_steps: int, reward_type: str, table_cam, wrist_cam,
                   device: str | torch.device) -> torch.device:
    """One-line ValueErrors for bad constructor arguments (shared by the in-process and the process-parallel env);
    returns the torch device."""
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    if not isinstance(group_size, int) or group_size < 1 or num_envs % group_size:
        raise ValueError(f"group_size must be a positive int dividing num_envs={num_envs}, got {group_size!r}")
    if not isinstance(max_episode_steps, int) or max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be a positive int, got {max_episode_steps!r}")
    if reward_type not in REWARD_TYPES:
        raise ValueError(f"reward_type must be one of {REWARD_TYPES}, got {reward_type!r}")
    for name, hw in (("table_cam", table_cam), ("wrist_cam", wrist_cam)):
        if len(tuple(hw)) != 2 or min(int(v) for v in hw) < 1:
            raise ValueError(f"{name} must be (height, width) with positive ints, got {hw!r}")
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA device")
    return torch_device


class EmbeddedFrankaEnv:
    """Batched Franka cube env with IsaacLab's vectorised API (same-step auto-reset, torch outputs).

    Args:
      task_id: one of ``tasks.TASK_IDS``.
      num_envs: number of sub-envs N.
      device: where returned tensors live ("cpu", "cuda", "cuda:1", ...).
      seed: seeds the numpy Generator that draws every episode start (the first one during construction) until
        ``reset(seed=...)`` reseeds it.
      table_cam, wrist_cam: (height, width) of the camera images.
      max_episode_steps: control steps before truncation (IsaacLab: 30 s at 20 Hz = 600).
      group_size: G; on a full ``reset()`` sub-envs [kG, (k+1)G) start from the same state (GRPO groups).
      reward_type: "sparse" (1.0 on the success step, else 0) or "shaped" (sparse + potential difference, see
        ``tasks``).
      tiled_rendering: render each camera of all sub-envs as tiles of one buffer with one read-back (faster, most
        on EGL; a lone pixel can differ from the per-frame images, see ``rendering``).
    """

    action_dim = 7
    quat_order = "xyzw"

    def __init__(self, task_id: str, num_envs: int, device: str | torch.device = "cpu", seed: int = 0,
                 table_cam: tuple[int, int] = (200, 200), wrist_cam: tuple[int, int] = (200, 200),
                 max_episode_steps: int = 600, group_size: int = 1, reward_type: str = "sparse",
                 tiled_rendering: bool = False):
        if not isinstance(tiled_rendering, bool):
            raise ValueError(f"tiled_rendering must be a bool, got {tiled_rendering!r}")
        self.task = tasks.get_task(task_id)
        self.device = check_env_args(num_envs, group_size, max_episode_steps, reward_type, table_cam, wrist_cam, device)
        self.task_id = task_id
        self.num_envs = num_envs
        self.group_size = group_size
        self.max_episode_steps = max_episode_steps
        self.reward_type = reward_type
        self.task_description = self.task.description
        self.spec = self.task  # what a VLA policy reads: state_keys / state_fn (as the IsaacLab adapter's spec)
        self.step_dt = scene.CONTROL_DT
        self.ik = diff_ik.DiffIKConfig()

        camera_hw = {"table_cam": tuple(map(int, table_cam)), "wrist_cam": tuple(map(int, wrist_cam))}
        self.model, self.index = scene.load_scene(scene.SceneConfig(
            table_cam_hw=camera_hw["table_cam"], wrist_cam_hw=camera_hw["wrist_cam"],
            with_target_marker=self.task.has_reach_target))
        self._datas = [mujoco.MjData(self.model) for _ in range(num_envs)]
        self._renderer = CameraRenderer(self.model, camera_hw, tiled=tiled_rendering)
        # Close GL contexts before interpreter teardown even if the user never calls close().
        self._finalizer = weakref.finalize(self, self._renderer.close)
        self._rng = np.random.default_rng(seed)

        n, nv = num_envs, self.model.nv
        self._jacp = np.zeros((n, 3, nv))
        self._jacr = np.zeros((n, 3, nv))
        self._frame_pos = np.zeros((n, 3))
        self._frame_quat = np.zeros((n, 4))  # wxyz
        self._arm_q = np.zeros((n, 7))
        self._ctrl = np.zeros((n, self.model.nu))
        self._ik_target_pos = np.zeros((n, 3))
        self._ik_target_quat = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
        self._finger_target = np.full(n, scene.FINGER_OPEN)
        self._finger_ctrl = np.full(n, scene.FINGER_OPEN)  # rate-limited finger set-point (see _physics_substep)
        self._target_pos = np.zeros((n, 3))
        self._last_action = np.zeros((n, 7), dtype=np.float32)
        self._episode_len = np.zeros(n, dtype=np.int64)
        self._episode_return = np.zeros(n)
        self._potential = np.zeros(n)
        self._prev_eef_quat = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
        self._obs_version = 0
        self._arm_cols = np.asarray(self.index.arm_dof)
        if list(self.index.arm_qpos) != list(range(7)):  # _physics_substep reads the arm as qpos[:7]
            raise RuntimeError(f"scene error: arm joints must come first in qpos, got {self.index.arm_qpos}")
        # Like an IsaacLab env after construction, every sub-env holds a valid episode from the start (drawn from
        # ``seed``); calling reset() first is still the intended use.
        self.reset()

    # --- public API -------------------------------------------------------------------------------------------

    @property
    def render_count(self) -> int:
        """Camera images rendered so far (one per sub-env per camera read)."""
        return self._renderer.frames_rendered

    @property
    def episode_length_buf(self) -> torch.Tensor:
        """(N,) int64 control steps taken in each sub-env's current episode (IsaacLab's name)."""
        return torch.from_numpy(self._episode_len.copy()).to(self.device)

    def reset(self, seed: int | None = None, env_ids: Any = None, options: dict | None = None
              ) -> tuple[dict[str, LazyObsGroup], dict]:
        """Start new episodes; returns ``(obs, extras)``.

        Args:
          seed: reseeds the env's Generator before drawing the starts.
          env_ids: None resets every sub-env (group-shared starts); else a sequence/tensor of sub-env indices, each
            drawing an independent start.
          options: optional overrides of the drawn starts for the reset sub-envs, each batched over them or
            unbatched: "joint_pos" (9,) absolute arm + finger positions, "cube_positions" (9,), "cube_orientations"
            (12,) xyzw, "target_pos" (3,) (reach).
        """
        self._check_open()
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if env_ids is None:
            ids = np.arange(self.num_envs)
            starts = tasks.sample_initial_states(self._rng, self.num_envs // self.group_size,
                                                 self.task.has_reach_target).repeat(self.group_size)
        else:
            ids = self._parse_env_ids(env_ids)
            starts = tasks.sample_initial_states(self._rng, len(ids), self.task.has_reach_target)
        overrides = self._parse_options(options, len(ids))
        self._reset_envs(ids, starts, overrides)
        state = self._gather_state()
        self._potential[ids] = self.task.potential(state)[ids]
        zeros = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        extras = {"success": zeros, "dropped": zeros.clone(),
                  "episode_len": torch.zeros(self.num_envs, dtype=torch.int64, device=self.device), "log": {}}
        return self._observations(state), extras

    def step(self, action: torch.Tensor) -> tuple[dict[str, LazyObsGroup], torch.Tensor, torch.Tensor,
                                                  torch.Tensor, dict]:
        """One 20 Hz control step of every sub-env; terminated/truncated sub-envs are reset in the same call.

        Args:
          action: (N, 7) float on ``device``: relative pose (dx, dy, dz, droll, dpitch, dyaw), scaled by 0.5, then
            the gripper command (< 0 closes, >= 0 opens).
        Returns:
          obs, reward (N,) f32, terminated (N,) bool, truncated (N,) bool, extras with "success" (N,) bool,
          "dropped" (N,) bool, "episode_len" (N,) int64 (length of the episode that ended this step, else 0) and
          "log" (floats: termination counts and means over the episodes that ended this step).
        """
        action = validate_action(action, self.num_envs, self.action_dim, self.device)
        self._check_open()
        act = action.detach().to("cpu", torch.float64).numpy()
        self._last_action = act.astype(np.float32)
        self._set_action_targets(act)
        for _ in range(scene.DECIMATION):
            self._physics_substep()
        for data in self._datas:
            mujoco.mj_kinematics(self.model, data)  # positions are integrated; refresh frames for obs/rendering

        state = self._gather_state()
        dropped = tasks.cubes_dropped(state.cube_pos)
        success = self.task.success(state) & ~dropped
        terminated = success | dropped
        self._episode_len += 1
        truncated = self._episode_len >= self.max_episode_steps
        reward = success.astype(np.float64)
        if self.reward_type == "shaped":
            potential = self.task.potential(state)
            reward = reward + potential - self._potential
            self._potential = potential
        self._episode_return += reward
        done = terminated | truncated
        ended_len = np.where(done, self._episode_len, 0)
        log = self._episode_log(done, success, dropped, truncated)

        if done.any():
            ids = np.flatnonzero(done)
            self._reset_envs(ids, tasks.sample_initial_states(self._rng, len(ids), self.task.has_reach_target),
                             {})
            state = self._gather_state()
            if self.reward_type == "shaped":
                self._potential[ids] = self.task.potential(state)[ids]
        obs = self._observations(state)
        to = self._to_device
        extras = {"success": to(success), "dropped": to(dropped), "episode_len": to(ended_len), "log": log}
        return obs, to(reward.astype(np.float32)), to(terminated), to(truncated), extras

    def close(self) -> None:
        """Release the renderers' GL contexts and the simulation data; the env cannot be used afterwards."""
        self._finalizer()
        self._datas = []

    def _check_open(self) -> None:
        if not self._datas:
            raise RuntimeError("the env is closed")

    # --- simulation -------------------------------------------------------------------------------------------

    def _set_action_targets(self, act: np.ndarray) -> None:
        """Fix this control step's IK target (relative to the current control frame) and finger targets."""
        for i, data in enumerate(self._datas):
            self._frame_pos[i] = data.site_xpos[self.index.ik_site]
            mujoco.mju_mat2Quat(self._frame_quat[i], data.site_xmat[self.index.ik_site])
        self._ik_target_pos, self._ik_target_quat = diff_ik.relative_target(
            self._frame_pos, self._frame_quat, act[:, :6], self.ik.action_scale)
        self._finger_target = np.where(act[:, 6] < 0.0, scene.FINGER_CLOSED, scene.FINGER_OPEN)

    def _physics_substep(self) -> None:
        model, site = self.model, self.index.ik_site
        for i, data in enumerate(self._datas):
            mujoco.mj_step1(model, data)
            mujoco.mj_jacSite(model, data, self._jacp[i], self._jacr[i], site)
            self._frame_pos[i] = data.site_xpos[site]
            mujoco.mju_mat2Quat(self._frame_quat[i], data.site_xmat[site])
            self._arm_q[i] = data.qpos[:7]
        error = diff_ik.pose_error(self._frame_pos, self._frame_quat, self._ik_target_pos, self._ik_target_quat)
        jac = np.concatenate([self._jacp[:, :, self._arm_cols], self._jacr[:, :, self._arm_cols]], axis=1)
        self._ctrl[:, :7] = self._arm_q + diff_ik.dls_joint_delta(jac, error, self.ik.damping)
        # IsaacLab caps the finger joints at 0.2 m/s; ramping the set-point at that speed keeps the pads from
        # slamming into a cube (soft MuJoCo contacts would let a fast pad sink deep before pushing back).
        step = scene.FINGER_MAX_SPEED * scene.SIM_DT
        self._finger_ctrl += np.clip(self._finger_target - self._finger_ctrl, -step, step)
        self._ctrl[:, 7:9] = self._finger_ctrl[:, None]
        for i, data in enumerate(self._datas):
            data.ctrl[:] = self._ctrl[i]
            mujoco.mj_step2(model, data)

    def _reset_envs(self, ids: np.ndarray, starts: tasks.InitialStates, overrides: dict[str, np.ndarray]) -> None:
        """Write episode starts into the given sub-envs and clear their per-episode buffers."""
        idx = self.index
        joint_pos = np.concatenate([starts.arm_q, np.full((len(ids), 2), scene.FINGER_OPEN)], axis=1)
        joint_pos = overrides.get("joint_pos", joint_pos)
        cube_pos = overrides.get("cube_positions", starts.cube_pos.reshape(len(ids), 9)).reshape(len(ids), 3, 3)
        if "cube_orientations" in overrides:
            cube_quat = rotations.xyzw_to_wxyz(overrides["cube_orientations"].reshape(len(ids), 3, 4))
            cube_quat = cube_quat / np.linalg.norm(cube_quat, axis=-1, keepdims=True)
        else:
            cube_quat = rotations.quat_from_yaw(starts.cube_yaw)
        target = overrides.get("target_pos", starts.target_pos)
        for k, env_id in enumerate(ids):
            data = self._datas[env_id]
            mujoco.mj_resetData(self.model, data)
            data.qpos[idx.arm_qpos] = joint_pos[k, :7]
            data.qpos[idx.finger_qpos] = joint_pos[k, 7:9]
            for c in range(3):
                adr = idx.cube_qpos[c]
                data.qpos[adr:adr + 3] = cube_pos[k, c]
                data.qpos[adr + 3:adr + 7] = cube_quat[k, c]
            data.ctrl[:7] = joint_pos[k, :7]
            data.ctrl[7:9] = joint_pos[k, 7:9]
            if idx.target_mocap >= 0:
                data.mocap_pos[idx.target_mocap] = target[k]
            mujoco.mj_forward(self.model, data)
        self._target_pos[ids] = target if self.task.has_reach_target else 0.0
        self._finger_target[ids] = scene.FINGER_OPEN
        self._finger_ctrl[ids] = joint_pos[:, 7]
        self._last_action[ids] = 0.0
        self._episode_len[ids] = 0
        self._episode_return[ids] = 0.0

    # --- observations ------------------------------------------------------------------------------------------

    def _gather_state(self) -> tasks.SimState:
        n, idx = self.num_envs, self.index
        qpos = np.empty((n, self.model.nq))
        qvel = np.empty((n, self.model.nv))
        tcp_pos = np.empty((n, 3))
        tcp_quat = np.empty((n, 4))
        for i, data in enumerate(self._datas):
            qpos[i] = data.qpos
            qvel[i] = data.qvel
            tcp_pos[i] = data.site_xpos[idx.tcp_site]
            mujoco.mju_mat2Quat(tcp_quat[i], data.site_xmat[idx.tcp_site])
        self._qpos, self._qvel, self._tcp_quat = qpos, qvel, tcp_quat
        cube_pos = np.stack([qpos[:, a:a + 3] for a in idx.cube_qpos], axis=1)
        cube_linvel = np.stack([qvel[:, a:a + 3] for a in idx.cube_dof], axis=1)
        return tasks.SimState(tcp_pos=tcp_pos, finger_q=qpos[:, idx.finger_qpos], cube_pos=cube_pos,
                              cube_linvel=cube_linvel, target_pos=self._target_pos.copy())

    def _observations(self, state: tasks.SimState) -> dict[str, LazyObsGroup]:
        """Low-dim terms of IsaacLab's visuomotor policy group (env frame, xyzw quaternions, float32)."""
        idx = self.index
        qpos, qvel = self._qpos, self._qvel
        joints = np.concatenate([qpos[:, idx.arm_qpos], qpos[:, idx.finger_qpos]], axis=1)
        joint_vel = np.concatenate([qvel[:, idx.arm_dof], qvel[:, idx.finger_dof]], axis=1)
        cube_quat = np.stack([qpos[:, a + 3:a + 7] for a in idx.cube_qpos], axis=1)
        # q and -q are the same rotation. A simulator that integrates orientation keeps the sign continuous; do the
        # same (flip toward the previous step's sign) so a down-pointing gripper (w ~ 0) does not flicker, which
        # would make e.g. RLinf's quat -> axis-angle state jump. New episodes start from mju_mat2Quat's sign.
        eef_quat = self._tcp_quat
        flip = (np.sum(eef_quat * self._prev_eef_quat, axis=-1) < 0.0) & (self._episode_len > 0)
        eef_quat = np.where(flip[:, None], -eef_quat, eef_quat)
        self._prev_eef_quat = eef_quat
        terms = {
            "actions": self._last_action.copy(),
            "joint_pos": joints - scene.DEFAULT_JOINT_POS,
            "joint_vel": joint_vel,
            "eef_pos": state.tcp_pos,
            "eef_quat": rotations.wxyz_to_xyzw(eef_quat),
            "gripper_pos": state.finger_q * np.array([1.0, -1.0]),
            "cube_positions": state.cube_pos.reshape(-1, 9),
            "cube_orientations": rotations.wxyz_to_xyzw(cube_quat).reshape(-1, 12),
        }
        if self.task.has_reach_target:
            terms["target_pos"] = state.target_pos
        tensors = {k: self._to_device(np.ascontiguousarray(v, dtype=np.float32)) for k, v in terms.items()}
        self._obs_version += 1
        return {POLICY_GROUP: LazyObsGroup(tensors, CAMERA_KEYS, self._render_camera, self._obs_version)}

    def _render_camera(self, camera: str, version: int) -> torch.Tensor:
        if version != self._obs_version:
            raise RuntimeError(f"{camera!r} was read from an observation the env has already stepped past; read "
                               f"camera terms before the next step()/reset()")
        self._check_open()
        return torch.from_numpy(self._renderer.render(camera, self._datas)).to(self.device)

    # --- helpers -----------------------------------------------------------------------------------------------

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def _episode_log(self, done: np.ndarray, success: np.ndarray, dropped: np.ndarray, truncated: np.ndarray
                     ) -> dict[str, float]:
        ended = int(done.sum())
        return {
            "Episode_Termination/success": float(success.sum()),
            "Episode_Termination/cube_dropping": float(dropped.sum()),
            "Episode_Termination/time_out": float((truncated & ~success & ~dropped).sum()),
            "Episode/num_ended": float(ended),
            "Episode/return_mean": float(self._episode_return[done].mean()) if ended else 0.0,
            "Episode/length_mean": float(self._episode_len[done].mean()) if ended else 0.0,
        }

    def _parse_env_ids(self, env_ids: Any) -> np.ndarray:
        if isinstance(env_ids, torch.Tensor):
            env_ids = env_ids.detach().cpu().numpy()
        ids = np.asarray(env_ids).reshape(-1)
        if ids.dtype == bool:
            if ids.shape[0] != self.num_envs:
                raise EnvInputError(f"env_ids mask has {ids.shape[0]} entries, expected num_envs={self.num_envs}")
            ids = np.flatnonzero(ids)
        if ids.size == 0 or not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= self.num_envs:
            raise EnvInputError(f"env_ids must be non-empty integer indices in [0, {self.num_envs}), got {env_ids!r}")
        if len(np.unique(ids)) != len(ids):
            raise EnvInputError(f"env_ids contains duplicates: {ids.tolist()}")
        return ids.astype(np.int64)

    def _parse_options(self, options: dict | None, count: int) -> dict[str, np.ndarray]:
        if not options:
            return {}
        sizes = {"joint_pos": 9, "cube_positions": 9, "cube_orientations": 12, "target_pos": 3}
        parsed = {}
        for key, value in options.items():
            if key not in sizes:
                raise EnvInputError(f"unknown reset option {key!r}; known: {', '.join(RESET_OPTION_KEYS)}")
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().numpy()
            array = np.asarray(value, dtype=np.float64)
            if array.shape == (sizes[key],):
                array = np.tile(array, (count, 1))
            if array.shape != (count, sizes[key]) or not np.all(np.isfinite(array)):
                raise EnvInputError(f"reset option {key!r} must be finite with shape ({sizes[key]},) or "
                                    f"({count}, {sizes[key]}), got shape {array.shape}")
            parsed[key] = array
        return parsed
