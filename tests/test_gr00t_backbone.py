"""GR00T N1.5 Eagle backbone in Flax vs the PyTorch reference (lerobot 0.4.4), on tiny random-weight models.

Flax params are always produced from the reference's torch state_dict through ``backbone_key_rules`` (via
``load_backbone_params``), so every parity check also checks the converter's key rules and transposes.
Parity metric: max|flax - torch| / max|torch| <= 1e-5 in fp32.
"""

from __future__ import annotations

import copy
import json
import re
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from gr00t_port.backbone_config import EagleBackboneConfig
from gr00t_port.eagle import (EagleBackbone, backbone_key_rules, backbone_param_shapes, backbone_torch_keys,
                              dropped_keys, export_backbone_state, load_backbone_params)
from gr00t_port.keymap import flax_to_torch_array
from gr00t_port.siglip import SiglipVisionModel
from gr00t_reference import (backbone_state_numpy, build_reference_backbone, build_reference_gr00t, eagle_hf_config,
                             load_checkpoint_state, reference_backbone_cfg, run_reference_backbone,
                             save_reference_checkpoint)

RTOL = 1e-5
CFG = EagleBackboneConfig.tiny()
IMG = CFG.image_token_index


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def make_prompts(rng: np.random.Generator, batch: int, images_per_sample: int = 2, text_len: int = 8,
                 pad_left: tuple[int, ...] = (), pad_right: tuple[int, ...] = ()):
    """Token ids laid out like GR00T prompts: text, then per image a run of tokens_per_image <IMG_CONTEXT>, text.

    pad_left / pad_right: per-sample pad counts (mask 0; left pads use id 1, right pads id 0 as in RLinf).
    Returns ids (B, L), mask (B, L), pixels (B * images_per_sample, H, W, C) in [-1, 1].
    """
    rows, masks = [], []
    for b in range(batch):
        toks = list(rng.integers(2, IMG, text_len))
        for _ in range(images_per_sample):
            toks += [IMG] * CFG.tokens_per_image + list(rng.integers(2, IMG, 2))
        left = pad_left[b] if pad_left else 0
        right = pad_right[b] if pad_right else 0
        rows.append([1] * left + toks + [0] * right)
        masks.append([0] * left + [1] * len(toks) + [0] * right)
    ids, mask = np.asarray(rows, np.int32), np.asarray(masks, np.int32)
    size = CFG.vision.image_size
    pixels = rng.uniform(-1, 1, (batch * images_per_sample, size, size, 3)).astype(np.float32)
    return ids, mask, pixels


@pytest.fixture(scope="module")
def reference():
    return build_reference_backbone(CFG, seed=0, attn_implementation="eager")


@pytest.fixture(scope="module")
def params(reference):
    return load_backbone_params(backbone_state_numpy(reference), CFG)


@pytest.fixture(scope="module")
def forward():
    return jax.jit(lambda p, ids, mask, px: EagleBackbone(CFG).apply({"params": p}, ids, mask, px)[0])


# ------------------------------------------------------------------------------------------ sizes and rules


def test_full_config_param_counts_match_release():
    cfg = EagleBackboneConfig.full()
    shapes = backbone_param_shapes(cfg)
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
    vision, text = shapes["vision_model"], shapes["language_model"]
    assert count(vision["embeddings"]) == 973_440
    assert count(vision["encoder"]) == 411_466_608 == 27 * 15_239_504
    assert count(vision["post_layernorm"]) == 2_304
    assert count(shapes["mlp1"]) == 2_361_344
    assert count(text["embed_tokens"]) == 310_640_640
    assert count(text["layers"]) == 604_032_000 == 12 * 50_336_000
    assert count(text["norm"]) == 2_048
    assert count(shapes) == 1_329_478_384

    # Rules fill every Flax leaf (every layer slice exactly once) and imply the release's torch tensor sizes.
    rules, dropped = backbone_key_rules(cfg, flax_prefix=()), dropped_keys(cfg)
    leaves = {tuple(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}
    filled: dict[tuple, list] = {}
    torch_numel = 0
    for rule in rules:
        shape = leaves[rule.flax_path].shape
        if rule.stack_index is not None:
            assert shape[0] == rule.stack_size
            shape = shape[1:]
        torch_numel += flax_to_torch_array(np.empty(shape, np.int8), rule.transform).size
        filled.setdefault(rule.flax_path, []).append(rule.stack_index)
    assert set(filled) == set(leaves)
    assert all(sorted(v) == list(range(len(v))) or v == [None] for v in filled.values())
    assert torch_numel == 1_329_478_384
    assert len(rules) + len(dropped) == 585  # backbone tensors of a released checkpoint, lm_head included
    assert sum(int(np.prod(s)) for s in dropped.values()) == 15_238_352 + 310_640_640  # MAP head + lm_head
    assert len(set(backbone_torch_keys(cfg))) == 585


def test_key_rules_cover_reference_state_dict(reference):
    state = backbone_state_numpy(reference)
    rules, dropped = backbone_key_rules(CFG), dropped_keys(CFG)
    assert {r.torch_key for r in rules} | set(dropped) == set(state)
    assert not {r.torch_key for r in rules} & set(dropped)
    assert {k: tuple(state[k].shape) for k in dropped} == dropped
    # The module's own init has exactly the tree that the rules fill.
    init = jax.eval_shape(EagleBackbone(CFG).init, jax.random.PRNGKey(0), *make_prompts(np.random.default_rng(0), 1))
    loaded = load_backbone_params(state, CFG)
    assert jax.tree.structure(init["params"]) == jax.tree.structure(loaded)
    assert jax.tree.map(jnp.shape, init["params"]) == jax.tree.map(jnp.shape, loaded)


def test_from_hf_reads_eagle_and_checkpoint_configs():
    hf = eagle_hf_config(CFG).to_dict()
    assert EagleBackboneConfig.from_hf(hf, reference_backbone_cfg(CFG)) == CFG
    released_backbone_cfg = reference_backbone_cfg(EagleBackboneConfig.full())
    assert EagleBackboneConfig.from_hf(None, released_backbone_cfg) == EagleBackboneConfig.full()
    assert EagleBackboneConfig.from_hf(hf, {"select_layer": 1}, dtype="bfloat16").select_layer == 1
    with pytest.raises(ValueError, match="use_pixel_shuffle"):
        EagleBackboneConfig.from_hf({**hf, "use_pixel_shuffle": True})
    with pytest.raises(ValueError, match="project_to_dim"):
        EagleBackboneConfig.from_hf(hf, {"select_layer": 2, "project_to_dim": 1536})
    with pytest.raises(ValueError, match="select_layer=4"):
        EagleBackboneConfig.from_hf(hf, {"select_layer": 4})


# ------------------------------------------------------------------------------------------------ parity


def test_vision_features_match_reference(reference, params):
    eagle = reference.eagle_model
    siglip = jax.jit(lambda p, px: SiglipVisionModel(CFG.vision).apply({"params": p}, px))
    encode = jax.jit(lambda p, px: EagleBackbone(CFG).apply({"params": p}, px, method=EagleBackbone.encode_images))
    for seed in range(3):
        pixels = np.random.default_rng(seed).uniform(-1, 1, (3, 28, 28, 3)).astype(np.float32)
        nchw = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())
        with torch.no_grad():
            ref_vit = eagle.vision_model(pixel_values=nchw).last_hidden_state.numpy()
            ref_mlp1 = eagle.extract_feature(nchw).numpy()
        assert rel_err(siglip(params["vision_model"], pixels), ref_vit) <= RTOL
        assert rel_err(encode(params, pixels), ref_mlp1) <= RTOL


@pytest.mark.parametrize("batch", [1, 2])
def test_backbone_features_match_reference(reference, params, forward, batch):
    errors = []
    for seed in range(3):
        ids, mask, pixels = make_prompts(np.random.default_rng(100 + seed), batch)
        ref = run_reference_backbone(reference, ids, mask, pixels)
        out = np.asarray(forward(params, ids, mask, pixels))
        assert out.shape == ref.shape == (batch, ids.shape[1], CFG.output_dim)
        errors.append(rel_err(out, ref))
    assert max(errors) <= RTOL, errors


def test_sdpa_reference_gives_the_same_features(reference, params, forward):
    sdpa = build_reference_backbone(CFG, seed=0, attn_implementation="sdpa")
    sdpa.load_state_dict(reference.state_dict())
    ids, mask, pixels = make_prompts(np.random.default_rng(7), 2)
    assert rel_err(forward(params, ids, mask, pixels), run_reference_backbone(sdpa, ids, mask, pixels)) <= RTOL


def test_padding_follows_flash_attention(reference, params, forward):
    """Left- and right-padded prompts in one batch. Real positions match the plain reference; every position,
    pads included, matches the reference with FlashAttention-2's rule (padded query rows get zero attention)."""
    from transformers.models.qwen3 import modeling_qwen3

    ids, mask, pixels = make_prompts(np.random.default_rng(11), 2, pad_left=(3, 0), pad_right=(0, 3))
    out = np.asarray(forward(params, ids, mask, pixels))
    plain = run_reference_backbone(reference, ids, mask, pixels)
    real = mask.astype(bool)
    assert rel_err(out[real], plain[real]) <= RTOL
    assert rel_err(out[~real], plain[~real]) > 1e-2  # eager pad rows differ, so the check below is not vacuous

    eager = modeling_qwen3.eager_attention_forward

    def zero_padded_queries(module, query, key, value, attention_mask, **kwargs):
        out, weights = eager(module, query, key, value, attention_mask, **kwargs)
        # Additive (B, 1, Lq, Lk) mask: query i is padding exactly when its own key i is masked.
        query_is_real = torch.diagonal(attention_mask[:, 0], dim1=-2, dim2=-1) == 0
        return out * query_is_real[:, :, None, None].to(out.dtype), weights

    with mock.patch.object(modeling_qwen3, "eager_attention_forward", zero_padded_queries):
        flash_like = run_reference_backbone(reference, ids, mask, pixels)
    assert rel_err(out, flash_like) <= RTOL


def test_bfloat16_compute(reference, params):
    cfg = CFG.replace(dtype="bfloat16", param_dtype="bfloat16")
    bf16_params = load_backbone_params(backbone_state_numpy(reference), cfg)
    assert {x.dtype for x in jax.tree.leaves(bf16_params)} == {jnp.dtype(jnp.bfloat16)}
    ids, mask, pixels = make_prompts(np.random.default_rng(3), 1)
    out, _ = jax.jit(EagleBackbone(cfg).apply)({"params": bf16_params}, ids, mask, pixels)
    assert out.dtype == jnp.bfloat16
    fp32_ref = run_reference_backbone(reference, ids, mask, pixels)
    bf16_ref = run_reference_backbone(copy.deepcopy(reference).to(torch.bfloat16), ids, mask, pixels)
    ours, theirs = rel_err(out, fp32_ref), rel_err(bf16_ref, fp32_ref)
    # Both bf16 runs are equally far from fp32 (a few bf16 ulps), not bit-equal (different kernels).
    assert 1e-4 < ours < 5e-2 and ours < 3 * theirs, (ours, theirs)


def test_remat_policy_is_wired(params, forward):
    """Scanned layers are remat-wrapped unless remat_policy="none"; both compute the same features."""
    ids, mask, pixels = make_prompts(np.random.default_rng(5), 1)

    def remat_calls(policy):  # jax names the primitive remat2 (0.10) or checkpoint
        apply = EagleBackbone(CFG.replace(remat_policy=policy)).apply
        jaxpr = str(jax.make_jaxpr(lambda p: apply({"params": p}, ids, mask, pixels)[0])(params))
        return len(re.findall(r"\b(?:remat2|checkpoint)\[", jaxpr))

    assert remat_calls("nothing_saveable") == 2  # the SigLIP scan and the Qwen3 scan
    assert remat_calls("none") == 0
    no_remat = jax.jit(lambda p: EagleBackbone(CFG.replace(remat_policy="none")).apply({"params": p}, ids, mask,
                                                                                         pixels)[0])
    assert rel_err(no_remat(params), forward(params, ids, mask, pixels)) <= 1e-6


# ------------------------------------------------------------------------------------ export and checkpoints


def test_export_round_trip_and_recreated_tensors(reference, params):
    state = backbone_state_numpy(reference)
    exported = export_backbone_state(params, CFG, originals=state)
    assert list(exported) == list(state)  # same keys, in the reference state_dict's order
    for key, value in state.items():
        np.testing.assert_array_equal(exported[key], value, err_msg=key)

    fresh = export_backbone_state(params, CFG)  # no originals: lm_head = embed_tokens copy, pooling head zeros
    embed = state["backbone.eagle_model.language_model.model.embed_tokens.weight"]
    np.testing.assert_array_equal(fresh["backbone.eagle_model.language_model.lm_head.weight"], embed)
    assert not np.any(fresh["backbone.eagle_model.vision_model.vision_model.head.mlp.fc1.weight"])
    other = build_reference_backbone(CFG, seed=1)
    torch_state = {k.removeprefix("backbone."): torch.from_numpy(v) for k, v in fresh.items()}
    assert not other.load_state_dict(torch_state, strict=True).missing_keys


def test_released_layout_checkpoint(tmp_path, forward):
    model = build_reference_gr00t(CFG, seed=2)
    torch_state = model.state_dict()
    lm_head = "backbone.eagle_model.language_model.lm_head.weight"
    assert lm_head in torch_state and "backbone.eagle_model.vision_model.vision_model.head.probe" in torch_state

    ckpt = save_reference_checkpoint(model, tmp_path / "bf16", CFG)  # released layout: bf16 backbone
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    assert list(index["weight_map"]) == list(torch_state)
    assert [k for k in index["weight_map"] if k.startswith("backbone.")] == backbone_torch_keys(CFG)
    assert sorted(set(index["weight_map"].values())) == ["model-00001-of-00002.safetensors",
                                                         "model-00002-of-00002.safetensors"]
    state = load_checkpoint_state(ckpt)
    assert {str(v.dtype) for k, v in state.items() if k.startswith("backbone.")} == {"bfloat16"}
    assert {str(v.dtype) for k, v in state.items() if k.startswith("action_head.")} == {"float32"}
    embed = state["backbone.eagle_model.language_model.model.embed_tokens.weight"]
    np.testing.assert_array_equal(state[lm_head], embed)
    config = json.loads((ckpt / "config.json").read_text())
    assert config["backbone_cfg"]["select_layer"] == CFG.select_layer and config["model_type"] == "gr00t_n1_5"
    eagle_config = json.loads((ckpt / "eagle_config.json").read_text())
    assert EagleBackboneConfig.from_hf(eagle_config, config["backbone_cfg"]) == CFG
    from_bf16 = load_backbone_params(state, CFG)  # the action head's keys are outside the backbone prefix
    assert {x.dtype for x in jax.tree.leaves(from_bf16)} == {jnp.dtype(jnp.float32)}
    np.testing.assert_array_equal(from_bf16["mlp1"]["kernel"],
                                  torch_state["backbone.eagle_model.mlp1.0.weight"].to(torch.bfloat16).float().T)

    # fp32 copy of the same layout: the loaded backbone reproduces the full model's backbone features.
    state32 = load_checkpoint_state(save_reference_checkpoint(model, tmp_path / "fp32", CFG, torch.float32))
    ids, mask, pixels = make_prompts(np.random.default_rng(21), 1)
    out = forward(load_backbone_params(state32, CFG), ids, mask, pixels)
    assert rel_err(out, run_reference_backbone(model.backbone, ids, mask, pixels)) <= RTOL


# ------------------------------------------------------------------------------------------------- errors


def test_bad_inputs_get_one_line_errors(reference, params):
    ids, mask, pixels = make_prompts(np.random.default_rng(0), 1)
    module = EagleBackbone(CFG)
    with pytest.raises(ValueError, match=r"8 <IMG_CONTEXT> tokens .* but 1 images x 4 tokens = 4 vision tokens"):
        module.apply({"params": params}, ids, mask, pixels[:1])
    with pytest.raises(ValueError, match=r"must be NHWC"):
        module.apply({"params": params}, ids, mask, pixels.transpose(0, 3, 1, 2))
    state = backbone_state_numpy(reference)
    with pytest.raises(ValueError, match="have no rule"):
        load_backbone_params({**state, "backbone.eagle_model.mlp1.1.weight": np.zeros(1)}, CFG)
    missing = dict(state)
    del missing["backbone.eagle_model.language_model.model.norm.weight"]
    with pytest.raises(ValueError, match="missing, e.g. \\['backbone.eagle_model.language_model.model.norm.weight"):
        load_backbone_params(missing, CFG)
    with pytest.raises(ValueError, match="select_layer=0"):
        CFG.replace(select_layer=0)
