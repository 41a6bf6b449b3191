"""GR00T N1.5 as an RL policy (``jaxrl_isaac.models.gr00t_policy``): a tiny GR00T with random weights, the tiny
tokenizer, RLinf's processor settings, embedded-env observations (64x64 cameras), on CPU.

Checks: read_obs shapes and exactness, the Flow-SDE log-prob of a sampled chain against numpy, evaluate == sample
(ratio 1), the chain's deterministic steps, joint_logprob, deterministic act == the action head's get_action from
x_0 = 0, env actions == the processor's numpy conversion, value shape, frozen-backbone gradients, one PPO update
through ``learner.make_update_fn``, the learned-noise head, from_config on a converted-layout checkpoint, errors.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gr00t_port import processor as P  # noqa: E402
from gr00t_port.backbone_config import EagleBackboneConfig  # noqa: E402
from gr00t_port.config import ActionHeadConfig, GR00TConfig  # noqa: E402
from gr00t_port.model import GR00TN15  # noqa: E402
from gr00t_port.normalization import EmbodimentMetadata  # noqa: E402
from jaxrl_isaac import learner, sharding  # noqa: E402
from jaxrl_isaac.models import flow_sde  # noqa: E402
from jaxrl_isaac.models.gr00t_policy import GR00TRLConfig, GR00TRLPolicy, eagle_pixel_values  # noqa: E402
from tiny_tokenizer import TINY_VOCAB_SIZE, tiny_token_id, write_tiny_qwen_tokenizer  # noqa: E402

TAG = "isaaclab_franka"
KEYS = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
TASK = "Stack the red cube on the blue cube"
CAM = 64
PAD_TO = 96  # fixed token length (RLinf: 570); the tiny prompt has 50 tokens
C, K = 3, 4  # executed steps of the 4-step horizon; denoising steps
RL = GR00TRLConfig(num_action_chunks=C, denoising_steps=K, value_head_hidden_dims=(16, 8))


def _model_config() -> GR00TConfig:
    # The tiny architecture with the tiny tokenizer's vocabulary and <IMG_CONTEXT> id; 8 model action dims so that
    # one padded dim exists beyond the 7 real ones. No remat: same numerics, half the CPU compile time.
    b = EagleBackboneConfig.tiny(remat_policy="none")
    b = b.replace(text=dataclasses.replace(b.text, vocab_size=TINY_VOCAB_SIZE),
                  image_token_index=tiny_token_id("<IMG_CONTEXT>"))
    return GR00TConfig(backbone=b, action_head=ActionHeadConfig.tiny(b.output_dim, remat_policy="none").replace(
        action_dim=8))


def _metadata_entry() -> dict:
    rng = np.random.default_rng(0)

    def stats(dim):
        lo = rng.normal(size=dim)
        return {"min": lo.tolist(), "max": (lo + rng.uniform(0.2, 2.0, dim)).tolist()}

    spec = lambda d: {"absolute": True, "rotation_type": None, "shape": [d], "continuous": True}  # noqa: E731
    dims = {k: (2 if k == "gripper" else 1) for k in KEYS}
    video = {k: {"resolution": [CAM, CAM], "channels": 3, "fps": 20.0} for k in ("image", "wrist_image")}
    return {"statistics": {"state": {k: stats(dims[k]) for k in KEYS}, "action": {k: stats(1) for k in KEYS}},
            "modalities": {"video": video, "state": {k: spec(dims[k]) for k in KEYS},
                           "action": {k: spec(1) for k in KEYS}}, "embodiment_tag": TAG}


def _processor_config(cfg: GR00TConfig) -> P.GR00TProcessorConfig:
    h = cfg.action_head
    return dataclasses.replace(P.RLINF_ISAACLAB_CONFIG, pad_to_length=PAD_TO, pixel_layout="NHWC",
                               image_size=cfg.backbone.vision.image_size,
                               tokens_per_image=cfg.backbone.tokens_per_image, max_state_dim=h.max_state_dim,
                               max_action_dim=h.action_dim, action_horizon=h.action_horizon)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return write_tiny_qwen_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def processor(tokenizer_dir):
    cfg = _model_config()
    return P.GR00TProcessor(_processor_config(cfg), EmbodimentMetadata.from_json_entry(_metadata_entry(), TAG),
                            P.load_tokenizer(tokenizer_dir))


def _jit(fn):
    """jax.jit with XLA's backend (LLVM) optimizations off: half the CPU compile time of these tiny graphs."""
    return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0})


@functools.lru_cache(maxsize=None)
def _random_params(seed: int) -> dict:
    """Random {"backbone", "action_head"} params filled in numpy from the model's shapes (a jitted Flax init of the
    whole model takes ~15 s to compile on CPU): kernels N(0, 1/fan_in), norm scales 1 + N(0, 0.02^2), the rest
    N(0, 0.02^2)."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        x = rng.standard_normal(leaf.shape)
        if name == "scale":
            x = 1 + 0.02 * x
        elif name in ("kernel", "W") and leaf.ndim >= 2:
            x = x / np.sqrt(leaf.shape[-2])
        else:
            x = 0.02 * x
        return x.astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, GR00TN15(_model_config()).param_shapes())


def _policy(processor, **rl) -> GR00TRLPolicy:
    return GR00TRLPolicy(dataclasses.replace(RL, **rl), _model_config(), processor, quat_order="xyzw",
                         task_description=TASK, base_params=_random_params(0))


@pytest.fixture(scope="module")
def env_obs():
    from jaxrl_isaac.envs import embedded
    env = embedded.make("Embedded-Stack-Cube-Franka-IK-Rel-Visuomotor-v0", num_envs=2, table_cam=(CAM, CAM),
                        wrist_cam=(CAM, CAM))
    first, _ = env.reset(seed=0)
    first = {k: v.clone() for k, v in first["policy"].items()}
    second, *_ = env.step(torch.full((2, 7), 0.3))
    second = {k: v.clone() for k, v in second["policy"].items()}
    env.close()
    return first, second


@pytest.fixture(scope="module")
def setup(processor, env_obs):
    policy = _policy(processor)
    obs = {k: jnp.asarray(v.numpy()) for k, v in policy.read_obs(env_obs[0]).items()}
    params = policy.init(jax.random.PRNGKey(0), obs)
    fns = types.SimpleNamespace(sample=_jit(policy.sample), evaluate=_jit(policy.evaluate),
                                velocity=_jit(policy.head.velocity_from_context), encode=_jit(policy.encode))
    return policy, obs, params, fns


def _np_step_logprob(policy, fns, params, obs, chain, steps):
    """Independent float64 Gaussian log-density of chain[:, k+1] given chain[:, k] (spec §5.4 formulas), summed
    over the executed C steps x 7 real dims. Only the velocity comes from the model."""
    ctx = fns.encode(params, obs)
    buckets = [int(i / K * 1000) for i in range(K)]  # 0, 250, 500, 750
    a, total = RL.noise_level, np.zeros(chain.shape[0])
    for b, k in enumerate(steps):
        v = np.asarray(fns.velocity(params["action_head"], ctx, jnp.asarray(chain[:, k]),
                                    jnp.full((chain.shape[0],), buckets[k])), np.float64)[b]
        x, t, dt = chain[b, k].astype(np.float64), k / K, 1 / K
        sigma = a * math.sqrt((1 - t) / max(t, 1 / K))
        mean = (x - v * t) * (1 - (t + dt) - sigma ** 2 * dt / (2 * (1 - t))) + (x + v * (1 - t)) * (t + dt)
        std = math.sqrt(dt) * sigma
        z = (chain[b, k + 1].astype(np.float64) - mean) / std
        total[b] = (-0.5 * z ** 2 - math.log(std * math.sqrt(2 * math.pi)))[:C, :7].sum()
    return total


# ------------------------------------------------------------------------------------------------------ tests


def test_read_obs_fixed_shapes_and_exact_pixels(setup, processor, env_obs):
    policy, _, _, _ = setup
    S = policy.model_config.backbone.vision.image_size
    outs = [policy.read_obs(o) for o in env_obs]
    for out in outs:
        assert {k: (tuple(v.shape), v.dtype) for k, v in out.items()} == {
            "eagle_input_ids": ((2, PAD_TO), torch.int32), "eagle_attention_mask": ((2, PAD_TO), torch.int32),
            "eagle_images": ((2, 2, S, S, 3), torch.uint8), "state": ((2, 1, 10), torch.float32),
            "embodiment_id": ((2,), torch.int32)}
        assert out["embodiment_id"].tolist() == [31, 31]
    # The uint8 frames, normalized as the policy does in JAX, are exactly the processor's float pixels.
    from jaxrl_isaac.envs import obs_mapping
    m = obs_mapping.to_model_inputs(env_obs[1], "xyzw", TASK)
    ref = processor({"image": m["table_image"], "wrist_image": m["wrist_image"]}, m["state"], TASK)
    u8 = jnp.asarray(outs[1]["eagle_images"].numpy())
    ours = np.asarray(eagle_pixel_values(u8))
    np.testing.assert_array_equal(ours, ref["eagle_pixel_values"])
    np.testing.assert_array_equal(outs[1]["eagle_input_ids"].numpy(), ref["eagle_input_ids"])
    np.testing.assert_array_equal(outs[1]["state"].numpy(), ref["state"])
    assert int(ref["eagle_attention_mask"].sum(1)[0]) == 50  # right-padded with mask 0 up to PAD_TO
    with pytest.raises(KeyError, match="policy observation group has no term 'wrist_cam'"):
        policy.read_obs({k: v for k, v in env_obs[0].items() if k != "wrist_cam"})


def test_sample_logprob_chain_and_actions(setup, processor):
    policy, obs, params, fns = setup
    s = fns.sample(params, obs, jax.random.PRNGKey(1))
    chain, k = np.asarray(s.train_inputs["chain"]), np.asarray(s.train_inputs["denoise_step"])
    assert chain.shape == (2, K + 1, 4, 8) and k.shape == (2,) and s.logprob.shape == (2,)
    assert s.value.shape == (2,) and s.actions.shape == (2, C, 7) and s.actions.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(s.logprob), _np_step_logprob(policy, fns, params, obs, chain, k),
                               rtol=1e-5)
    # Every step except k is the deterministic Euler step; step k is not.
    ctx = fns.encode(params, obs)
    for i in range(K):
        v = np.asarray(fns.velocity(params["action_head"], ctx, jnp.asarray(chain[:, i]), jnp.full((2,), 250 * i)))
        euler = chain[:, i] + v / K
        for b in range(2):
            close = np.allclose(chain[b, i + 1], euler[b], rtol=1e-5, atol=1e-6)
            assert close == (i != k[b]), (i, b, k)
    # Env actions = the processor's numpy unnormalization + RLinf's IsaacLab stack-cube conversion of x_K.
    ref = P.isaaclab_stack_cube_actions(processor.env_actions(chain[:, -1]), C)
    np.testing.assert_allclose(np.asarray(s.actions), ref, rtol=1e-6, atol=1e-6)
    assert set(np.unique(np.asarray(s.actions)[..., -1])) <= {-1.0, 1.0}
    # The denoising step is uniform over the K steps, drawn per sample.
    seen = np.concatenate([np.asarray(fns.sample(params, obs, jax.random.PRNGKey(i)).train_inputs["denoise_step"])
                           for i in range(20)])
    assert set(seen.tolist()) == set(range(K))


def test_evaluate_reproduces_sample_ratio_one(setup):
    policy, obs, params, fns = setup
    for seed in range(3):
        s = fns.sample(params, obs, jax.random.PRNGKey(10 + seed))
        e = fns.evaluate(params, obs, s.train_inputs)
        np.testing.assert_allclose(np.exp(np.asarray(e.logprob - s.logprob)), 1.0, atol=1e-5)
        np.testing.assert_allclose(np.asarray(e.value), np.asarray(s.value), rtol=1e-6)
        # Entropy of the Gaussian at step k over C x 7 elements: sum of 0.5 log(2 pi e std_k^2).
        std = np.sqrt(1 / K) * flow_sde.flow_sde_sigmas(K, 0.5)[np.asarray(s.train_inputs["denoise_step"])]
        np.testing.assert_allclose(np.asarray(e.entropy), C * 7 * 0.5 * np.log(2 * np.pi * np.e * std ** 2),
                                   rtol=1e-5)
    # Different params: the ratio moves.
    moved = jax.tree.map(lambda x: x * 1.05, params)
    assert np.abs(np.asarray(fns.evaluate(moved, obs, s.train_inputs).logprob - s.logprob)).max() > 1e-3


def test_cached_backbone_features_give_the_same_evaluate_without_running_the_backbone(setup, processor):
    policy, obs, params, fns = setup
    cached = _policy(processor, cache_backbone_features=True)
    sample, evaluate = _jit(cached.sample), _jit(cached.evaluate)
    s = sample(params, obs, jax.random.PRNGKey(7))
    features = s.train_inputs["backbone_features"]
    np.testing.assert_array_equal(np.asarray(features), np.asarray(_jit(cached.backbone_features)(params, obs)))
    plain_inputs = {k: v for k, v in s.train_inputs.items() if k != "backbone_features"}
    np.testing.assert_array_equal(np.asarray(s.logprob),
                                  np.asarray(fns.sample(params, obs, jax.random.PRNGKey(7)).logprob))
    # The update's params differ from the rollout's only in trainable (head) params; the backbone is frozen.
    moved = dict(params, action_head=jax.tree.map(lambda x: x * 1.05, params["action_head"]))
    # Images the backbone would see differently: with cached features evaluate must not look at them.
    blind = dict(obs, eagle_images=jnp.zeros_like(obs["eagle_images"]))
    for p in (params, moved):
        want = fns.evaluate(p, obs, plain_inputs)
        got = evaluate(p, blind, s.train_inputs)
        for w, g in zip(want, got):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(fns.evaluate(params, blind, plain_inputs).logprob - s.logprob)).max() > 1e-3
    # A trainable backbone changes its features under the update, so nothing is cached then.
    assert "backbone_features" not in _jit(_policy(processor, cache_backbone_features=True, tune_llm=True).sample)(
        params, obs, jax.random.PRNGKey(7)).train_inputs


def test_act_is_deterministic_euler_equal_to_get_action(setup, processor):
    policy, obs, params, _ = setup
    h = policy.model_config.action_head
    inputs = {"eagle_input_ids": obs["eagle_input_ids"], "eagle_attention_mask": obs["eagle_attention_mask"],
              "eagle_pixel_values": eagle_pixel_values(obs["eagle_images"]), "state": obs["state"],
              "embodiment_id": obs["embodiment_id"]}
    zeros = jnp.zeros((2, h.action_horizon, h.action_dim))
    get_action = _jit(lambda p, x: GR00TN15(policy.model_config).get_action(p, x, noise=zeros, denoising_steps=K))
    ref = np.asarray(get_action(params, inputs))  # normalized (2, 4, 8), the action head's Euler loop from x_0 = 0
    act = _jit(policy.act)
    actions = np.asarray(act(params, obs))
    expected = P.isaaclab_stack_cube_actions(processor.env_actions(ref), C)
    np.testing.assert_allclose(actions[..., :6], expected[..., :6], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(actions[..., 6], expected[..., 6])
    np.testing.assert_array_equal(actions, np.asarray(act(params, obs)))  # no randomness


def test_value_shape(setup):
    policy, obs, params, fns = setup
    v = _jit(policy.value)(params, obs)
    assert v.shape == (2,) and v.dtype == jnp.float32 and np.isfinite(np.asarray(v)).all()
    np.testing.assert_allclose(np.asarray(v), np.asarray(fns.sample(params, obs, jax.random.PRNGKey(0)).value),
                               rtol=1e-6)


def test_trainable_set(processor, setup):
    policy, _, params, _ = setup
    assert not policy.is_trainable_param(("backbone", "vision_model", "encoder", "kernel"))
    assert not policy.is_trainable_param(("backbone", "language_model", "x"))
    assert policy.is_trainable_param(("action_head", "dit", "proj_out_1", "kernel"))
    assert policy.is_value_param(("action_head", "value_head", "dense_0", "kernel"))
    assert not policy.is_value_param(("action_head", "dit", "proj_out_1", "kernel"))
    paths = [tuple(str(p.key) for p in path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    assert all(policy.is_trainable_param(p) == (p[0] != "backbone") for p in paths)
    assert {p[:2] for p in paths if policy.is_value_param(p)} == {("action_head", "value_head")}
    tuned = _policy(processor, tune_visual=True)
    assert tuned.is_trainable_param(("backbone", "vision_model", "x"))
    assert tuned.is_trainable_param(("backbone", "mlp1"))
    assert not tuned.is_trainable_param(("backbone", "language_model", "x"))
    assert _policy(processor, tune_llm=True).is_trainable_param(("backbone", "language_model", "x"))
    # The optimizer integration (a "frozen" group with set_to_zero) keeps the backbone fixed even under weight
    # decay and with non-zero gradients, and updates the head and the value head.
    toy = {"backbone": {"vision_model": {"k": jnp.ones(3)}, "mlp1": {"k": jnp.ones(2)},
                        "language_model": {"k": jnp.ones(2)}},
           "action_head": {"dit": {"k": jnp.ones(3)}, "value_head": {"k": jnp.ones(2)}}}
    tx = _frozen_aware_optimizer(learner.OptimSettings(lr=1e-3, value_lr=1e-3, weight_decay=0.1), policy)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, toy), tx.init(toy), toy)
    assert float(optax.global_norm(updates["backbone"])) == 0.0
    assert all(float(optax.global_norm(u)) > 0 for u in updates["action_head"].values())


def _frozen_aware_optimizer(o: learner.OptimSettings, policy) -> optax.GradientTransformation:
    """learner.make_optimizer plus a "frozen" group (the integration the lead adds to learner.py)."""
    names = lambda path: tuple(str(getattr(p, "key", p)) for p in path)  # noqa: E731

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "frozen" if not policy.is_trainable_param(names(path))
            else "value" if policy.is_value_param(names(path)) else "policy", params)

    adamw = lambda lr: optax.adamw(lr, b1=o.adam_beta1, b2=o.adam_beta2, eps=o.adam_eps,  # noqa: E731
                                   weight_decay=o.weight_decay)
    return optax.chain(optax.clip_by_global_norm(o.clip_grad), optax.multi_transform(
        {"policy": adamw(o.lr), "value": adamw(o.value_lr), "frozen": optax.set_to_zero()}, labels))


def test_ppo_update_gradients_reach_the_head_not_the_backbone(setup):
    """One update through learner.make_update_fn with the plain AdamW and no weight decay: a parameter moves iff
    its gradient is non-zero, so an unchanged backbone shows that evaluate() stops its gradients."""
    policy, obs, params, fns = setup
    samples = [fns.sample(params, obs, jax.random.PRNGKey(20 + i)) for i in range(2)]
    rng = np.random.default_rng(0)
    cat = lambda *x: jnp.concatenate(x)  # noqa: E731
    batch = {"obs": jax.tree.map(cat, obs, obs), "train_inputs": jax.tree.map(cat, *[s.train_inputs for s in samples]),
             "logprob": cat(*[s.logprob for s in samples]), "value": cat(*[s.value for s in samples]),
             "advantages": jnp.asarray(rng.normal(size=4), jnp.float32),
             "returns": jnp.asarray(rng.normal(size=4), jnp.float32), "mask": jnp.ones(4, bool)}
    mesh = sharding.make_mesh([0])
    tx = learner.make_optimizer(learner.OptimSettings(lr=1e-3, value_lr=1e-3, weight_decay=0.0),
                                policy.is_value_param)
    sched = learner.Schedule(num_samples=4, global_batch_size=4, micro_batch_size=2, update_epoch=1)
    update = learner.make_update_fn(policy, tx, learner.LossSettings(), sched, mesh)
    before = jax.tree.map(np.array, params)
    own = jax.tree.map(jnp.copy, params)  # the update donates its state
    state = jax.device_put(learner.init_train_state(own, tx), sharding.replicated(mesh))
    batch = jax.device_put(batch, sharding.batch_sharded(mesh))
    # learner's own jitted update, compiled with XLA's backend optimizations off (CPU compile time halves).
    compiled = update.lower(state, batch, jax.random.PRNGKey(0)).compile({"xla_backend_optimization_level": 0})
    state, metrics = compiled(state, batch, jax.random.PRNGKey(0))
    metrics = {k: float(v) for k, v in metrics.items()}
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert abs(metrics["actor/ratio"] - 1.0) < 1e-5 and metrics["actor/skipped_updates"] == 0
    after = jax.tree.map(np.asarray, state.params)
    for a, b in zip(jax.tree.leaves(before["backbone"]), jax.tree.leaves(after["backbone"])):
        np.testing.assert_array_equal(a, b)
    for part in ("dit", "action_encoder", "action_decoder", "state_encoder", "vl_self_attention", "vlln",
                 "value_head"):
        moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before["action_head"][part]),
                                                          jax.tree.leaves(after["action_head"][part]))]
        assert any(moved), part


def test_joint_logprob_every_step_stochastic(processor, setup):
    _, obs, params, fns = setup
    policy = _policy(processor, joint_logprob=True)
    s = _jit(policy.sample)(params, obs, jax.random.PRNGKey(3))
    chain = np.asarray(s.train_inputs["chain"])
    assert (np.asarray(s.train_inputs["denoise_step"]) == -1).all()
    per_step = [_np_step_logprob(policy, fns, params, obs, chain, [i, i]) for i in range(K)]
    np.testing.assert_allclose(np.asarray(s.logprob), np.sum(per_step, axis=0), rtol=1e-5)
    e = _jit(policy.evaluate)(params, obs, s.train_inputs)
    np.testing.assert_allclose(np.exp(np.asarray(e.logprob - s.logprob)), 1.0, atol=1e-5)


def test_learned_noise_head(processor, setup):
    _, obs, _, _ = setup
    policy = _policy(processor, noise_method="flow_noise")
    params = policy.init(jax.random.PRNGKey(1))
    assert set(params) == {"backbone", "action_head", "explore_noise_net"}
    s = _jit(policy.sample)(params, obs, jax.random.PRNGKey(4))

    def loss(noise_net):  # gradient w.r.t. the noise net only: a small backward pass to compile
        e = policy.evaluate({**params, "explore_noise_net": noise_net}, obs, s.train_inputs)
        return e.logprob.sum(), e

    grads, e = _jit(jax.grad(loss, has_aux=True))(params["explore_noise_net"])
    np.testing.assert_allclose(np.exp(np.asarray(e.logprob - s.logprob)), 1.0, atol=1e-5)
    # std in [0.08, 0.16] per element: the entropy over C x 7 elements is bounded accordingly.
    lo, hi = (C * 7 * (0.5 * np.log(2 * np.pi * np.e) + np.log(x)) for x in (0.08, 0.16))
    assert ((np.asarray(e.entropy) > lo) & (np.asarray(e.entropy) < hi)).all()
    assert float(optax.global_norm(grads)) > 0


def test_from_config_on_a_converted_checkpoint(tmp_path, tokenizer_dir, monkeypatch, env_obs):
    import orbax.checkpoint as ocp

    from jaxrl_isaac.config.schema import AlgorithmConfig, ModelConfig, RLHeadConfig

    cfg = _model_config()
    base = _random_params(5)
    assets = {"gr00t_config": cfg.to_dict(), "metadata": {TAG: _metadata_entry()}}
    options = ocp.CheckpointManagerOptions(step_prefix="global_step", create=True, enable_async_checkpointing=False)
    mngr = ocp.CheckpointManager(tmp_path.absolute(), options=options, item_names=("params", "assets"))
    mngr.save(0, args=ocp.args.Composite(params=ocp.args.PyTreeSave(base), assets=ocp.args.JsonSave(assets)))
    mngr.wait_until_finished()
    mngr.close()
    monkeypatch.setenv(P.TOKENIZER_ENV_VAR, str(tokenizer_dir))
    model = ModelConfig(model_path=str(tmp_path / "global_step_0"), precision="fp32", num_action_chunks=C,
                        embodiment_tag=TAG, obs_converter_type="isaaclab_stack_cube",
                        rl_head_config=RLHeadConfig(padding_value=PAD_TO))
    train_cfg = types.SimpleNamespace(actor=types.SimpleNamespace(model=model), algorithm=AlgorithmConfig(),
                                      env=types.SimpleNamespace(train=types.SimpleNamespace(
                                          init_params=types.SimpleNamespace(task_description=None))))
    fake_env = types.SimpleNamespace(quat_order="xyzw", task_description=TASK)
    policy = GR00TRLPolicy.from_config(train_cfg, fake_env)
    assert policy.task_description == TASK  # the env's own instruction: the config gives none
    assert policy.model_config.action_head.value_head_hidden_dims == (1024, 512, 256)  # RLinf's critic
    obs = {k: jnp.asarray(v.numpy()) for k, v in policy.read_obs(env_obs[0]).items()}
    params = policy.init(jax.random.PRNGKey(0), obs)
    np.testing.assert_array_equal(np.asarray(params["action_head"]["dit"]["proj_out_2"]["kernel"]),
                                  base["action_head"]["dit"]["proj_out_2"]["kernel"])
    value_in = cfg.action_head.value_head_input_dim
    assert params["action_head"]["value_head"]["dense_0"]["kernel"].shape == (value_in, 1024)
    assert _jit(policy.value)(params, obs).shape == (2,)
    train_cfg.actor.model = dataclasses.replace(model, rl_head_config=RLHeadConfig(disable_dropout=False))
    with pytest.raises(ValueError, match="disable_dropout=False is not supported"):
        GR00TRLPolicy.from_config(train_cfg, fake_env)


def test_one_line_errors(processor, setup):
    policy, obs, params, _ = setup
    with pytest.raises(ValueError, match=r"num_action_chunks=5 must be in \[1, action_horizon=4\]"):
        _policy(processor, num_action_chunks=5)
    with pytest.raises(ValueError, match="noise_method='sde' is not one of"):
        GR00TRLConfig(noise_method="sde")
    with pytest.raises(ValueError, match="logprob_type='token_level' is not supported"):
        GR00TRLConfig(logprob_type="token_level")
    unpadded = P.GR00TProcessor(dataclasses.replace(processor.config, pad_to_length=None), processor.metadata,
                                processor.tokenizer)
    with pytest.raises(ValueError, match="pad_to_length must be set"):
        GR00TRLPolicy(RL, _model_config(), unpadded, quat_order="xyzw", task_description=TASK)
    with pytest.raises(KeyError, match=r"obs lack \['state'\]"):
        policy.value(params, {k: v for k, v in obs.items() if k != "state"})
    with pytest.raises(ValueError, match="do not fit the configured model: missing"):
        GR00TRLPolicy(RL, _model_config(), processor, quat_order="xyzw", task_description=TASK,
                      base_params={"backbone": {}, "action_head": params["action_head"]}).init(jax.random.PRNGKey(0))


@pytest.mark.slow
def test_ppo_on_a_fixed_observation_bandit_moves_actions_to_the_rewarded_target(processor, env_obs):
    """The Flow-SDE policy gradient learns: B copies of one observation, reward -||a - a*||^2 over the executed
    pose dims, group-normalized advantages, 4 clipped-surrogate Adam steps per batch. The deterministic action's
    error must shrink 4-fold and the sampled batch's mean error 2-fold (measured on CPU: deterministic reward
    -0.72 -> -0.07, sampled -1.09 -> -0.43 (mean of the last 3 of 15 iterations)); a sign or teacher-forcing
    error in sample/evaluate would leave them flat or make them worse."""
    policy = _policy(processor)
    one = {k: jnp.asarray(v.numpy()) for k, v in policy.read_obs(env_obs[0]).items()}
    batch = 64
    obs = jax.tree.map(lambda x: jnp.repeat(x[:1], batch, axis=0), one)
    params = policy.init(jax.random.PRNGKey(0), obs)
    target = jnp.linspace(-0.5, 0.5, 6, dtype=jnp.float32)
    reward = lambda a: -jnp.mean(jnp.square(a[..., :6] - target), axis=(-2, -1))  # noqa: E731
    trainable = jax.tree_util.tree_map_with_path(
        lambda path, _: policy.is_trainable_param(tuple(str(getattr(p, "key", p)) for p in path)), params)
    tx = optax.masked(optax.adam(1e-3), trainable)
    opt = tx.init(params)

    def surrogate(p, train_inputs, logp_old, adv):
        ratio = jnp.exp(policy.evaluate(p, obs, train_inputs).logprob - logp_old)
        return jnp.mean(jnp.maximum(-adv * ratio, -adv * jnp.clip(ratio, 0.8, 1.2)))

    @jax.jit
    def update(p, opt, train_inputs, logp_old, adv):
        grads = jax.grad(surrogate)(p, train_inputs, logp_old, adv)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt

    sample, act = jax.jit(policy.sample), jax.jit(policy.act)
    det_before = float(reward(act(params, obs))[0])
    sampled = []
    for it in range(15):
        s = sample(params, obs, jax.random.PRNGKey(100 + it))
        r = reward(s.actions)
        sampled.append(float(r.mean()))
        adv = (r - r.mean()) / (r.std() + 1e-6)
        for _ in range(4):
            params, opt = update(params, opt, s.train_inputs, s.logprob, adv)
    det_after = float(reward(act(params, obs))[0])
    assert det_after > det_before / 4, (det_before, det_after)
    assert np.mean(sampled[-3:]) > sampled[0] / 2, sampled


@pytest.mark.parametrize("detach", [True, False])
def test_detach_critic_input_stops_value_gradients_at_the_shared_features(processor, setup, detach):
    _, obs, params, fns = setup
    policy = _policy(processor, detach_critic_input=detach)
    sample = fns.sample(params, obs, jax.random.PRNGKey(3))
    grads = jax.jit(jax.grad(lambda p: policy.evaluate(p, obs, sample.train_inputs).value.sum()))(params)
    norm = lambda tree: float(optax.global_norm(tree))  # noqa: E731
    assert norm(grads["action_head"]["value_head"]) > 0
    for shared in ("vl_self_attention", "vlln", "state_encoder"):
        assert (norm(grads["action_head"][shared]) == 0) == detach, shared
