"""Flow-SDE / Flow-CPS / learned-noise transitions and Gaussian log-probs (``jaxrl_isaac.models.flow_sde``) against
an independent float64 numpy implementation written from the spec's formulas (docs/gr00t_n15_spec.md §5.4)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_isaac.models import flow_sde


def _np_transition(x, v, k, K, method, a, learned_std=None):
    """The spec's formulas in float64, one sample at a time (x, v: (H, D); k: int)."""
    t, dt = k / K, 1.0 / K
    x0_pred, x1_pred = x - v * t, x + v * (1 - t)
    if method == "flow_sde":
        sigma = a * math.sqrt((1 - t) / (t if t > 0 else 1.0 / K))
        mean = x0_pred * (1 - (t + dt) - sigma ** 2 * dt / (2 * (1 - t))) + x1_pred * (t + dt)
        std = np.full_like(x, math.sqrt(dt) * sigma)
    elif method == "flow_cps":
        mean = x0_pred * (1 - (t + dt)) * math.cos(math.pi * a / 2) + x1_pred * (t + dt)
        std = np.full_like(x, (1 - (t + dt)) * math.sin(math.pi * a / 2))
    else:
        mean, std = x + v * dt, learned_std
    return mean, std


def _np_logpdf(x, mean, std):
    """log of the normal density written as pdf first (a different route from the JAX log-space formula)."""
    return np.log(np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi)))


def test_sigmas_finite_at_the_first_step_as_rlinf():
    # a = 0.5, K = 4: sigma = 0.5 * sqrt((1 - t) / max(t, 1/4)); t = 0 uses t_1 instead of dividing by zero.
    sigmas = flow_sde.flow_sde_sigmas(4, 0.5)
    np.testing.assert_allclose(sigmas, [1.0, math.sqrt(3) / 2, 0.5, 0.5 / math.sqrt(3)], rtol=1e-6)
    assert np.isfinite(sigmas).all()
    np.testing.assert_allclose(np.sqrt(0.25) * sigmas, [0.5, 0.4330127, 0.25, 0.1443376], rtol=1e-6)
    np.testing.assert_array_equal(flow_sde.time_grid(4), [0.0, 0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize("K", [4, 5])
@pytest.mark.parametrize("method", ["flow_sde", "flow_cps", "flow_noise"])
def test_transition_and_logprob_match_numpy(method, K):
    rng = np.random.default_rng(K)
    B, H, D, a = 6, 3, 5, 0.5
    x = rng.standard_normal((B, H, D)).astype(np.float32)
    v = rng.standard_normal((B, H, D)).astype(np.float32)
    k = rng.integers(0, K, B).astype(np.int32)
    k[:2] = (0, K - 1)  # the t = 0 special case and the last step are always covered
    learned = rng.uniform(0.08, 0.16, (B, H, D)).astype(np.float32) if method == "flow_noise" else None
    mean, std = flow_sde.stochastic_transition(jnp.asarray(x), jnp.asarray(v), jnp.asarray(k), num_steps=K,
                                               noise_method=method, noise_level=a,
                                               learned_std=None if learned is None else jnp.asarray(learned))
    x_next = np.asarray(mean) + np.asarray(std) * rng.standard_normal((B, H, D)).astype(np.float32)
    logp = np.asarray(flow_sde.gaussian_logprob(jnp.asarray(x_next), mean, std))
    for b in range(B):
        m_ref, s_ref = _np_transition(x[b].astype(np.float64), v[b].astype(np.float64), int(k[b]), K, method, a,
                                      None if learned is None else learned[b].astype(np.float64))
        np.testing.assert_allclose(np.asarray(mean[b]), m_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(std[b]), s_ref, rtol=1e-5, atol=1e-7)
        if method == "flow_cps" and k[b] == K - 1:
            assert (np.asarray(std[b]) == 0).all() and (logp[b] == 0).all()  # a point mass: log-prob 0 (RLinf)
            continue
        ref = _np_logpdf(x_next[b].astype(np.float64), m_ref, s_ref)
        np.testing.assert_allclose(logp[b], ref, rtol=1e-5, atol=1e-5)


def test_deterministic_step_is_rlinf_ode_mean():
    rng = np.random.default_rng(0)
    K = 4
    x, v = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    euler = np.asarray(flow_sde.euler_step(jnp.asarray(x), jnp.asarray(v), K))
    for k in range(K):
        t, dt = k / K, 1 / K
        ode_mean = (x - v * t) * (1 - (t + dt)) + (x + v * (1 - t)) * (t + dt)  # RLinf's eval-mode mean
        np.testing.assert_allclose(euler, ode_mean, rtol=1e-5, atol=1e-6)


def test_entropy_and_zero_std():
    std = jnp.asarray([0.0, 0.1, 0.5, 2.0])
    np.testing.assert_allclose(np.asarray(flow_sde.gaussian_entropy(std))[1:],
                               0.5 * np.log(2 * np.pi * np.e * np.asarray(std[1:], np.float64) ** 2), rtol=1e-6)
    assert float(flow_sde.gaussian_entropy(std)[0]) == 0.0
    assert float(flow_sde.gaussian_logprob(jnp.ones(1), jnp.zeros(1), jnp.zeros(1))[0]) == 0.0


@pytest.mark.parametrize("ignore_last", [False, True])
def test_denoise_step_distribution(ignore_last):
    K, n = 4, 40_000
    k = np.asarray(flow_sde.sample_denoise_steps(jax.random.PRNGKey(3), n, K, ignore_last))
    support = K - 1 if ignore_last else K
    counts = np.bincount(k, minlength=K) / n
    assert k.min() == 0 and k.max() == support - 1
    np.testing.assert_allclose(counts[:support], 1 / support, atol=0.01)
    if ignore_last:
        assert counts[K - 1] == 0
    # Per-sample draws: a batch mixes steps (RLinf draws one per call; same marginal).
    assert len(np.unique(k[:64])) == support


def test_one_line_errors():
    with pytest.raises(ValueError, match=r"noise_method='sde' is not one of"):
        flow_sde.check_noise_method("sde")
    with pytest.raises(ValueError, match="ignore_last=True needs denoising_steps >= 2, got 1"):
        flow_sde.sample_denoise_steps(jax.random.PRNGKey(0), 2, 1, True)
    with pytest.raises(ValueError, match="needs the learned noise std"):
        flow_sde.stochastic_transition(jnp.zeros((1, 2, 2)), jnp.zeros((1, 2, 2)), jnp.zeros(1, jnp.int32),
                                       num_steps=4, noise_method="flow_noise", noise_level=0.5)
