"""GR00T N1.5 flow-matching action head: Flax vs the PyTorch reference (lerobot 0.4.4), fp32, tiny config.

Parity metric: max|flax - torch| / max|torch| <= 1e-5 on several random inputs and embodiment ids.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from gr00t_port.action_head import (FlowmatchingActionHead, action_head_key_rules, denoising_buckets,
                                    dit_time_sinusoid, action_time_sinusoid)
from gr00t_port.config import ActionHeadConfig, GR00TConfig
from gr00t_port.convert import expected_torch_shapes, flat_shapes, n15_checkpoint_config
from gr00t_port.keymap import torch_to_flax_array
from gr00t_reference_head import (action_head_cfg_dict, build_reference_head, head_params_from_torch,
                                  reference_get_action, reference_loss, reference_velocity)

TOL = 1e-5
CFG = ActionHeadConfig.tiny()
HEAD = FlowmatchingActionHead(CFG)
VL_LEN = 7


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@functools.cache
def reference(seed: int):
    ref = build_reference_head(CFG, seed=seed)
    return ref, head_params_from_torch(ref, CFG)


def inputs(seed: int, embodiment_ids, batch: int = 2):
    rng = np.random.default_rng(seed)
    c = CFG
    vl = rng.standard_normal((batch, VL_LEN, c.backbone_embedding_dim)).astype(np.float32)
    state = rng.standard_normal((batch, 1, c.max_state_dim)).astype(np.float32)
    x = rng.standard_normal((batch, c.action_horizon, c.action_dim)).astype(np.float32)
    return vl, state, np.asarray(embodiment_ids, np.int64), x


_velocity = jax.jit(HEAD.velocity)
_get_action = jax.jit(lambda p, vl, s, e, n, steps: HEAD.get_action(p, vl, s, e, noise=n, denoising_steps=steps),
                      static_argnames="steps")


def test_full_size_layout_matches_reference():
    """Full-size N1.5 head: same tensors and shapes as the torch module (built on the meta device), and the
    parameter count of the released model."""
    cfg = ActionHeadConfig()
    shapes = FlowmatchingActionHead(cfg).param_shapes()
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == 1_068_806_144
    expected = expected_torch_shapes(action_head_key_rules(cfg, "", ()), flat_shapes(shapes))
    torch_shapes = {k: tuple(v.shape) for k, v in build_reference_head(cfg, device="meta").state_dict().items()}
    assert torch_shapes == expected
    # RLinf's critic (1024, 512, 256) on 2048 + 1536 inputs: 4,327,425 parameters
    rl = FlowmatchingActionHead(cfg.replace(value_head_hidden_dims=(1024, 512, 256))).param_shapes()
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(rl["value_head"])) == 4_327_425


@pytest.mark.parametrize("seed,embodiment_ids", [(0, [31, 24]), (1, [0, 17]), (2, [26, 26])])
def test_velocity_matches_reference(seed, embodiment_ids):
    ref, params = reference(seed)
    vl, state, emb, x = inputs(seed, embodiment_ids)
    for t_bucket in ([0, 0], [250, 750], [999, 500], [-1, 333]):  # -1: the training-time bucket of t < 0
        t_bucket = np.asarray(t_bucket)
        want = reference_velocity(ref, vl, state, emb, x, t_bucket)
        got = np.asarray(_velocity(params, x, t_bucket, state, emb, vl))
        assert got.shape == want.shape == x.shape
        assert rel_err(got, want) <= TOL, (t_bucket, rel_err(got, want))


@pytest.mark.parametrize("seed,embodiment_ids,steps", [(0, [31, 24], 4), (1, [17, 2], 4), (2, [24, 0], 3)])
def test_get_action_matches_reference(seed, embodiment_ids, steps):
    ref, params = reference(seed)
    vl, state, emb, noise = inputs(seed + 10, embodiment_ids, batch=len(embodiment_ids))
    want = reference_get_action(ref, vl, state, emb, noise, denoising_steps=steps)
    got = np.asarray(_get_action(params, vl, state, emb, noise, steps))
    assert rel_err(got, want) <= TOL
    assert not np.allclose(got, noise)  # the flow actually moved


@pytest.mark.parametrize("seed", [0, 1])
def test_flow_matching_loss_matches_reference(seed):
    ref, params = reference(seed)
    vl, state, emb, noise = inputs(seed + 20, [31, 24])
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, noise.shape).astype(np.float32)
    mask = (rng.random(noise.shape) > 0.3).astype(np.float32)
    t = np.array([0.37, -0.0009], np.float32)  # t < 0 happens when u > s: bucket -1 after truncation
    want = reference_loss(ref, vl, state, emb, actions, mask, noise, t)
    got = float(jax.jit(HEAD.flow_matching_loss)(params, vl, state, emb, actions, mask, noise=noise, t=t))
    assert abs(got - want) / abs(want) <= TOL


def test_sinusoids_match_reference():
    """The two conventions: action encoder [sin, cos] / (dim/2); DiT [cos, sin] / (dim/2 - 1)."""
    from diffusers.models.embeddings import Timesteps
    from lerobot.policies.groot.action_head.action_encoder import SinusoidalPositionalEncoding

    k = np.arange(0, 1000, 37)
    want = SinusoidalPositionalEncoding(1536)(torch.from_numpy(k)[None]).numpy()[0]
    # fp32 arguments up to ~1000 rad: an ulp of the frequency table gives ~6e-5, the reference's own exp error.
    assert np.abs(np.asarray(action_time_sinusoid(jnp.asarray(k), 1536)) - want).max() < 1e-4
    want = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1)(torch.from_numpy(k)).numpy()
    assert np.abs(np.asarray(dit_time_sinusoid(jnp.asarray(k), 256)) - want).max() < 1e-4
    assert np.abs(np.asarray(dit_time_sinusoid(jnp.asarray(k), 256))[:, :128] - np.cos(np.outer(k, np.exp(
        -np.log(1e4) * np.arange(128) / 127)))).max() < 1e-4


def test_denoising_buckets():
    assert denoising_buckets(4, 1000).tolist() == [0, 250, 500, 750]
    assert denoising_buckets(3, 1000).tolist() == [int(i / 3 * 1000) for i in range(3)] == [0, 333, 666]
    with pytest.raises(ValueError, match="denoising_steps=0"):
        denoising_buckets(0, 1000)


def test_cross_attention_kv_projected_once():
    """The Euler loop body must not project VL tokens (no matmul reads a backbone-width operand inside it)."""
    _, params = reference(0)
    vl, state, emb, noise = inputs(0, [31, 24])
    steps = 5  # the Euler loop is the top-level scan of length 5 (fori_loop with static bounds lowers to scan)
    jaxpr = jax.make_jaxpr(lambda p: HEAD.get_action(p, vl, state, emb, noise=noise, denoising_steps=steps))(params)
    loops = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan" and e.params["length"] == steps]
    assert len(loops) == 1
    body = loops[0].params["jaxpr"].jaxpr

    def dots(jx):
        for e in jx.eqns:
            if e.primitive.name == "dot_general":
                yield e
            for value in e.params.values():
                for sub in value if isinstance(value, (tuple, list)) else [value]:
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        yield from dots(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        yield from dots(sub)

    inside = list(dots(body))
    outside = list(dots(jaxpr.jaxpr))
    width = CFG.backbone_embedding_dim
    reads_vl = lambda e: any(v.aval.shape[-1:] == (width,) and len(v.aval.shape) >= 3 for v in e.invars)
    assert inside and not any(reads_vl(e) for e in inside)
    assert sum(reads_vl(e) for e in outside) > 0  # ...while the K/V projections do exist, outside the loop


def test_value_head_matches_rlinf_definition():
    """RLinf critic: MLP(mean over ALL VL tokens after vlln+VLSA ++ state token), weights mapped from torch."""
    cfg = CFG.replace(value_head_hidden_dims=(16, 8))
    head = FlowmatchingActionHead(cfg)
    ref, base = reference(0)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(cfg.value_head_input_dim, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8),
                              torch.nn.ReLU(), torch.nn.Linear(8, 1))
    value_rules = [r for r in action_head_key_rules(cfg, "", ()) if r.torch_key.startswith("value_head.")]
    params = dict(base, value_head={})
    for rule in value_rules:
        w = mlp.state_dict()[rule.torch_key.removeprefix("value_head.mlp.")].numpy()
        params["value_head"].setdefault(rule.flax_path[1], {})[rule.flax_path[2]] = torch_to_flax_array(
            w, rule.transform)
    vl, state, emb, _ = inputs(3, [31, 24])
    got = np.asarray(head.value(params, head.encode_context(params, vl, state, emb)))

    from gr00t_reference_head import _batch
    backbone, action = _batch(vl, state, emb)
    with torch.no_grad():
        vl_t = ref.process_backbone_output(backbone)["backbone_features"]
        s_t = ref.state_encoder(action["state"], action["embodiment_id"])
        want = mlp(torch.cat([vl_t.mean(dim=1), s_t.reshape(len(emb), -1)], dim=-1))[:, 0].numpy()
    assert got.shape == (2,)
    assert rel_err(got, want) <= TOL


def test_bf16_compute_tracks_fp32():
    _, params = reference(0)
    vl, state, emb, noise = inputs(4, [31, 24])
    bf16 = FlowmatchingActionHead(CFG.replace(dtype="bfloat16"))
    got = bf16.get_action(params, vl, state, emb, noise=noise)
    assert got.dtype == jnp.bfloat16
    want = np.asarray(_get_action(params, vl, state, emb, noise, 4))
    assert np.isfinite(np.asarray(got, np.float32)).all()
    assert rel_err(np.asarray(got, np.float32), want) < 5e-2


def test_training_loss_dropout_and_sampling():
    _, params = reference(0)
    vl, state, emb, noise = inputs(5, [31, 24])
    actions, mask = np.tanh(noise), np.ones_like(noise)
    loss_and_grad = jax.jit(jax.value_and_grad(lambda p, d: HEAD.flow_matching_loss(
        p, vl, state, emb, actions, mask, rng=jax.random.key(0), dropout_rng=d)))
    loss_a, grads = loss_and_grad(params, jax.random.key(1))
    loss_b, _ = loss_and_grad(params, jax.random.key(1))
    loss_c, _ = loss_and_grad(params, jax.random.key(2))
    assert loss_a == loss_b and loss_a != loss_c  # dropout (p=0.2) is active with a dropout rng, reproducibly
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    assert np.abs(np.asarray(grads["dit"]["cross_kv"]["blocks"]["to_k"]["kernel"])).max() > 0
    # Beta(1.5, 1) time: t = (0.999 - u) / 0.999 in (-0.001, 1], E[t] = (0.999 - 0.6) / 0.999
    t = np.asarray(HEAD.sample_time(jax.random.key(3), 4000))
    assert t.min() > -0.0011 and t.max() <= 1.0
    assert abs(t.mean() - (0.999 - 0.6) / 0.999) < 0.02


def test_config_from_checkpoint_config():
    assert ActionHeadConfig.from_hf(action_head_cfg_dict(CFG)) == CFG
    released = GR00TConfig.from_checkpoint_config(n15_checkpoint_config())
    assert released == GR00TConfig.n15()
    assert released.action_head == ActionHeadConfig()
    bad = n15_checkpoint_config()
    bad["action_head_cfg"]["diffusion_model_cfg"]["interleave_self_attention"] = False
    with pytest.raises(ValueError, match="interleave_self_attention=False is not supported"):
        GR00TConfig.from_checkpoint_config(bad)
    bad = n15_checkpoint_config()
    bad["action_head_cfg"]["some_new_switch"] = 1
    with pytest.raises(ValueError, match=r"keys the port does not know: \['some_new_switch'\]"):
        GR00TConfig.from_checkpoint_config(bad)
    with pytest.raises(ValueError, match="must equal input_embedding_dim"):
        ActionHeadConfig(input_embedding_dim=1024)


def test_bad_inputs_give_one_line_errors():
    _, params = reference(0)
    vl, state, emb, noise = inputs(0, [31, 24])
    with pytest.raises(ValueError, match=r"embodiment_id \[32\] outside \[0, 32\)"):
        HEAD.get_action(params, vl, state, np.array([31, 32]), noise=noise)
    with pytest.raises(ValueError, match="needs either `noise` or `rng`"):
        HEAD.get_action(params, vl, state, emb)
    with pytest.raises(ValueError, match=r"noise has shape \(2, 3, 6\), expected \(2, 4, 6\)"):
        HEAD.get_action(params, vl, state, emb, noise=noise[:, :3])
