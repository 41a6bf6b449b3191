"""A tiny batched point-reaching env that follows IsaacLab's contract, for fast runner/learner tests.

The "end effector" is a point in the plane moved by action[:, :2] * 0.05 per step; success (terminated, reward
1) when it is within 0.05 of a random target; truncated at ``max_episode_steps``; same-step auto-reset;
reward/terminated/truncated buffers are reused in place like IsaacLab's.
"""

from __future__ import annotations

import numpy as np
import torch

from jaxrl_isaac.envs.contract import validate_action


class PointEnv:
    action_dim = 7
    quat_order = "xyzw"

    def __init__(self, num_envs: int = 8, max_episode_steps: int = 20, cam: int = 8, shaped: bool = False):
        self.shaped = shaped  # add the per-step progress towards the target to the sparse success reward
        self.num_envs = num_envs
        self.device = torch.device("cpu")
        self.max_episode_steps = max_episode_steps
        self.cam = cam
        self._rng = np.random.default_rng(0)
        self.pos = torch.zeros(num_envs, 2)
        self.target = torch.zeros(num_envs, 2)
        self.elapsed = torch.zeros(num_envs, dtype=torch.int64)
        self.reward_buf = torch.zeros(num_envs)
        self.terminated_buf = torch.zeros(num_envs, dtype=torch.bool)
        self.truncated_buf = torch.zeros(num_envs, dtype=torch.bool)
        self.steps_taken = 0

    def _reset_idx(self, idx: torch.Tensor) -> None:
        k = int(idx.numel())
        if k == 0:
            return
        self.pos[idx] = torch.from_numpy(self._rng.uniform(-0.3, 0.3, (k, 2))).float()
        self.target[idx] = torch.from_numpy(self._rng.uniform(-0.3, 0.3, (k, 2))).float()
        self.elapsed[idx] = 0

    def _obs(self):
        z = torch.zeros(self.num_envs, 1)
        group = {
            "eef_pos": torch.cat([self.pos, z], 1),
            "target_pos": torch.cat([self.target, z], 1),
            "eef_quat": torch.tensor([[0.0, 0.0, 0.0, 1.0]]).repeat(self.num_envs, 1),
            "gripper_pos": torch.zeros(self.num_envs, 2),
            "table_cam": torch.zeros(self.num_envs, self.cam, self.cam, 3, dtype=torch.uint8),
            "wrist_cam": torch.zeros(self.num_envs, self.cam, self.cam, 3, dtype=torch.uint8),
        }
        return {"policy": group}

    def reset(self, seed=None, env_ids=None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._reset_idx(torch.arange(self.num_envs))
        return self._obs(), {}

    def step(self, action):
        action = validate_action(action, self.num_envs, self.action_dim, self.device)
        self.steps_taken += 1
        before = (self.pos - self.target).norm(dim=1)
        self.pos += 0.05 * action[:, :2].clamp(-1, 1)
        self.elapsed += 1
        after = (self.pos - self.target).norm(dim=1)
        success = after < 0.05
        self.reward_buf[:] = success.float() + (10.0 * (before - after) if self.shaped else 0.0)
        self.terminated_buf[:] = success
        self.truncated_buf[:] = (self.elapsed >= self.max_episode_steps) & ~success
        self._reset_idx((self.terminated_buf | self.truncated_buf).nonzero().flatten())
        extras = {"success": success.clone(), "log": {}}
        return self._obs(), self.reward_buf, self.terminated_buf, self.truncated_buf, extras

    def close(self):
        pass
