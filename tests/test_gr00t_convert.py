"""The strict two-way GR00T N1.5 checkpoint converter on tiny real-layout checkpoints written by the PyTorch reference.

Round trip torch -> Flax -> torch must be bit-exact (bf16 backbone stays bf16) and load into the reference with
strict=True; every malformed input must fail with one line naming the culprits.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gr00t_port import convert as C
from gr00t_port.action_head import FlowmatchingActionHead
from gr00t_port.config import GR00TConfig
from gr00t_reference import build_reference_gr00t, load_checkpoint_state, save_reference_checkpoint
from gr00t_reference_head import action_head_cfg_dict, reference_get_action

CFG = GR00TConfig.tiny()
METADATA = {"new_embodiment": {"statistics": {"state": {"x": {"min": [-1.0], "max": [1.0]}}},
                               "modalities": {"state": {"x": {"shape": [1], "absolute": True}}},
                               "embodiment_tag": "new_embodiment"}}
QUIET = lambda _: None


@pytest.fixture(scope="module")
def reference_model():
    return build_reference_gr00t(CFG.backbone, action_head_cfg_dict(CFG.action_head), seed=0)


@pytest.fixture(scope="module")
def source(reference_model, tmp_path_factory) -> Path:
    """Released layout: 2 shards + index, bf16 backbone (with SigLIP head and a cloned lm_head), fp32 head."""
    src = save_reference_checkpoint(reference_model, tmp_path_factory.mktemp("hf"), CFG.backbone)
    (src / "experiment_cfg").mkdir()
    (src / "experiment_cfg" / "metadata.json").write_text(json.dumps(METADATA))
    return src


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("flax")
    C.convert(source, dst, log=QUIET)
    return dst


def write_variant(src: Path, dst: Path, edit=None, prefix: str = "", config: dict | None = None) -> Path:
    """A single-file copy of ``src`` (optionally edited / key-prefixed) with its config files."""
    state = load_checkpoint_state(src)
    if edit is not None:
        state = edit(dict(state))
    dst.mkdir(parents=True, exist_ok=True)
    items = [(prefix + k, v.shape, v.dtype) for k, v in state.items()]
    C.write_safetensors(dst / C.SINGLE_FILE, items, lambda k: state[k[len(prefix):]])
    (dst / "config.json").write_text(json.dumps(config) if config else (src / "config.json").read_text())
    shutil.copy(src / "eagle_config.json", dst / "eagle_config.json")
    return dst


def conversion_error(src, dst, **kw) -> str:
    with pytest.raises(C.ConversionError) as info:
        C.convert(src, dst, log=QUIET, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_converted_layout_and_dtypes(converted):
    step = converted / "global_step_0"
    assert {p.name for p in step.iterdir()} >= {"params", "assets", "dropped"}
    params, assets, dropped = C.load_converted(converted)
    want = C.flat_shapes(C.model_param_shapes(CFG))
    got = dict(C._flat_items(params))
    assert {k: tuple(v.shape) for k, v in got.items()} == want
    assert {str(v.dtype) for k, v in got.items() if k[0] == "backbone"} == {"bfloat16"}
    assert {str(v.dtype) for k, v in got.items() if k[0] == "action_head"} == {"float32"}
    assert GR00TConfig.from_dict(assets["gr00t_config"]) == CFG
    assert assets["metadata"] == METADATA
    prov = assets["provenance"]
    assert prov["source_format"] == "hf" and prov["lm_head"] == "tied"
    assert set(dropped) == set(prov["dropped_keys"]) and all(".head." in k for k in dropped)


def test_round_trip_is_bit_exact_and_loads_strictly(source, converted, tmp_path):
    back = C.export(converted, tmp_path / "back", log=QUIET)
    assert C._same_tensors(source, back)  # same keys, order, dtypes and bits
    assert json.loads((back / C.INDEX_FILE).read_text())["weight_map"] == \
        json.loads((source / C.INDEX_FILE).read_text())["weight_map"]
    assert json.loads((back / "config.json").read_text()) == json.loads((source / "config.json").read_text())
    assert json.loads((back / C.METADATA_FILE).read_text()) == METADATA
    fresh = build_reference_gr00t(CFG.backbone, action_head_cfg_dict(CFG.action_head), seed=1)
    state = {k: torch.from_numpy(v.astype(np.float32)) for k, v in load_checkpoint_state(back).items()}
    result = fresh.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # ... and a second pass through the converter reproduces the same params
    again = C.convert(back, tmp_path / "flax2", log=QUIET)
    p1, p2 = C.load_converted(converted)[0], C.load_converted(again)[0]
    for (k1, a), (k2, b) in zip(C._flat_items(p1), C._flat_items(p2)):
        assert k1 == k2 and a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8))


def test_converted_head_reproduces_reference_actions(reference_model, converted):
    params = C.load_converted(converted)[0]["action_head"]
    head = FlowmatchingActionHead(CFG.action_head)
    rng = np.random.default_rng(0)
    c = CFG.action_head
    vl = rng.standard_normal((2, 9, c.backbone_embedding_dim)).astype(np.float32)
    state = rng.standard_normal((2, 1, c.max_state_dim)).astype(np.float32)
    emb = np.array([31, 24])
    noise = rng.standard_normal((2, c.action_horizon, c.action_dim)).astype(np.float32)
    want = reference_get_action(reference_model.action_head, vl, state, emb, noise)
    got = np.asarray(head.get_action(params, vl, state, emb, noise=noise))
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-5


def test_lerobot_single_file_round_trip(source, tmp_path):
    lerobot_cfg = {"type": "groot", "max_state_dim": 64, "max_action_dim": 32, "chunk_size": 16}
    src = write_variant(source, tmp_path / "lerobot", prefix=C.LEROBOT_PREFIX, config=lerobot_cfg)
    # A LeRobot config means the released N1.5 model (select_layer 12 of the Qwen3 layers): refused for this tiny
    # checkpoint until its real model config is given.
    assert "select_layer=12" in conversion_error(src, tmp_path / "f0")
    model_config = json.loads((source / "config.json").read_text())
    C.convert(src, tmp_path / "flax", model_config=model_config, log=QUIET)
    assert C.load_converted(tmp_path / "flax")[1]["provenance"]["source_format"] == "lerobot"
    back = C.export(tmp_path / "flax", tmp_path / "back", log=QUIET)
    assert sorted(p.name for p in back.glob("*.safetensors")) == [C.SINGLE_FILE]
    assert json.loads((back / "config.json").read_text()) == lerobot_cfg
    assert C._same_tensors(src, back)


def test_value_head_and_absent_lm_head(source, tmp_path):
    """RLinf checkpoints add value_head.mlp.{0,2,4,6}; HF may omit the tied lm_head. Both convert and round trip."""
    width = CFG.action_head.value_head_input_dim
    dims = [(16, width), (8, 16), (4, 8), (1, 4)]
    rng = np.random.default_rng(0)

    def edit(state):
        del state["backbone.eagle_model.language_model.lm_head.weight"]
        for i, (out, inp) in enumerate(dims):
            state[f"action_head.value_head.mlp.{2 * i}.weight"] = rng.standard_normal((out, inp)).astype(np.float32)
            state[f"action_head.value_head.mlp.{2 * i}.bias"] = rng.standard_normal(out).astype(np.float32)
        return state

    src = write_variant(source, tmp_path / "rl", edit)
    C.convert(src, tmp_path / "flax", log=QUIET)
    params, assets, _ = C.load_converted(tmp_path / "flax")
    assert assets["provenance"]["lm_head"] == "absent"
    assert GR00TConfig.from_dict(assets["gr00t_config"]).action_head.value_head_hidden_dims == (16, 8, 4)
    kernel = params["action_head"]["value_head"]["dense_0"]["kernel"]
    assert kernel.shape == (width, 16)
    back = C.export(tmp_path / "flax", tmp_path / "back", log=QUIET)
    assert C._same_tensors(src, back)


def test_strict_errors_name_the_culprits(source, tmp_path):
    def edit_extra(s):
        s["action_head.extra_head.weight"] = np.zeros((2, 2), np.float32)
        return s

    def edit_missing(s):
        del s["action_head.vlln.weight"]
        return s

    def edit_shape(s):
        s["action_head.model.proj_out_2.weight"] = np.ascontiguousarray(s["action_head.model.proj_out_2.weight"].T)
        return s

    msg = conversion_error(write_variant(source, tmp_path / "extra", edit_extra), tmp_path / "o1")
    assert "unused (no rule): 1 ['action_head.extra_head.weight']" in msg
    msg = conversion_error(write_variant(source, tmp_path / "missing", edit_missing), tmp_path / "o2")
    assert "missing: 1 ['action_head.vlln.weight']" in msg and "unused" not in msg
    msg = conversion_error(write_variant(source, tmp_path / "shape", edit_shape), tmp_path / "o3")
    w = CFG.action_head
    assert (f"shape mismatch: 1 ['action_head.model.proj_out_2.weight: checkpoint ({w.dit.inner_dim}, "
            f"{w.hidden_size}), model ({w.hidden_size}, {w.dit.inner_dim})']") in msg

    assert "does not exist" in conversion_error(tmp_path / "nowhere", tmp_path / "o4")
    (tmp_path / "empty").mkdir()
    assert "has neither model.safetensors.index.json nor model.safetensors" in conversion_error(
        tmp_path / "empty", tmp_path / "o5")
    no_cfg = write_variant(source, tmp_path / "nocfg")
    (no_cfg / "config.json").unlink()
    assert "has no config.json" in conversion_error(no_cfg, tmp_path / "o6")
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    (broken / "model-00002-of-00002.safetensors").unlink()
    assert "names shard files that do not exist: ['model-00002-of-00002.safetensors']" in conversion_error(
        broken, tmp_path / "o7")
    C.convert(source, tmp_path / "o8", log=QUIET)
    assert "already exists (pass --overwrite" in conversion_error(source, tmp_path / "o8")


def test_cli(source, tmp_path, capsys):
    assert C.main([str(source), str(tmp_path / "flax")]) == 0
    assert C.main(["--reverse", str(tmp_path / "flax"), str(tmp_path / "back")]) == 0
    assert C._same_tensors(source, tmp_path / "back")
    capsys.readouterr()
    assert C.main([str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: source checkpoint") and "does not exist" in err[0]


def test_random_checkpoint_generator_has_the_real_layout(reference_model, source, tmp_path):
    """The full-size bench writes tensors from the key rules; on the tiny config they must be exactly the torch
    model's state_dict keys and shapes, with the released dtypes."""
    gen = tmp_path / "gen"
    C.write_random_checkpoint(gen, CFG, config_json=json.loads((source / "config.json").read_text()),
                              max_shard_bytes=200_000, log=QUIET)
    shutil.copy(source / "eagle_config.json", gen / "eagle_config.json")
    src = C.open_source(gen)
    assert len({s.file for s in src.tensors.values()}) > 1
    assert {k: s.shape for k, s in src.tensors.items()} == {
        k: tuple(v.shape) for k, v in reference_model.state_dict().items()}
    assert {s.dtype for k, s in src.tensors.items() if k.startswith("backbone.")} == {"BF16"}
    assert {s.dtype for k, s in src.tensors.items() if k.startswith("action_head.")} == {"F32"}
    lm = src.read("backbone.eagle_model.language_model.lm_head.weight")
    assert np.array_equal(lm, src.read("backbone.eagle_model.language_model.model.embed_tokens.weight"))
    C.convert(gen, tmp_path / "flax", log=QUIET)
    assert C.load_converted(tmp_path / "flax")[1]["provenance"]["lm_head"] == "tied"
