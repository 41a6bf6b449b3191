"""The scripted experts solve every embedded task (a few seeded episodes each; the rate is measured elsewhere)."""

import numpy as np
import pytest
import torch

from jaxrl_isaac.envs import embedded
from jaxrl_isaac.envs.embedded import tasks

# (task, sub-envs, step budget): the experts need ~10 (reach), ~31 (lift) and ~125 (stack, max ~170) steps.
CASES = [(tasks.REACH_ID, 8, 40), (tasks.LIFT_ID, 8, 80), (tasks.STACK_ID, 16, 260)]


def first_episode_outcomes(task_id, num_envs, budget, seed):
    """Success flag and length of each sub-env's first episode under the expert."""
    env = embedded.make(task_id, num_envs=num_envs, seed=seed, table_cam=(32, 32), wrist_cam=(32, 32),
                        max_episode_steps=budget)
    expert = embedded.make_expert(task_id, env)
    obs, _ = env.reset(seed=seed)
    ended = np.zeros(num_envs, dtype=bool)
    success = np.zeros(num_envs, dtype=bool)
    lengths = np.zeros(num_envs, dtype=np.int64)
    while not ended.all():
        action = expert(obs)
        assert action.shape == (num_envs, 7) and action.dtype == torch.float32 and action.device == env.device
        obs, _, terminated, truncated, extras = env.step(action)
        new = (terminated | truncated).numpy() & ~ended
        success[new] = extras["success"].numpy()[new]
        lengths[new] = extras["episode_len"].numpy()[new]
        ended |= new
    env.close()
    return success, lengths


@pytest.mark.parametrize("task_id, num_envs, budget", CASES)
def test_expert_solves_task(task_id, num_envs, budget):
    success, lengths = first_episode_outcomes(task_id, num_envs, budget, seed=11)
    assert success.all(), f"{task_id}: solved {success.sum()}/{num_envs}, lengths {lengths.tolist()}"


def test_expert_must_match_the_env_task():
    env = embedded.make(tasks.REACH_ID, num_envs=1, table_cam=(32, 32), wrist_cam=(32, 32))
    with pytest.raises(ValueError, match="Embedded-Reach"):
        embedded.make_expert(tasks.STACK_ID, env)
    with pytest.raises(ValueError, match="known ids"):
        embedded.make_expert("Embedded-Push-v0", env)


def test_task_descriptions():
    assert embedded.task_description(tasks.STACK_ID) == (
        "Stack the red block on the blue block, then stack the green block on the red block.")
    assert all(embedded.task_description(t) for t in embedded.TASK_IDS)
