"""The whole GR00T N1.5 model in Flax (``gr00t_port.model``) vs the PyTorch reference ``GR00TN15.get_action``
(lerobot 0.4.4), end to end, fp32, tiny config with random weights.

Flax params come from the reference's state_dict through the converter's whole-model key rules
(``convert.model_key_rules``), so the check also covers the backbone + head key maps together. Both sides start the
flow from the same injected noise. Parity metric: max|flax - torch| / max|torch| <= 1e-5.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.sharding import PartitionSpec as P

from gr00t_port.config import GR00TConfig
from gr00t_port.convert import (assemble_params, expected_torch_shapes, flat_shapes, model_dropped_keys,
                                model_key_rules, model_param_shapes)
from gr00t_port.model import GR00TN15, make_sharded_params, param_shapes
from gr00t_port.reference_torch import build_reference_model, reference_get_action, torch_inputs
from gr00t_reference import build_reference_gr00t, torch_to_numpy
from gr00t_reference_head import action_head_cfg_dict
from jaxrl_isaac.sharding import make_mesh

TOL = 1e-5
CFG = GR00TConfig.tiny()  # fp32 compute and params
MODEL = GR00TN15(CFG)
TEXT_TOKENS = 7


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def make_inputs(seed: int, embodiment_ids, images_per_sample: int = 2):
    """Equal-length prompts (no padding, as the action head uses no mask): text, per image a run of
    tokens_per_image <IMG_CONTEXT> then 2 text tokens; NHWC pixels in [-1, 1]; state; initial noise."""
    b, h = CFG.backbone, CFG.action_head
    rng = np.random.default_rng(seed)
    batch = len(embodiment_ids)
    rows = []
    for _ in range(batch):
        row = list(rng.integers(2, b.image_token_index, TEXT_TOKENS))
        for _ in range(images_per_sample):
            row += [b.image_token_index] * b.tokens_per_image + list(rng.integers(2, b.image_token_index, 2))
        rows.append(row)
    ids = np.asarray(rows, np.int64)
    size = b.vision.image_size
    inputs = {
        "eagle_input_ids": ids,
        "eagle_attention_mask": np.ones_like(ids),
        "eagle_pixel_values": rng.uniform(-1, 1, (batch * images_per_sample, size, size, 3)).astype(np.float32),
        "state": rng.standard_normal((batch, 1, h.max_state_dim)).astype(np.float32),
        "state_mask": np.ones((batch, 1, h.max_state_dim), bool),  # processor output, unused by the model
        "embodiment_id": np.asarray(embodiment_ids, np.int64),
    }
    noise = rng.standard_normal((batch, h.action_horizon, h.action_dim)).astype(np.float32)
    return inputs, noise


@pytest.fixture(scope="module")
def reference():
    return build_reference_gr00t(CFG.backbone, action_head_cfg_dict(CFG.action_head), seed=0)


@pytest.fixture(scope="module")
def params(reference):
    """Strict in-memory conversion of the reference's whole state_dict with the converter's rules."""
    state = {k: torch_to_numpy(v) for k, v in reference.state_dict().items()}
    rules = model_key_rules(CFG)
    target = flat_shapes(model_param_shapes(CFG))
    expected = expected_torch_shapes(rules, target)
    dropped = model_dropped_keys(CFG)
    assert sorted(set(state) - set(expected) - set(dropped)) == []
    assert sorted(set(expected) - set(state)) == []
    assert {k: tuple(state[k].shape) for k in expected} == expected
    return jax.tree.map(jnp.asarray, assemble_params(rules, target, state.__getitem__, log=lambda _: None))


_get_action = jax.jit(lambda p, inputs, noise: MODEL.get_action(p, inputs, noise=noise))


@pytest.mark.parametrize("seed, embodiment_ids", [(0, [24]), (1, [31]), (2, [17, 3])])
def test_get_action_matches_reference(reference, params, seed, embodiment_ids):
    inputs, noise = make_inputs(seed, embodiment_ids)
    got = np.asarray(_get_action(params, inputs, noise))
    want = reference_get_action(reference, torch_inputs(inputs), torch.from_numpy(noise)).numpy()
    assert got.shape == want.shape == (len(embodiment_ids), CFG.action_head.action_horizon,
                                       CFG.action_head.action_dim)
    err = rel_err(got, want)
    assert err <= TOL, f"embodiments {embodiment_ids}: rel err {err:.2e}"
    # The answer must depend on what parity is claimed for: the noise and the embodiment slot.
    other = np.asarray(_get_action(params, {**inputs, "embodiment_id": (inputs["embodiment_id"] + 1) % 32}, noise))
    assert rel_err(other, want) > 1e-2
    assert rel_err(np.asarray(_get_action(params, inputs, noise + 1.0)), want) > 1e-2


def test_entry_points_compose_and_backbone_matches_reference(reference, params):
    inputs, noise = make_inputs(3, [5])
    features = jax.jit(MODEL.backbone_features)(params, inputs)
    with torch.no_grad():
        backbone_in, _ = reference.prepare_input(torch_inputs(inputs))
        want = reference.backbone(backbone_in)["backbone_features"].numpy()
    assert rel_err(features, want) <= TOL
    split = jax.jit(MODEL.action_head_get_action)(params, features, inputs["state"], inputs["embodiment_id"],
                                                  noise=noise)
    np.testing.assert_allclose(split, _get_action(params, inputs, noise), rtol=0, atol=1e-6)


def test_rng_draws_the_initial_noise(params):
    inputs, _ = make_inputs(4, [31])
    sample = jax.jit(lambda p, x, rng: MODEL.get_action(p, x, rng=rng))
    a, b, c = (np.asarray(sample(params, inputs, jax.random.key(k))) for k in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert rel_err(a, c) > 1e-2


def test_bad_inputs_fail_with_one_line(params):
    inputs, noise = make_inputs(5, [31])
    cases = {
        "lack ['state']": {k: v for k, v in inputs.items() if k != "state"},
        "NHWC": {**inputs, "eagle_pixel_values": inputs["eagle_pixel_values"].transpose(0, 3, 1, 2)},
        "state must be": {**inputs, "state": inputs["state"][:, 0]},
        "embodiment_id must be": {**inputs, "embodiment_id": inputs["embodiment_id"][:, None]},
        "<IMG_CONTEXT> tokens": {**inputs, "eagle_pixel_values": inputs["eagle_pixel_values"][:1]},
    }
    for needle, bad in cases.items():
        with pytest.raises(ValueError) as info:
            MODEL.get_action(params, bad, noise=noise)
        message = str(info.value)
        assert needle in message and "\n" not in message, message


def test_param_tree_is_the_converter_layout_and_full_size_count():
    assert flat_shapes(param_shapes(CFG)) == flat_shapes(model_param_shapes(CFG))
    full = param_shapes(GR00TConfig.n15())
    # spec 1.3: backbone used at inference 1,329,478,384 + action head 1,068,806,144 (no MAP head, no lm_head).
    assert sum(x.size for x in jax.tree.leaves(full["backbone"])) == 1_329_478_384
    assert sum(x.size for x in jax.tree.leaves(full["action_head"])) == 1_068_806_144
    bf16 = param_shapes(GR00TConfig.n15(dtype="bfloat16", param_dtype="bfloat16"))
    assert {x.dtype for x in jax.tree.leaves(bf16)} == {jnp.dtype(jnp.bfloat16)}


def test_param_shardings_split_large_leaves_over_fsdp():
    fsdp_mesh = make_mesh(fsdp=4)  # the learner's ("data", "fsdp") mesh over the 4 fake CPU devices
    default = MODEL.param_shardings(fsdp_mesh)
    # Leaves under MIN_FSDP_ELEMENTS (all of the tiny model's) stay replicated.
    assert all(s.spec == P() for s in jax.tree.leaves(default))
    small = MODEL.param_shardings(fsdp_mesh, min_fsdp_elements=1024)
    w2 = small["action_head"]["action_encoder"]["W2"]["W"]  # (32 embodiments, 2 * 40, 40): in-axis is larger
    assert w2.spec == P(None, "fsdp", None)
    up = small["backbone"]["language_model"]["layers"]["mlp"]["up_proj"]["kernel"]  # (2 layers, 48, 80)
    assert up.spec == P(None, None, "fsdp")  # never the scanned layer axis
    assert small["backbone"]["language_model"]["norm"]["scale"].spec == P()  # 48 elements
    one_device = MODEL.param_shardings(make_mesh(device_ids=[0]), min_fsdp_elements=1)
    assert all(s.spec == P() for s in jax.tree.leaves(one_device))


def test_make_sharded_params_creates_leaves_in_place():
    mesh = make_mesh(fsdp=4)
    # An "rbg" key only to compile faster than threefry on CI; the leaves' placement is what is checked.
    params = make_sharded_params(CFG, mesh, jax.random.key(7, impl="rbg"), min_fsdp_elements=1024)
    w2 = params["action_head"]["action_encoder"]["W2"]["W"]
    assert w2.sharding.spec == P(None, "fsdp", None)
    assert {s.data.shape for s in w2.addressable_shards} == {(32, 20, 40)}  # a quarter on each device
    assert abs(float(jnp.std(w2)) - 0.02) < 2e-3  # CategorySpecificLinear's N(0, 0.02) init survived
    np.testing.assert_array_equal(params["backbone"]["language_model"]["norm"]["scale"], 1.0)
    assert jax.tree.map(lambda x: x.shape, params) == jax.tree.map(lambda x: x.shape, param_shapes(CFG))


def test_bench_builder_matches_the_test_reference(reference):
    """The benchmark's reference builder (gr00t_port.reference_torch) makes the same model: same state_dict
    keys and shapes, and with the same weights the same get_action."""
    built = build_reference_model(CFG, attn_implementation="sdpa")
    want_state = reference.state_dict()
    assert {k: tuple(v.shape) for k, v in built.state_dict().items()} == {k: tuple(v.shape)
                                                                          for k, v in want_state.items()}
    built.load_state_dict(want_state)
    inputs, noise = make_inputs(6, [31])
    got = reference_get_action(built, torch_inputs(inputs), torch.from_numpy(noise)).numpy()
    want = reference_get_action(reference, torch_inputs(inputs), torch.from_numpy(noise)).numpy()
    assert rel_err(got, want) <= TOL


def test_bench_tiny_runs(tmp_path, capsys, monkeypatch):
    from jaxrl_isaac.bench.gr00t import main
    from jaxrl_isaac.jax_setup import JAX_MEMORY_VARS

    for name in JAX_MEMORY_VARS:  # the bench may set these (JAX's GPU pool cap); undo that afterwards
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)

    out = tmp_path / "bench.json"
    assert main(["--tiny", "--batch-sizes", "2", "--iters", "2", "--warmup", "1", "--skip-breakdown",
                 "--matmul-size", "256", "--json-out", str(out)]) == 0
    record = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert printed.strip().splitlines()[-1] == out.read_text().strip()
    assert "| batch | Flax get_action ms" in printed
    (row,) = record["results"]
    assert row["batch"] == 2 and row["flax_ms"] > 0 and row["torch_ms"] > 0, row
    assert record["torch_error"] is None and row["flax_error"] is None and row["torch_error"] is None
    assert record["seq_len"] == 38 + 2 * CFG.backbone.tokens_per_image
    assert record["flops_per_sample"]["total"] > record["flops_per_sample"]["backbone"] > 0


def test_bench_reports_a_broken_reference_on_one_line(monkeypatch):
    import gr00t_port.reference_torch
    from jaxrl_isaac.bench import gr00t as bench

    def broken(*args, **kwargs):
        raise ImportError("lerobot is not installed\n(second line)")

    monkeypatch.setattr(gr00t_port.reference_torch, "build_reference_model", broken)
    args = bench._parse_args(["--tiny", "--batch-sizes", "1"])
    results = {1: bench.BatchResult(1)}
    info, error = bench.run_torch_or_error(CFG, [1], args, results)
    assert (info, error) == ({}, "ImportError: lerobot is not installed")
    assert results[1].torch_ms is None
