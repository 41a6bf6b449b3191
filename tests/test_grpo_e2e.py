"""GRPO end to end on the embedded simulator: groups of envs share their reset state, advantages are
group-relative, and no value loss is trained."""

import json

import numpy as np

from jaxrl_isaac import train

TINY = [
    "env.train.total_num_envs=16", "env.train.max_episode_steps=16", "env.train.max_steps_per_rollout_epoch=16",
    "actor.model.num_action_chunks=4", "actor.global_batch_size=16", "actor.micro_batch_size=4",
    "algorithm.update_epoch=1", "algorithm.group_size=4", "runner.save_interval=-1", "runner.max_epochs=2",
]


def test_grpo_trains_with_shared_reset_groups(tmp_path):
    log = tmp_path / "grpo"
    rc = train.main(["--config-name", "embedded_reach_grpo_baseline", *TINY, f"runner.logger.log_path={log}"])
    assert rc == 0
    rows = [json.loads(line) for line in (log / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert "actor/value_loss" not in r          # loss_type: actor
        assert abs(r["rollout/advantages_mean"]) < 1e-5  # (score - group mean) / std averages to 0 per group
        assert np.isfinite(r["actor/loss"]) and r["actor/grad_norm"] > 0


def test_embedded_groups_share_the_reset_state():
    from jaxrl_isaac.envs import embedded
    env = embedded.make("Embedded-Reach-Franka-IK-Rel-v0", num_envs=8, group_size=4, table_cam=(16, 16),
                        wrist_cam=(16, 16))
    obs, _ = env.reset(seed=3)
    target = obs["policy"]["target_pos"].numpy()
    joints = obs["policy"]["joint_pos"].numpy()
    for g in range(2):
        np.testing.assert_array_equal(target[4 * g:4 * g + 4], np.repeat(target[4 * g:4 * g + 1], 4, 0))
        np.testing.assert_array_equal(joints[4 * g:4 * g + 4], np.repeat(joints[4 * g:4 * g + 1], 4, 0))
    assert not np.allclose(target[0], target[4])
