"""The jitted update over a named mesh (1 vs 4 fake CPU devices), skipped non-finite steps, and PPO learning
end to end on a tiny env through the real rollout collector and bridge."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_isaac import learner, sharding
from jaxrl_isaac.algorithms.embodied import AdvantageSettings, compute_advantages_and_returns
from jaxrl_isaac.models.baseline import BaselineConfig, BaselinePolicy
from jaxrl_isaac.rollout import RolloutCollector, RolloutSettings
from point_env import PointEnv

CFG = BaselineConfig(action_dim=7, num_action_chunks=2, image_keys=(), state_keys=("eef_pos", "target_pos"),
                     mlp_hidden=(32, 32), init_log_std=-0.5)


def _batch(M=32, seed=0, nan=False):
    rng = np.random.default_rng(seed)
    adv = rng.normal(size=M).astype(np.float32)
    if nan:
        adv[0] = np.nan
    return {
        "obs": {"state": jnp.asarray(rng.normal(size=(M, 6)).astype(np.float32))},
        "train_inputs": {"raw_actions": jnp.asarray(rng.normal(size=(M, 2, 7)).astype(np.float32))},
        "logprob": jnp.asarray(rng.normal(size=M).astype(np.float32) - 10),
        "value": jnp.asarray(rng.normal(size=M).astype(np.float32)),
        "advantages": jnp.asarray(adv),
        "returns": jnp.asarray(rng.normal(size=M).astype(np.float32)),
        "mask": jnp.asarray(rng.random(M) < 0.9),
    }


def _run_update(device_ids, micro, batch):
    policy = BaselinePolicy(CFG)
    mesh = sharding.make_mesh(device_ids)
    params = policy.init(jax.random.PRNGKey(0), {"state": jnp.zeros((1, 6))})
    tx = learner.make_optimizer(learner.OptimSettings(lr=1e-3, value_lr=2e-3), policy.is_value_param)
    sched = learner.Schedule(num_samples=32, global_batch_size=16, micro_batch_size=micro, update_epoch=2)
    update = learner.make_update_fn(policy, tx, learner.LossSettings(), sched, mesh)
    state = jax.device_put(learner.init_train_state(params, tx), sharding.replicated(mesh))
    batch = jax.device_put(batch, sharding.batch_sharded(mesh))
    initial = jax.tree.map(np.array, params)  # the update donates the state's buffers
    return initial, update(state, batch, jax.random.PRNGKey(1))


def test_update_same_on_one_and_four_devices():
    assert jax.device_count() == 4, "conftest.py should create 4 fake CPU devices"
    batch = _batch()
    p0, (s1, m1) = _run_update([0], 8, batch)
    _, (s4, m4) = _run_update([0, 1, 2, 3], 2, batch)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s4.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(float(m1["actor/loss"]), float(m4["actor/loss"]), rtol=1e-5)
    assert int(s1.step) == 1 and int(s1.skipped_updates) == 0
    # Params moved, value head and policy both.
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(s1.params))]
    assert all(moved)
    assert s4.params["action_mean"]["kernel"].sharding.is_fully_replicated


def test_non_finite_gradient_step_is_skipped():
    p0, (state, metrics) = _run_update([0], 8, _batch(nan=True))
    # Every minibatch containing the NaN sample is skipped: 1 of 2 minibatches per epoch x 2 epochs.
    assert int(state.skipped_updates) == 2
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_schedule_errors_are_one_line():
    with pytest.raises(ValueError, match="global_batch_size=10 must be divisible"):
        learner.Schedule(num_samples=40, global_batch_size=10, micro_batch_size=4, update_epoch=1).check(1)
    with pytest.raises(ValueError, match="not divisible by actor.global_batch_size=16"):
        learner.Schedule(num_samples=40, global_batch_size=16, micro_batch_size=4, update_epoch=1).check(1)


def test_rollout_shapes_and_reward_ownership():
    env = PointEnv(num_envs=4, max_episode_steps=6)
    policy = BaselinePolicy(CFG)
    s = RolloutSettings(num_action_chunks=2, chunk_steps=5, rollout_epoch=2, seed=3)
    collector = RolloutCollector(env, policy, s)
    params = policy.init(jax.random.PRNGKey(0), {"state": jnp.zeros((1, 6))})
    traj, metrics = collector.collect(params, jax.random.PRNGKey(0), global_step=0)
    T, B, C = 5, 8, 2
    assert traj.rewards.shape == (T, B, C) and traj.dones.shape == (T + 1, B, C)
    assert traj.values.shape == (T + 1, B) and traj.logprobs.shape == (T, B)
    assert traj.obs["state"].shape == (T, B, 6)
    assert not bool(traj.dones[0].any())
    # The env truncates at 6 steps: every trajectory has a done at env step 6 = chunk 2, sub-step 1.
    assert bool(traj.dones[3, :, 1].all())
    # The env's reward buffer is overwritten in place each step; what the rollout stored must not change.
    stored = np.asarray(traj.dones).copy()
    env.terminated_buf.fill_(True); env.truncated_buf.fill_(True)
    np.testing.assert_array_equal(np.asarray(traj.dones), stored)
    assert metrics["env/episode_len"] == 6.0 or metrics["env/success_once"] > 0
    # Same seed and step -> identical rollout (resume determinism).
    traj2, _ = RolloutCollector(env, policy, s).collect(params, jax.random.PRNGKey(0), global_step=0)
    np.testing.assert_array_equal(np.asarray(traj.obs["state"]), np.asarray(traj2.obs["state"]))


def test_rollout_runs_the_policy_on_its_device_not_where_the_env_tensors_land():
    # The env's torch CPU tensors land on JAX's CPU device 0; a policy placed on (fake) device 2 gets its inputs
    # copied there, and the trajectory equals the one of a policy left where the tensors land.
    env = PointEnv(num_envs=4, max_episode_steps=6)
    policy = BaselinePolicy(CFG)
    s = RolloutSettings(num_action_chunks=2, chunk_steps=3, seed=3)
    params = policy.init(jax.random.PRNGKey(0), {"state": jnp.zeros((1, 6))})
    target = jax.devices()[2]
    placed, _ = RolloutCollector(env, policy, s, device=target).collect(
        jax.device_put(params, target), jax.device_put(jax.random.PRNGKey(0), target), global_step=0)
    default, _ = RolloutCollector(env, policy, s).collect(params, jax.random.PRNGKey(0), global_step=0)
    for leaf_placed, leaf_default in zip(jax.tree.leaves(placed), jax.tree.leaves(default)):
        assert leaf_placed.devices() == {target}
        np.testing.assert_array_equal(np.asarray(leaf_placed), np.asarray(leaf_default))


def test_rollout_device_is_the_first_device_of_the_rollout_placement():
    from jaxrl_isaac.config import load_config
    default = load_config("embedded_reach_ppo_baseline")  # {"env,rollout,actor": all}
    assert sharding.rollout_device(default) == jax.devices()[0]
    split = load_config("embedded_reach_ppo_baseline",
                        overrides=['cluster.component_placement={env: 0, rollout: 2-3, actor: 0-1}'])
    assert sharding.rollout_device(split) == jax.devices()[2]


@pytest.mark.slow
def test_ppo_learns_point_reaching():
    env = PointEnv(num_envs=16, max_episode_steps=20, shaped=True)
    policy = BaselinePolicy(CFG)
    s = RolloutSettings(num_action_chunks=2, chunk_steps=10, rollout_epoch=1, seed=0)
    collector = RolloutCollector(env, policy, s)
    mesh = sharding.make_mesh([0])
    tx = learner.make_optimizer(learner.OptimSettings(lr=3e-3, value_lr=3e-3, weight_decay=0.0),
                                policy.is_value_param)
    sched = learner.Schedule(num_samples=160, global_batch_size=40, micro_batch_size=40, update_epoch=4)
    update = learner.make_update_fn(policy, tx, learner.LossSettings(value_clip=10.0), sched, mesh)
    params = policy.init(jax.random.PRNGKey(0), {"state": jnp.zeros((1, 6))})
    state = learner.init_train_state(params, tx)
    adv_fn = jax.jit(lambda t: compute_advantages_and_returns(t, AdvantageSettings(gamma=0.95)))
    success = []
    for step in range(30):
        traj, metrics = collector.collect(state.params, jax.random.PRNGKey(step), step)
        batch, _ = adv_fn(traj)
        state, _ = update(state, batch, jax.random.PRNGKey(1000 + step))
        success.append(metrics["env/success_once"])
    assert np.mean(success[:3]) < 0.5
    assert np.mean(success[-5:]) > np.mean(success[:3]) + 0.3, success


@pytest.mark.parametrize("where", ["reward", "observation"])
def test_nan_from_the_env_is_one_clear_error(where):
    from jaxrl_isaac.envs.contract import EnvOutputError

    class NaNEnv(PointEnv):
        def step(self, action):
            out = list(super().step(action))
            if where == "reward" and self.steps_taken == 3:
                out[1][2] = float("nan")
            return tuple(out)

        def _obs(self):
            obs = super()._obs()
            if where == "observation" and self.steps_taken == 2:
                obs["policy"]["target_pos"][1, 0] = float("inf")
            return obs

    env = NaNEnv(num_envs=4, max_episode_steps=6)
    policy = BaselinePolicy(CFG)
    collector = RolloutCollector(env, policy, RolloutSettings(num_action_chunks=2, chunk_steps=3))
    params = policy.init(jax.random.PRNGKey(0), {"state": jnp.zeros((1, 6))})
    message = r"NaN or inf in reward .* for env\(s\) \[2\]" if where == "reward" else \
        r"NaN or inf in observation 'state' for env\(s\) \[1\]"
    with pytest.raises(EnvOutputError, match=message):
        collector.collect(params, jax.random.PRNGKey(0), global_step=0)


def test_critic_warmup_trains_only_the_value_head():
    policy = BaselinePolicy(CFG)
    mesh = sharding.make_mesh([0])
    params = policy.init(jax.random.PRNGKey(0), {"state": jnp.zeros((1, 6))})
    initial = jax.tree.map(np.array, params)
    tx = learner.make_optimizer(learner.OptimSettings(lr=1e-3, value_lr=2e-3), policy.is_value_param)
    # 2 minibatches x 2 epochs = 4 optimizer steps per global step; warm up for the first 6.
    sched = learner.Schedule(num_samples=32, global_batch_size=16, micro_batch_size=8, update_epoch=2)
    update = learner.make_update_fn(policy, tx, learner.LossSettings(critic_warmup_steps=6), sched, mesh)
    state = learner.init_train_state(params, tx)
    state, m1 = update(state, _batch(), jax.random.PRNGKey(1))
    after_1 = jax.tree.map(np.array, state.params)
    before = jax.tree_util.tree_flatten_with_path(initial)[0]
    after = jax.tree_util.tree_flatten_with_path(after_1)[0]
    for (path, x), (_, y) in zip(before, after):
        is_value = policy.is_value_param(tuple(str(getattr(p, "key", p)) for p in path))
        # Only the value head moves; weight decay must not touch the policy's parameters either.
        assert (not np.array_equal(x, y)) == is_value, jax.tree_util.keystr(path)
    assert float(m1["actor/critic_warmup"]) == 1.0
    state, m2 = update(state, _batch(seed=1), jax.random.PRNGKey(2))  # optimizer steps 4..7: 2 warm, 2 not
    assert float(m2["actor/critic_warmup"]) == 0.5
    assert not np.allclose(np.asarray(state.params["action_mean"]["kernel"]), after_1["action_mean"]["kernel"])
