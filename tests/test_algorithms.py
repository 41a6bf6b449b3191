"""Every advantage/loss formula against an independent numpy (python-loop) reference."""

import numpy as np
import pytest
import jax.numpy as jnp

from jaxrl_isaac.algorithms import advantages as adv_lib
from jaxrl_isaac.algorithms import ppo


def _np_gae(rewards, values, dones, gamma, lam):
    T, B = rewards.shape
    adv = np.zeros((T, B))
    for b in range(B):
        last = 0.0
        for t in reversed(range(T)):
            nonterm = 1.0 - float(dones[t + 1, b])
            delta = rewards[t, b] + gamma * values[t + 1, b] * nonterm - values[t, b]
            last = delta + gamma * lam * nonterm * last
            adv[t, b] = last
    return adv, adv + values[:-1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_matches_python_loop(seed):
    rng = np.random.default_rng(seed)
    T, B = 7, 5
    rewards = rng.normal(size=(T, B))
    values = rng.normal(size=(T + 1, B))
    dones = rng.random((T + 1, B)) < 0.2
    dones[0] = False
    adv, ret = adv_lib.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(dones), 0.99, 0.95)
    ref_adv, ref_ret = _np_gae(rewards, values, dones, 0.99, 0.95)
    np.testing.assert_allclose(np.asarray(adv), ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), ref_ret, rtol=1e-5, atol=1e-5)


def test_chunk_level_and_loss_mask():
    rewards = np.zeros((3, 2, 4))
    rewards[1, 0, 2] = 1.0
    rewards[2, 1, :] = 0.5
    dones = np.zeros((4, 2, 4), bool)
    dones[2, 0, 2] = True  # env 0 ends inside chunk 1 (row t+1 = 2)
    r, d = adv_lib.chunk_level(jnp.asarray(rewards), jnp.asarray(dones))
    np.testing.assert_allclose(np.asarray(r), rewards.sum(-1))
    np.testing.assert_array_equal(np.asarray(d), dones.any(-1))
    mask = np.asarray(adv_lib.loss_mask_from_dones(d))
    # env 0: chunks 0 and 1 valid (the done chunk is included), chunk 2 belongs to a re-spawned episode.
    np.testing.assert_array_equal(mask[:, 0], [True, True, False])
    np.testing.assert_array_equal(mask[:, 1], [True, True, True])


def test_masked_normalize_ignores_masked_entries():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3))
    mask = rng.random((6, 3)) < 0.6
    out = np.asarray(adv_lib.masked_normalize(jnp.asarray(x), jnp.asarray(mask)))
    sel = x[mask]
    ref = (sel - sel.mean()) / (sel.std(ddof=1) + 1e-5)
    np.testing.assert_allclose(out[mask], ref, rtol=1e-5, atol=1e-6)
    assert np.all(out[~mask] == 0)


def test_grpo_advantages():
    scores = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    out = np.asarray(adv_lib.grpo_advantages(jnp.asarray(scores), 4))
    ref = []
    for g in scores.reshape(-1, 4):
        ref.extend((g - g.mean()) / (g.std(ddof=1) + 1e-6))
    np.testing.assert_allclose(out, ref, rtol=1e-5)


def _np_actor(logp_new, logp_old, adv, mask, low, high, c):
    out, kl, cf = [], [], []
    for ln, lo, a in zip(logp_new, logp_old, adv):
        r = np.exp(ln - lo)
        l1, l2 = -a * r, -a * min(max(r, 1 - low), 1 + high)
        l = max(l1, l2)
        if c is not None and a < 0:
            l = min(l, -a * c)
        out.append(l)
        kl.append(lo - ln)
        cf.append(float(l2 > l1))
    m = mask.astype(float)
    return (np.array(out) * m).sum() / m.sum(), (np.array(kl) * m).sum() / m.sum(), (np.array(cf) * m).sum() / m.sum()


@pytest.mark.parametrize("dual_clip", [None, 3.0])
def test_ppo_actor_loss_matches_reference(dual_clip):
    rng = np.random.default_rng(3)
    M = 64
    logp_old = rng.normal(size=M)
    logp_new = logp_old + rng.normal(scale=0.8, size=M)  # ratios far outside the clip range too
    adv = rng.normal(size=M)
    mask = rng.random(M) < 0.8
    out = ppo.ppo_actor_loss(jnp.asarray(logp_new), jnp.asarray(logp_old), jnp.asarray(adv), jnp.asarray(mask),
                             clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=dual_clip)
    ref_loss, ref_kl, ref_cf = _np_actor(logp_new, logp_old, adv, mask, 0.2, 0.28, dual_clip)
    np.testing.assert_allclose(float(out.loss), ref_loss, rtol=1e-5)
    np.testing.assert_allclose(float(out.approx_kl), ref_kl, rtol=1e-5)
    np.testing.assert_allclose(float(out.clipfrac), ref_cf, rtol=1e-6)
    assert 0 < ref_cf < 1


def _np_huber(x, d):
    return np.where(np.abs(x) <= d, 0.5 * x ** 2, d * (np.abs(x) - 0.5 * d))


@pytest.mark.parametrize("huber_delta", [None, 0.5, 10.0])
def test_clipped_value_loss_matches_reference(huber_delta):
    rng = np.random.default_rng(4)
    M = 50
    v_old = rng.normal(size=M)
    v = v_old + rng.normal(scale=0.4, size=M)
    ret = rng.normal(size=M) * 2
    mask = rng.random(M) < 0.7
    out = ppo.clipped_value_loss(jnp.asarray(v), jnp.asarray(v_old), jnp.asarray(ret), jnp.asarray(mask),
                                 value_clip=0.2, huber_delta=huber_delta)
    loss_fn = (lambda x: 0.5 * x ** 2) if huber_delta is None else (lambda x: _np_huber(x, huber_delta))
    v_clip = v_old + np.clip(v - v_old, -0.2, 0.2)
    per = np.maximum(loss_fn(ret - v), loss_fn(ret - v_clip))
    np.testing.assert_allclose(float(out.loss), per[mask].mean(), rtol=1e-5)
    ref_ratio = (np.abs(v - v_old) > 0.2)[mask].mean()
    np.testing.assert_allclose(float(out.clip_ratio), ref_ratio, rtol=1e-6)
    assert ref_ratio > 0  # the fixed metric is not stuck at 0 like RLinf's
    resid = (ret - v)[mask]
    np.testing.assert_allclose(float(out.explained_variance), 1 - resid.var() / ret[mask].var(), rtol=1e-4)


def test_masked_mean_ratio_weights_every_trajectory_equally():
    """RLinf's masked_mean_ratio against a python loop: mean over all T*B entries of l * m * T / L_b."""
    rng = np.random.default_rng(3)
    T, B = 6, 4
    dones = np.zeros((T + 1, B), bool)
    dones[3, 0] = dones[6, 1] = dones[1, 2] = True  # env 3 never ends
    mask = np.asarray(adv_lib.loss_mask_from_dones(jnp.asarray(dones)))
    lengths = mask.sum(0)
    np.testing.assert_array_equal(lengths, [3, 6, 1, 6])
    weights = np.asarray(adv_lib.trajectory_loss_weights(jnp.asarray(mask)))
    values = rng.normal(size=(T, B))
    expected = sum(values[t, b] * mask[t, b] * T / lengths[b] for t in range(T) for b in range(B)) / (T * B)
    got = float(adv_lib.masked_mean_ratio(jnp.asarray(values), jnp.asarray(mask), jnp.asarray(weights)))
    assert got == pytest.approx(expected, rel=1e-6)
    # each trajectory's valid steps carry the same total weight T, whatever its length
    np.testing.assert_allclose((weights * mask).sum(0), [T] * B, rtol=1e-6)
    # a trajectory with no valid step gets weight T (never divides by zero) and contributes nothing
    empty = np.asarray(adv_lib.trajectory_loss_weights(jnp.zeros((T, 1), bool)))
    assert np.all(empty == T)


def test_losses_use_trajectory_weights_when_given():
    rng = np.random.default_rng(4)
    M = 12
    mask = rng.random(M) < 0.7
    weight = rng.uniform(0.5, 3.0, size=M).astype(np.float32)
    logp_new, logp_old, adv = (jnp.asarray(rng.normal(size=M) * s, jnp.float32) for s in (0.1, 0.1, 1.0))
    plain = ppo.ppo_actor_loss(logp_new, logp_old, adv, jnp.asarray(mask), clip_ratio_low=0.2, clip_ratio_high=0.2)
    weighted = ppo.ppo_actor_loss(logp_new, logp_old, adv, jnp.asarray(mask), clip_ratio_low=0.2,
                                  clip_ratio_high=0.2, weight=jnp.asarray(weight))
    ratio = np.exp(np.asarray(logp_new) - np.asarray(logp_old))
    per = np.maximum(-np.asarray(adv) * ratio, -np.asarray(adv) * np.clip(ratio, 0.8, 1.2))
    assert float(weighted.loss) == pytest.approx(float(np.mean(per * mask * weight)), rel=1e-5)
    assert float(plain.loss) == pytest.approx(float(per[mask].mean()), rel=1e-5)
    assert float(weighted.approx_kl) == pytest.approx(float(plain.approx_kl))  # diagnostics stay masked means
    values, old, returns = (jnp.asarray(rng.normal(size=M), jnp.float32) for _ in range(3))
    v = ppo.clipped_value_loss(values, old, returns, jnp.asarray(mask), value_clip=0.2, huber_delta=None,
                               weight=jnp.asarray(weight))
    diff = np.asarray(values) - np.asarray(old)
    clipped = np.asarray(old) + np.clip(diff, -0.2, 0.2)
    per_v = np.maximum(0.5 * (np.asarray(returns) - np.asarray(values)) ** 2,
                       0.5 * (np.asarray(returns) - clipped) ** 2)
    assert float(v.loss) == pytest.approx(float(np.mean(per_v * mask * weight)), rel=1e-5)


def test_rollout_explained_variance_is_over_the_whole_masked_rollout():
    """rollout/explained_variance: 1 - Var[R - V] / Var[R] over every valid sample, with rollout-time values."""
    from jaxrl_isaac.algorithms.embodied import AdvantageSettings, Trajectory, compute_advantages_and_returns

    T, B, C = 5, 3, 2
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(T, B, C)).astype(np.float32)
    values = rng.normal(size=(T + 1, B)).astype(np.float32)
    dones = np.zeros((T + 1, B, C), bool)
    dones[3, 1, 1] = True  # env 1 ends inside chunk step 2: its steps 3, 4 are masked
    traj = Trajectory(obs={"x": np.zeros((T, B, 1), np.float32)}, train_inputs={"u": np.zeros((T, B, 1), np.float32)},
                      logprobs=np.zeros((T, B), np.float32), values=values, rewards=rewards, dones=dones)
    batch, metrics = compute_advantages_and_returns(traj, AdvantageSettings(gamma=0.9, gae_lambda=0.8))
    mask = batch["mask"].reshape(T, B)
    ret, val = np.asarray(batch["returns"]).reshape(T, B)[mask], values[:-1][mask]
    assert mask.sum() == T * B - 2
    expected = 1.0 - np.var(ret - val) / np.var(ret)
    np.testing.assert_allclose(float(metrics["rollout/explained_variance"]), expected, rtol=1e-5)
