"""GR00T N1.5 processor: token ids and pixels against the reference pipeline (torchvision transforms as Isaac-GR00T
composes them + lerobot's Eagle 2.5 VL processor, with a tiny Qwen2-style tokenizer on both sides), normalization
against the numpy formulas, embodiment ids, action post-processing and the one-line errors."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gr00t_port import processor as P  # noqa: E402
from gr00t_port.embodiment import EMBODIMENT_PROJECTOR_INDEX, embodiment_projector_index  # noqa: E402
from gr00t_port.normalization import (  # noqa: E402
    EmbodimentMetadata,
    StateActionCodec,
    load_embodiment_metadata,
    normalize,
    unnormalize,
)
from tiny_tokenizer import TINY_BASE_VOCAB, tiny_token_id, write_tiny_qwen_tokenizer  # noqa: E402

pytest.importorskip("transformers")

KEYS = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
STATE_DIMS = {"gripper": 2}  # RLinf's 8-D Franka state: xyz, axis-angle, two finger positions
TAG = "isaaclab_franka"


# ----------------------------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------------------------


def _stats(dim: int, rng: np.random.Generator, degenerate: bool = False) -> dict:
    lo = rng.normal(size=dim)
    hi = lo + rng.uniform(0.2, 2.0, size=dim)
    std = rng.uniform(0.1, 1.0, size=dim)
    if degenerate:  # one constant dim: min == max, q01 == q99, std == 0
        hi[0], std[0] = lo[0], 0.0
    q01, q99 = lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo)
    return {"min": lo.tolist(), "max": hi.tolist(), "mean": ((lo + hi) / 2).tolist(), "std": std.tolist(),
            "q01": q01.tolist(), "q99": q99.tolist()}


def _metadata_entry(resolution=(256, 256), seed=0) -> dict:
    rng = np.random.default_rng(seed)
    video = {key: {"resolution": list(resolution), "channels": 3, "fps": 20.0} for key in ("image", "wrist_image")}
    spec = lambda d: {"absolute": True, "rotation_type": None, "shape": [d], "continuous": True}  # noqa: E731
    return {
        "statistics": {
            "state": {k: _stats(STATE_DIMS.get(k, 1), rng, degenerate=(k == "gripper")) for k in KEYS},
            "action": {k: _stats(1, rng) for k in KEYS},
        },
        "modalities": {"video": video, "state": {k: spec(STATE_DIMS.get(k, 1)) for k in KEYS},
                       "action": {k: spec(1) for k in KEYS}},
        "embodiment_tag": TAG,
    }


def _checkpoint(tmp_path: pathlib.Path, entry: dict, tag: str = TAG) -> pathlib.Path:
    ckpt = tmp_path / "ckpt"
    (ckpt / "experiment_cfg").mkdir(parents=True, exist_ok=True)
    (ckpt / "experiment_cfg" / "metadata.json").write_text(json.dumps({tag: entry}))
    return ckpt


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> pathlib.Path:
    return write_tiny_qwen_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return P.load_tokenizer(tokenizer_dir)


def _processor(tokenizer, resolution=(256, 256), **config) -> P.GR00TProcessor:
    metadata = EmbodimentMetadata.from_json_entry(_metadata_entry(resolution), TAG)
    return P.GR00TProcessor(P.GR00TProcessorConfig(**config), metadata, tokenizer)


def _images(rng, batch, size, views=("image", "wrist_image"), time=None):
    shape = (batch, size[0], size[1], 3) if time is None else (batch, time, size[0], size[1], 3)
    # Smooth gradients plus noise: flat regions and edges both reach the resize and the uint8 truncation.
    ramp = np.linspace(0, 255, size[1])[None, :, None]
    out = {}
    for view in views:
        noise = rng.integers(0, 256, size=shape)
        out[view] = np.where(rng.random(shape) < 0.5, noise, np.broadcast_to(ramp, shape)).astype(np.uint8)
    return out


# ----------------------------------------------------------------------------------------------------------------
# The reference: Isaac-GR00T's video transforms (torchvision v2) + lerobot's Eagle processor
# ----------------------------------------------------------------------------------------------------------------

# The Eagle chat template's behaviour (system turn, <image-k> placeholders for image items, the text item as is,
# generation prompt), written for this test in Jinja so that transformers' apply_chat_template renders the same
# conversation GR00TTransform builds.
EAGLE_TEST_CHAT_TEMPLATE = (
    "{% set n = namespace(images=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant."
    "<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{% set n.images = n.images + 1 %}"
    "<image-{{ n.images }}>{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _load_reference_module(name: str):
    spec = importlib.util.find_spec("lerobot")
    if spec is None:
        pytest.skip("lerobot 0.4.4 (installed --no-deps) provides the reference Eagle processor")
    full = f"_gr00t_processor_reference_{name}"
    if full not in sys.modules:  # import the file directly: lerobot's package __init__ files never run
        path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "policies/groot/eagle2_hg_model" / f"{name}.py"
        module_spec = importlib.util.spec_from_file_location(full, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[full] = module
        module_spec.loader.exec_module(module)
    return sys.modules[full]


def _one_tile_stand_in(image_size: int):
    """Replaces Eagle's image processor (it needs torchvision) in the token-only test: one tile per image, which
    is what the real one returns for square image_size frames (test_pixels_match_reference checks that)."""
    from transformers.image_processing_utils import BaseImageProcessor, BatchFeature  # noqa: PLC0415

    class OneTilePerImage(BaseImageProcessor):
        size = {"height": image_size, "width": image_size}
        min_dynamic_tiles, max_dynamic_tiles, use_thumbnail = 1, 12, True

        def __call__(self, images=None, videos=None, **kwargs):
            sizes = [np.asarray(image).shape[:2] for image in images]
            return BatchFeature({"pixel_values": torch.zeros(len(sizes), 3, image_size, image_size),
                                 "image_sizes": torch.tensor(sizes)})

    return OneTilePerImage()


def _reference_eagle_processor(tokenizer, image_size=224, tokens_per_tile=256, *, real_images=True):
    if real_images:
        pytest.importorskip("torchvision", reason="Eagle's image processor needs torchvision (matching torch)")
        # Isaac-GR00T's eagle2_hg_model/preprocessor_config.json values.
        image_processor = _load_reference_module("image_processing_eagle2_5_vl_fast").Eagle25VLImageProcessorFast(
            do_resize=False, do_convert_rgb=True, do_normalize=True, do_pad=False, do_rescale=True,
            rescale_factor=1 / 255, image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=3,
            size={"height": image_size, "width": image_size}, max_dynamic_tiles=12, min_dynamic_tiles=1,
            use_thumbnail=True, pad_during_tiling=False,
        )
    else:
        image_processor = _one_tile_stand_in(image_size)
    return _load_reference_module("processing_eagle2_5_vl").Eagle25VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, tokens_per_tile=tokens_per_tile,
        chat_template=EAGLE_TEST_CHAT_TEMPLATE,
    )


def _reference_video_transform(views: list[np.ndarray], image_size: int) -> list[np.ndarray]:
    """VideoToTensor -> VideoCrop(0.95, eval) -> VideoResize(linear, antialias) -> VideoToNumpy on the batched
    views, as VideoTransform.apply stacks them ("(v b) t c h w -> (v b t) c h w")."""
    T = pytest.importorskip("torchvision.transforms.v2")

    tensors = [torch.from_numpy(v).to(torch.float32) / 255.0 for v in views]  # (B, T, H, W, C) each
    tensors = [t.permute(0, 1, 4, 2, 3) for t in tensors]  # -> (B, T, C, H, W)
    num_views, batch, steps = len(views), tensors[0].shape[0], tensors[0].shape[1]
    stacked = torch.cat(tensors, 0).flatten(0, 1)  # ((v b) t) c h w == (v b t) c h w
    height, width = stacked.shape[-2:]
    stacked = T.CenterCrop((int(height * 0.95), int(width * 0.95)))(stacked)
    stacked = T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True)(stacked)
    stacked = stacked.reshape(num_views, batch, steps, *stacked.shape[1:])
    return [(v.permute(0, 1, 3, 4, 2) * 255).to(torch.uint8).numpy() for v in stacked]  # VideoToNumpy


def _reference_batch(tokenizer, images: dict, instructions, image_size=224, tokens_per_tile=256, *,
                     real_images=True):
    """GR00TTransform.apply_batch + collate: per sample a conversation of (t v) images + text, then the Eagle
    processor over the whole batch with padding=True. ``real_images=False``: token ids only (no torchvision)."""
    from PIL import Image  # noqa: PLC0415

    tokenizer.padding_side = "left"
    eagle = _reference_eagle_processor(tokenizer, image_size, tokens_per_tile, real_images=real_images)
    views = [images["image"], images["wrist_image"]]
    views = [v[:, None] if v.ndim == 4 else v for v in views]
    if real_images:
        transformed = _reference_video_transform(views, image_size)
    else:
        transformed = [np.zeros((*v.shape[:2], image_size, image_size, 3), np.uint8) for v in views]
    video = np.stack(transformed, axis=2)  # (B, T, V, H, W, C), ConcatTransform's order
    texts, pil_images = [], []
    for b, instruction in enumerate(instructions):
        frames = video[b].reshape(-1, *video.shape[3:])  # (t v) order
        conversation = [{"role": "user", "content": [{"type": "image", "image": Image.fromarray(f)} for f in frames]
                         + [{"type": "text", "text": instruction}]}]
        texts.append(eagle.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True))
        image_inputs, _ = eagle.process_vision_info(conversation)
        pil_images += image_inputs
    out = eagle(text=texts, images=pil_images, return_tensors="pt", padding=True)
    return {k: v.numpy() for k, v in out.items()}


# ----------------------------------------------------------------------------------------------------------------
# Parity with the reference
# ----------------------------------------------------------------------------------------------------------------

INSTRUCTIONS = ["stack the red cube on top of the blue cube", "pick up the black bowl", "Stack!"]


def _check_tokens(ours, ref, proc, instructions, num_images):
    np.testing.assert_array_equal(ours["eagle_input_ids"], ref["input_ids"])
    np.testing.assert_array_equal(ours["eagle_attention_mask"], ref["attention_mask"])
    # Different prompt lengths: the shorter ones are left-padded with <|endoftext|>.
    lengths = [len(proc.prompt_ids(t, num_images)) for t in instructions]
    assert len(set(lengths)) > 1 and ours["eagle_attention_mask"].sum(1).tolist() == lengths
    assert (ours["eagle_input_ids"][ours["eagle_attention_mask"] == 0] == tiny_token_id("<|endoftext|>")).all()


@pytest.mark.parametrize("language_format", ["plain", "list_repr"])
def test_token_ids_match_reference(tokenizer, language_format):
    """Chat template + placeholder expansion + tokenization + left padding of the reference Eagle processor.
    ``list_repr`` is compared with what Gr00tPolicy's unbatched path hands the template: a (1,) string array."""
    rng = np.random.default_rng(0)
    images = _images(rng, 3, (256, 256))
    proc = _processor(tokenizer, language_format=language_format)
    ours = proc(images, rng.normal(size=(3, 8)).astype(np.float32), INSTRUCTIONS)
    texts = INSTRUCTIONS if language_format == "plain" else [np.array([t]) for t in INSTRUCTIONS]
    ref = _reference_batch(tokenizer, images, texts, real_images=False)
    _check_tokens(ours, ref, proc, INSTRUCTIONS, 2)
    assert ((ours["eagle_input_ids"] == tiny_token_id("<IMG_CONTEXT>")).sum(1) == 2 * 256).all()


@pytest.mark.parametrize("size", [(256, 256), (200, 200), (224, 224), (240, 320)])
def test_pixels_match_reference(tokenizer, size):
    """RLinf's IsaacLab cameras are 256 px (IsaacLab's default 200); a non-square frame must still be one tile."""
    rng = np.random.default_rng(size[0] + size[1])
    images = _images(rng, 3, size)
    proc = _processor(tokenizer, resolution=(size[1], size[0]))
    ours = proc(images, rng.normal(size=(3, 8)).astype(np.float32), INSTRUCTIONS)
    ref = _reference_batch(tokenizer, images, INSTRUCTIONS)
    assert ours["eagle_pixel_values"].shape == ref["pixel_values"].shape == (6, 3, 224, 224)
    np.testing.assert_array_equal(ours["eagle_pixel_values"], ref["pixel_values"])
    _check_tokens(ours, ref, proc, INSTRUCTIONS, 2)


def test_time_steps_and_tiny_tiles_match_reference(tokenizer):
    """T=2 frames per view ((t v) image order) and a tiny 28 px / 4-token vision config."""
    rng = np.random.default_rng(7)
    images = _images(rng, 2, (64, 64), time=2)
    instructions = INSTRUCTIONS[:2]
    proc = _processor(tokenizer, resolution=(64, 64), image_size=28, tokens_per_image=4)
    ours = proc(images, rng.normal(size=(2, 8)).astype(np.float32), instructions)
    ref = _reference_batch(tokenizer, images, instructions, image_size=28, tokens_per_tile=4)
    np.testing.assert_array_equal(ours["eagle_pixel_values"], ref["pixel_values"])
    assert ours["eagle_pixel_values"].shape == (8, 3, 28, 28)
    _check_tokens(ours, ref, proc, instructions, 4)
    assert ((ours["eagle_input_ids"] == tiny_token_id("<IMG_CONTEXT>")).sum(1) == 4 * 4).all()


def test_color_jitter_matches_torchvision(tokenizer):
    F = pytest.importorskip("torchvision.transforms.v2.functional")
    rng = np.random.default_rng(3)
    frames = torch.from_numpy(rng.random((2, 3, 16, 16), dtype=np.float32))
    seed = 11
    replay = np.random.default_rng(seed)
    order = replay.permutation(4)
    factors = [replay.uniform(*P.COLOR_JITTER[k]) for k in ("brightness", "contrast", "saturation", "hue")]
    expected = frames
    ops = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
    for op in order:
        expected = ops[op](expected, float(factors[op]))
    ours = P.color_jitter(frames, np.random.default_rng(seed))
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), atol=2e-6)


# ----------------------------------------------------------------------------------------------------------------
# Prompt, tokenizer, batching
# ----------------------------------------------------------------------------------------------------------------


def test_prompt_string_and_token_layout(tokenizer):
    prompt = P.render_chat_prompt(2, "pick up the black bowl")
    assert prompt == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                      "<image-1><image-2>pick up the black bowl<|im_end|>\n<|im_start|>assistant\n")
    assert P.format_instruction("pick up the black bowl", "list_repr") == "['pick up the black bowl']"
    proc = _processor(tokenizer)
    ids = proc.prompt_ids("pick up the black bowl", 2)
    tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
    assert tokens[:2] == ["<|im_start|>", "system"] and tokens[-2:] == ["assistant", "Ċ"]
    start = tokens.index("<img>")
    assert tokens[start - 5 : start] == ["<", "image", "Ġ", "1", ">"]  # "<image 1>" stays as plain text
    assert tokens[start + 1 : start + 257] == ["<IMG_CONTEXT>"] * 256 and tokens[start + 257] == "</img>"
    assert (ids == tiny_token_id("<IMG_CONTEXT>")).sum() == 512
    assert ids.min() >= 0 and tokenizer.pad_token_id == tiny_token_id("<|endoftext|>") == TINY_BASE_VOCAB


def test_collate_pad_to_length_and_per_sample_equals_batch(tokenizer):
    rng = np.random.default_rng(1)
    images = _images(rng, 3, (256, 256))
    state = rng.normal(size=(3, 8)).astype(np.float32)
    instructions = ["stack the cubes", "pick up the black bowl on top of the red cube", "go"]
    proc = _processor(tokenizer, pad_to_length=600)
    batch = proc(images, state, instructions)
    longest = max(len(proc.prompt_ids(t, 2)) for t in instructions)
    assert batch["eagle_input_ids"].shape == (3, 600)
    assert (batch["eagle_input_ids"][:, longest:] == 0).all() and (batch["eagle_attention_mask"][:, longest:] == 0).all()
    # One sample at a time through the same transforms, then collate: same arrays as the batched call.
    samples = [proc.encode_samples({k: v[i : i + 1] for k, v in images.items()}, state[i : i + 1], [instructions[i]])[0]
               for i in range(3)]
    single = P.collate(samples, proc.pad_token_id, 600)
    for key in batch:
        np.testing.assert_array_equal(single[key], batch[key], err_msg=key)
    _one_line_error(ValueError, "more than pad_to_length=100", P.collate, samples, proc.pad_token_id, 100)
    with_action = dict(samples[0], action=np.zeros((16, 32), np.float32), action_mask=np.ones((16, 32), bool))
    _one_line_error(ValueError, "every sample has an action or none", P.collate, [with_action, samples[1]], 0)


def test_rlinf_isaaclab_config(tokenizer):
    """RLinf's rollout layout: Eagle's left padding, then id 0 / mask 0 up to 570 on the right."""
    metadata = EmbodimentMetadata.from_json_entry(_metadata_entry(), TAG)
    proc = P.GR00TProcessor(P.RLINF_ISAACLAB_CONFIG, metadata, tokenizer)
    rng = np.random.default_rng(8)
    out = proc(_images(rng, 2, (256, 256)), rng.normal(size=(2, 8)).astype(np.float32),
               ["Stack the red cube on top of the blue cube", "stack"])
    lengths = [len(proc.prompt_ids(t, 2)) for t in ("Stack the red cube on top of the blue cube", "stack")]
    assert out["eagle_input_ids"].shape == (2, 570) and out["eagle_attention_mask"].sum(1).tolist() == lengths
    row = out["eagle_input_ids"][1]
    pad = max(lengths) - lengths[1]
    assert (row[:pad] == proc.pad_token_id).all() and (row[max(lengths):] == 0).all()
    assert proc.embodiment_id == 31


def test_eval_is_deterministic_and_train_randomizes(tokenizer):
    rng = np.random.default_rng(2)
    images = _images(rng, 2, (256, 256))
    state = rng.normal(size=(2, 8)).astype(np.float32)
    proc = _processor(tokenizer)
    eval_a, eval_b = proc(images, state, "stack"), proc(images, state, "stack")
    np.testing.assert_array_equal(eval_a["eagle_pixel_values"], eval_b["eagle_pixel_values"])
    train_a = proc(images, state, "stack", train=True, rng=np.random.default_rng(0))
    train_b = proc(images, state, "stack", train=True, rng=np.random.default_rng(0))
    train_c = proc(images, state, "stack", train=True, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(train_a["eagle_pixel_values"], train_b["eagle_pixel_values"])
    assert not np.array_equal(train_a["eagle_pixel_values"], train_c["eagle_pixel_values"])
    assert not np.array_equal(train_a["eagle_pixel_values"], eval_a["eagle_pixel_values"])
    np.testing.assert_array_equal(train_a["eagle_input_ids"], eval_a["eagle_input_ids"])
    with pytest.raises(ValueError, match="need an rng"):
        proc(images, state, "stack", train=True)


def test_hsv_round_trip():
    frames = torch.from_numpy(np.random.default_rng(0).random((4, 3, 8, 8), dtype=np.float32))
    frames[0, :, 0, 0] = 0.5  # a gray pixel: hue and saturation 0
    np.testing.assert_allclose(P._hsv_to_rgb(P._rgb_to_hsv(frames)).numpy(), frames.numpy(), atol=2e-6)


def test_nhwc_layout_is_a_transpose(tokenizer):
    rng = np.random.default_rng(4)
    images, state = _images(rng, 2, (256, 256)), rng.normal(size=(2, 8)).astype(np.float32)
    nchw = _processor(tokenizer)(images, state, "stack")["eagle_pixel_values"]
    nhwc = _processor(tokenizer, pixel_layout="NHWC")(images, state, "stack")["eagle_pixel_values"]
    np.testing.assert_array_equal(nhwc, nchw.transpose(0, 2, 3, 1))


def test_tokenizer_search_reports_where_it_looked(tmp_path, monkeypatch, tokenizer_dir):
    monkeypatch.delenv(P.TOKENIZER_ENV_VAR, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_LEROBOT_HOME", raising=False)
    monkeypatch.setattr(P.importlib.util, "find_spec", lambda name: None)  # no Isaac-GR00T install
    with pytest.raises(FileNotFoundError) as err:
        P.find_tokenizer_dir(checkpoint_dir=tmp_path / "ckpt")
    message = str(err.value)
    assert "\n" not in message and P.TOKENIZER_ENV_VAR in message and str(tmp_path / "ckpt") in message
    assert str(tmp_path / "hf" / "lerobot" / P.LEROBOT_EAGLE_ASSETS_REPO) in message
    with pytest.raises(FileNotFoundError, match="no tokenizer at"):
        P.load_tokenizer(tmp_path / "nowhere")
    # The environment variable and LeRobot's cache layout are both found.
    monkeypatch.setenv(P.TOKENIZER_ENV_VAR, str(tokenizer_dir))
    assert P.find_tokenizer_dir() == tokenizer_dir
    monkeypatch.delenv(P.TOKENIZER_ENV_VAR)
    cache = write_tiny_qwen_tokenizer(tmp_path / "hf" / "lerobot" / P.LEROBOT_EAGLE_ASSETS_REPO)
    assert P.find_tokenizer_dir() == cache


def test_from_checkpoint(tmp_path, tokenizer_dir):
    ckpt = _checkpoint(tmp_path, _metadata_entry())
    proc = P.GR00TProcessor.from_checkpoint(ckpt, tokenizer_path=tokenizer_dir)
    assert proc.embodiment_id == 31 and proc.valid_action_dim == 7 and proc.codec.state_dim == 8
    out = proc(_images(np.random.default_rng(0), 1, (256, 256)), np.zeros((1, 8), np.float32), "stack")
    assert out["embodiment_id"].tolist() == [31] and out["embodiment_id"].dtype == np.int64
    assert out["state"].shape == (1, 1, 64) and out["state_mask"][0, 0].tolist() == [True] * 8 + [False] * 56


# ----------------------------------------------------------------------------------------------------------------
# Normalization
# ----------------------------------------------------------------------------------------------------------------


def _numpy_reference(x, mode, s):
    """The Normalizer formulas in float64."""
    x = x.astype(np.float64)
    s = {k: np.asarray(v, np.float32).astype(np.float64) for k, v in s.items()}
    if mode == "min_max":
        ok = s["min"] != s["max"]
        return np.where(ok, 2 * (x - s["min"]) / np.where(ok, s["max"] - s["min"], 1) - 1, 0)
    if mode == "q99":
        ok = s["q01"] != s["q99"]
        return np.clip(np.where(ok, 2 * (x - s["q01"]) / np.where(ok, s["q99"] - s["q01"], 1) - 1, x), -1, 1)
    if mode == "mean_std":
        ok = s["std"] != 0
        return np.where(ok, (x - s["mean"]) / np.where(ok, s["std"], 1), x)
    return (x > 0.5).astype(np.float64)


@pytest.mark.parametrize("mode", ["min_max", "q99", "mean_std", "binary"])
def test_normalize_matches_formulas_and_round_trips(mode):
    rng = np.random.default_rng(5)
    stats = {k: np.asarray(v, np.float32) for k, v in _stats(5, rng, degenerate=True).items()}
    x = rng.normal(size=(6, 3, 5)).astype(np.float32)
    y = normalize(x, mode, stats)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, _numpy_reference(x, mode, stats), rtol=1e-5, atol=1e-6)
    if mode in ("min_max", "mean_std"):
        back = unnormalize(y, mode, stats)
        np.testing.assert_allclose(back[..., 1:], x[..., 1:], rtol=1e-5, atol=1e-5)  # dim 0 is degenerate
    if mode == "q99":  # exact inverse inside [q01, q99]
        inside = stats["q01"] + rng.random((6, 3, 5)).astype(np.float32) * (stats["q99"] - stats["q01"])
        np.testing.assert_allclose(unnormalize(normalize(inside, mode, stats), mode, stats)[..., 1:],
                                   inside[..., 1:], rtol=1e-5, atol=1e-5)


def test_state_and_action_codec_round_trip(tokenizer):
    rng = np.random.default_rng(6)
    proc = _processor(tokenizer)
    meta = proc.metadata
    state = rng.normal(size=(4, 8)).astype(np.float32)
    padded, mask = proc.codec.encode_state(state)
    expected = np.concatenate([normalize(state[:, None, i : i + 1], "min_max", meta.state_statistics[k])
                               for i, k in enumerate(KEYS[:-1])]
                              + [normalize(state[:, None, 6:8], "min_max", meta.state_statistics["gripper"])], -1)
    np.testing.assert_array_equal(padded[..., :8], expected)
    assert (padded[..., 8:] == 0).all() and mask.sum() == 4 * 8
    assert padded[:, 0, 6].tolist() == [0.0] * 4  # the degenerate gripper dim (min == max) normalizes to 0
    by_key = {k: state[:, i : i + 1] for i, k in enumerate(KEYS[:-1])} | {"gripper": state[:, 6:8]}
    np.testing.assert_array_equal(proc.codec.encode_state(by_key)[0], padded)
    # Actions: normalize + pad for training, then the model-side inverse gives the raw chunk back.
    actions = rng.normal(size=(4, 16, 7)).astype(np.float32)
    model_actions, action_mask = proc.codec.encode_action(actions)
    assert model_actions.shape == (4, 16, 32) and action_mask[..., :7].all() and not action_mask[..., 7:].any()
    model_actions[..., 7:] = 123.0  # padded dims are ignored on the way back
    np.testing.assert_allclose(proc.env_actions(model_actions), actions, rtol=1e-5, atol=1e-5)
    decoded = proc.decode_actions(torch.from_numpy(model_actions))
    assert list(decoded) == list(KEYS) and decoded["gripper"].shape == (4, 16, 1)
    out = proc(_images(rng, 4, (256, 256)), state, "stack", actions=actions)
    np.testing.assert_array_equal(out["action"], model_actions * action_mask)
    assert out["action_mask"].dtype == bool


def test_state_bf16_roundtrip(tokenizer):
    state = np.full((1, 8), 1.0 + 2.0**-10, np.float32)  # not representable in bfloat16 (8 mantissa bits)
    images = _images(np.random.default_rng(0), 1, (256, 256))
    plain = _processor(tokenizer)(images, state, "stack")["state"]
    rounded = _processor(tokenizer, state_bf16_roundtrip=True)(images, state, "stack")["state"]
    expected = _processor(tokenizer)(images, np.ones((1, 8), np.float32), "stack")["state"]
    np.testing.assert_array_equal(rounded, expected)
    assert not np.array_equal(plain, rounded)


# ----------------------------------------------------------------------------------------------------------------
# Embodiment tags and action post-processing
# ----------------------------------------------------------------------------------------------------------------


def test_embodiment_tags():
    assert {t: embodiment_projector_index(t) for t in ("new_embodiment", "libero_franka", "isaaclab_franka")} == {
        "new_embodiment": 31, "libero_franka": 31, "isaaclab_franka": 31}
    assert (embodiment_projector_index("gr1"), embodiment_projector_index("oxe_droid"),
            embodiment_projector_index("agibot_genie1")) == (24, 17, 26)
    assert embodiment_projector_index("new_embodiment", {"new_embodiment": 10}) == 10  # RLinf's re-map
    assert all(0 <= i < 32 for i in EMBODIMENT_PROJECTOR_INDEX.values())
    with pytest.raises(ValueError, match=r"unknown embodiment tag 'franka'; known tags: agibot_genie1, .*isaaclab"):
        embodiment_projector_index("franka")
    with pytest.raises(ValueError, match="must be in"):
        embodiment_projector_index("gr1", {"mine": 32})


def test_env_action_conversions():
    actions = np.random.default_rng(0).normal(size=(2, 16, 7)).astype(np.float32)
    actions[0, 0, 6] = 0.0
    isaac = P.isaaclab_stack_cube_actions(actions, 16)
    np.testing.assert_array_equal(isaac[..., :6], actions[..., :6])
    np.testing.assert_array_equal(isaac[..., 6], np.sign(actions[..., 6]))
    assert isaac[0, 0, 6] == 0.0  # np.sign(0) = 0, which IsaacLab's binary gripper treats as "open"
    libero = P.libero_actions(actions, 5)
    assert libero.shape == (2, 5, 7)
    np.testing.assert_array_equal(libero[..., 6], np.sign(1 - 2 * actions[:, :5, 6]))
    assert actions[0, 0, 6] == 0.0  # inputs are not modified
    with pytest.raises(ValueError, match="num_action_chunks=17"):
        P.isaaclab_stack_cube_actions(actions, 17)


# ----------------------------------------------------------------------------------------------------------------
# Errors: one line each, naming the culprit
# ----------------------------------------------------------------------------------------------------------------


def _one_line_error(exc_type, match, fn, *args, **kwargs):
    with pytest.raises(exc_type, match=match) as err:
        fn(*args, **kwargs)
    assert "\n" not in str(err.value)


def test_bad_images_state_and_instructions(tokenizer):
    proc = _processor(tokenizer)
    rng = np.random.default_rng(0)
    good = _images(rng, 2, (256, 256))
    state = np.zeros((2, 8), np.float32)
    floats = dict(good, image=good["image"].astype(np.float32) / 255)
    _one_line_error(ValueError, r"images\['image'\] must be uint8", proc, floats, state, "x")
    chw = dict(good, wrist_image=np.ascontiguousarray(good["wrist_image"].transpose(0, 3, 1, 2)))
    _one_line_error(ValueError, r"images\['wrist_image'\] must be channels-last", proc, chw, state, "x")
    _one_line_error(ValueError, r"images\['image'\] must be \(B, H, W, 3\)", proc,
                    dict(good, image=good["image"][0]), state, "x")
    _one_line_error(ValueError, r"missing video keys \['wrist_image'\]", proc, {"image": good["image"]}, state, "x")
    small = {k: v[:, :200, :200] for k, v in good.items()}
    _one_line_error(ValueError, "are 200x200 .* metadata.json says 256x256", proc, small, state, "x")
    _one_line_error(ValueError, "got 3 instructions for a batch of 2", proc, good, state, ["a", "b", "c"])
    _one_line_error(ValueError, r"state must have shape \(B, 8\)", proc, good, np.zeros((2, 7)), "x")
    _one_line_error(ValueError, "state has batch size 3", proc, good, np.zeros((3, 8)), "x")
    _one_line_error(ValueError, r"state mapping is missing keys \['gripper'\]", proc, good,
                    {k: np.zeros((2, 1)) for k in KEYS[:-1]}, "x")
    _one_line_error(ValueError, r"action must have shape \(B, 16, 7\)", proc, good, state, "x",
                    actions=np.zeros((2, 8, 7)))


def test_bad_metadata_and_config(tmp_path, tokenizer):
    entry = _metadata_entry()
    del entry["statistics"]["state"]["x"]["max"]
    metadata = EmbodimentMetadata.from_json_entry(entry, TAG, source="ckpt/metadata.json")
    _one_line_error(ValueError, r"ckpt/metadata.json\['isaaclab_franka'\].statistics.state.x: missing 'max' "
                    r"\(needed by min_max", P.GR00TProcessor, P.GR00TProcessorConfig(), metadata, tokenizer)
    # q99 does not need min/max, so the same metadata is fine with it.
    layout = P.ModalityLayout(("image", "wrist_image"), KEYS, ("q99",) * 7, KEYS, ("min_max",) * 7)
    P.GR00TProcessor(P.GR00TProcessorConfig(layout=layout), metadata, tokenizer)
    entry = _metadata_entry()
    del entry["modalities"]["action"]["gripper"]
    metadata = EmbodimentMetadata.from_json_entry(entry, TAG)
    _one_line_error(ValueError, r"modalities.action: missing 'gripper'", StateActionCodec, metadata, KEYS,
                    ("min_max",) * 7, KEYS, ("min_max",) * 7)
    entry = _metadata_entry()
    entry["statistics"]["action"]["z"]["min"] = [0.0, 1.0]
    metadata = EmbodimentMetadata.from_json_entry(entry, TAG)
    _one_line_error(ValueError, r"statistics.action.z.min has shape \(2,\), expected \(1,\)", StateActionCodec,
                    metadata, KEYS, ("min_max",) * 7, KEYS, ("min_max",) * 7)
    _one_line_error(ValueError, r"missing 'modalities'", EmbodimentMetadata.from_json_entry, {"statistics": {}}, TAG)
    ckpt = _checkpoint(tmp_path, _metadata_entry(), tag="libero_franka")
    _one_line_error(ValueError, r"no entry for embodiment tag 'isaaclab_franka'; it has: libero_franka",
                    load_embodiment_metadata, ckpt, TAG)
    _one_line_error(FileNotFoundError, "no GR00T metadata at", load_embodiment_metadata, tmp_path / "none", TAG)
    _one_line_error(ValueError, "unknown normalization mode 'minmax'", StateActionCodec,
                    load_embodiment_metadata(ckpt, "libero_franka"), KEYS, ("minmax",) * 7, KEYS, ("min_max",) * 7)
    _one_line_error(ValueError, "unknown embodiment tag 'franka'", _processor, tokenizer, embodiment_tag="franka")
    _one_line_error(ValueError, "language_format must be", P.GR00TProcessorConfig, language_format="json")
