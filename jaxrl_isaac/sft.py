"""Supervised fine-tuning (SFT) of GR00T N1.5 on scripted-expert demonstrations from the embedded simulator.

    python -m jaxrl_isaac.sft --task Embedded-Stack-Cube-Franka-IK-Rel-Visuomotor-v0 --episodes 20 --num-envs 8 \
        --out /tmp/sft --model-config tiny --steps 200 --batch-size 16

Pipeline (the Isaac-GR00T ``gr00t_finetune.py`` recipe that RLinf's SFT checkpoints come from, on our own demos):

1. ``collect_demos``: the task's scripted expert acts in ``num_envs`` sub-envs; every env step records the table and
   wrist frames, RLinf's 8-dim state (``obs_mapping``) and the 7-dim env action. Only successful episodes are kept.
   Each frame's training target is the chunk of its ``action_horizon`` next actions; past the episode end the
   chunk repeats the last action (Isaac-GR00T pads absolute actions at the episode edge this way).
2. ``build_metadata``: per-key min/max/mean/std/q01/q99 over every kept frame, written in the
   ``experiment_cfg/metadata.json`` schema (state keys x, y, z, roll, pitch, yaw (1 each) + gripper (2); action keys
   x ... yaw, gripper (1 each), as RLinf's ``LiberoFrankaDataConfig`` used for ``isaaclab_franka``).
3. ``train``: the flow-matching loss of ``FlowmatchingActionHead`` (spec 2.4) with the Eagle backbone frozen
   (``tune_visual=False, tune_llm=False``): gradients and AdamW state exist for the action head only. One jitted
   step of fixed shapes; dropout on, as in upstream training.
4. ``save_checkpoint``: ``OUT/global_step_<S>/{params,assets}`` in ``gr00t_port.convert``'s layout (assets carry
   ``gr00t_config`` and ``metadata``), plus the tokenizer files and ``experiment_cfg/metadata.json`` beside the items,
   so ``actor.model.model_path=OUT/global_step_<S>`` starts RL from it with nothing else to pass.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import pathlib
import re
import shutil
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

SFT_TASK = "Embedded-Stack-Cube-Franka-IK-Rel-Visuomotor-v0"
DEFAULT_EMBODIMENT_TAG = "isaaclab_franka"  # RLinf's IsaacLab Franka tag (projector slot 31)
# RLinf's IsaacLab / LIBERO Franka modality layout: key -> dim (spec 3.5). A task may extend the state
# (the embedded reach task adds its target: ``TaskSpec.state_keys``).
STATE_KEY_DIMS: tuple[tuple[str, int], ...] = (("x", 1), ("y", 1), ("z", 1), ("roll", 1), ("pitch", 1), ("yaw", 1),
                                               ("gripper", 2))
ACTION_KEY_DIMS: tuple[tuple[str, int], ...] = (("x", 1), ("y", 1), ("z", 1), ("roll", 1), ("pitch", 1), ("yaw", 1),
                                                ("gripper", 1))
STATE_DIM = sum(d for _, d in STATE_KEY_DIMS)    # 8
ACTION_DIM = sum(d for _, d in ACTION_KEY_DIMS)  # 7
VIDEO_KEYS = ("image", "wrist_image")            # table camera, wrist camera (RLinf's LiberoFrankaDataConfig)
TOKENIZER_SUBDIR = "tokenizer"


# ================================================================================================== demonstrations

@dataclasses.dataclass(frozen=True)
class Demos:
    """Frames of successful expert episodes, flattened over episodes (N frames in all).

    table_images, wrist_images: (N, H, W, 3) uint8.
    states: (N, D) float32 in ``state_keys`` order; RLinf's [eef_pos, axis-angle, gripper fingers] (D = 8) unless the
      task adds keys.
    actions: (N, 7) float32, the env action taken at that frame.
    action_chunks: (N, horizon, 7) float32, actions t .. t+horizon-1, edge-padded with the episode's last action.
    chunk_valid: (N, horizon) bool, False where the chunk is padding (recorded; the loss masks dims only, as
      upstream, so padded steps teach "keep doing the last action").
    episode_index: (N,) int32.
    """

    instruction: str
    state_keys: tuple[tuple[str, int], ...]
    table_images: np.ndarray
    wrist_images: np.ndarray
    states: np.ndarray
    actions: np.ndarray
    action_chunks: np.ndarray
    chunk_valid: np.ndarray
    episode_index: np.ndarray
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.states.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.episode_index.max()) + 1 if self.num_frames else 0


@dataclasses.dataclass(frozen=True)
class CollectionReport:
    episodes_kept: int
    episodes_failed: int
    env_steps: int      # sub-env steps (num_envs per vectorised step)
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.env_steps / max(self.seconds, 1e-9)


def action_chunks(actions: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, D) actions of one episode -> ((T, horizon, D) chunks edge-padded with the last action, (T, horizon) valid)."""
    steps = actions.shape[0]
    index = np.arange(steps)[:, None] + np.arange(horizon)[None, :]
    valid = index < steps
    return actions[np.minimum(index, steps - 1)], valid


def check_task(task_id: str) -> None:
    from jaxrl_isaac.envs.embedded import TASK_IDS

    if task_id not in TASK_IDS:
        raise ValueError(f"unknown task {task_id!r}; the embedded tasks with scripted experts are: "
                         f"{', '.join(TASK_IDS)}")


def collect_demos(task_id: str, num_episodes: int, num_envs: int, *, action_horizon: int = 16,
                  cam: int | tuple[int, int] = 64,
                  seed: int = 0, max_episode_steps: int = 600, max_failed: int | None = None,
                  num_workers: int = 1, tiled_rendering: bool = False,
                  log: Callable[[str], None] = print) -> tuple[Demos, CollectionReport]:
    """Runs the scripted expert until ``num_episodes`` successful episodes are recorded (extra episodes that finish
    in the same step are kept too, then trimmed to exactly ``num_episodes``). ``num_workers`` > 1 steps and renders
    the sub-envs in that many processes (``ParallelFrankaEnv``; the episodes then differ from one worker's);
    ``tiled_rendering`` renders the cameras as the RL env does with ``init_params.tiled_rendering``.

    Raises RuntimeError when more than ``max_failed`` (default: max(10, num_episodes)) episodes fail.
    """
    check_task(task_id)
    cam_hw = (cam, cam) if isinstance(cam, int) else tuple(int(v) for v in cam)
    if num_episodes < 1 or num_envs < 1 or action_horizon < 1 or min(cam_hw) < 8:
        raise ValueError(f"need episodes >= 1, num_envs >= 1, action_horizon >= 1, cam >= 8; got {num_episodes}, "
                         f"{num_envs}, {action_horizon}, {cam}")
    from jaxrl_isaac.envs import embedded, obs_mapping
    from jaxrl_isaac.envs.contract import POLICY_GROUP

    max_failed = max(10, num_episodes) if max_failed is None else max_failed
    env = embedded.make(task_id, num_envs=num_envs, seed=seed, table_cam=cam_hw, wrist_cam=cam_hw,
                        max_episode_steps=max_episode_steps, num_workers=num_workers,
                        **({"tiled_rendering": True} if tiled_rendering else {}))
    try:
        expert = embedded.make_expert(task_id, env)
        instruction = env.task_description
        state_dim = sum(d for _, d in env.spec.state_keys)
        buffers: list[list[tuple]] = [[] for _ in range(num_envs)]
        episodes: list[list[tuple]] = []
        failed = env_steps = 0
        start = time.perf_counter()
        obs, _ = env.reset(seed=seed)
        while len(episodes) < num_episodes:
            inputs = obs_mapping.to_model_inputs(obs[POLICY_GROUP], env.quat_order, instruction,
                                                 state_fn=env.spec.state_fn, state_dim=state_dim)
            action = expert(obs)
            table, wrist = inputs["table_image"].cpu().numpy(), inputs["wrist_image"].cpu().numpy()
            state, act = inputs["state"].cpu().numpy(), action.detach().cpu().numpy().astype(np.float32)
            for i in range(num_envs):
                buffers[i].append((table[i].copy(), wrist[i].copy(), state[i].copy(), act[i].copy()))
            obs, _, terminated, truncated, extras = env.step(action)
            env_steps += num_envs
            done = (terminated | truncated).cpu().numpy()
            success = extras["success"].cpu().numpy()
            for i in np.flatnonzero(done):
                if success[i]:
                    episodes.append(buffers[i])
                else:
                    failed += 1
                    if failed > max_failed:
                        raise RuntimeError(f"the {task_id} expert failed {failed} episodes before {num_episodes} "
                                           f"succeeded ({len(episodes)} did)")
                buffers[i] = []
    finally:
        env.close()
    seconds = time.perf_counter() - start
    episodes = episodes[:num_episodes]
    parts = {name: [] for name in ("table", "wrist", "state", "action", "chunk", "valid", "episode")}
    for e, frames in enumerate(episodes):
        table, wrist, state, act = (np.stack(column) for column in zip(*frames))
        chunk, valid = action_chunks(act, action_horizon)
        for name, value in zip(parts, (table, wrist, state, act, chunk, valid,
                                       np.full(len(frames), e, np.int32))):
            parts[name].append(value)
    cat = {name: np.concatenate(values) for name, values in parts.items()}
    demos = Demos(instruction=instruction, state_keys=tuple(env.spec.state_keys), table_images=cat["table"],
                  wrist_images=cat["wrist"], states=cat["state"].astype(np.float32),
                  actions=cat["action"].astype(np.float32),
                  action_chunks=cat["chunk"].astype(np.float32), chunk_valid=cat["valid"],
                  episode_index=cat["episode"], fps=float(round(1.0 / env.step_dt, 6)))
    report = CollectionReport(episodes_kept=len(episodes), episodes_failed=failed, env_steps=env_steps,
                              seconds=seconds)
    log(f"collected {report.episodes_kept} successful episodes ({demos.num_frames} frames, {failed} failed) in "
        f"{seconds:.1f} s: {report.frames_per_second:.0f} env frames/s")
    return demos, report


# ===================================================================================================== statistics

def key_statistics(values: np.ndarray) -> dict[str, list[float]]:
    """The six metadata.json statistics of one key over all frames: values (N, d) -> {name: d floats}."""
    x = np.asarray(values, np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"statistics need (N >= 1, d) values, got shape {x.shape}")
    stats = {"max": x.max(0), "min": x.min(0), "mean": x.mean(0), "std": x.std(0),
             "q01": np.quantile(x, 0.01, axis=0), "q99": np.quantile(x, 0.99, axis=0)}
    return {name: [float(v) for v in value] for name, value in stats.items()}


def _split_keys(values: np.ndarray, key_dims: Sequence[tuple[str, int]]) -> dict[str, np.ndarray]:
    total = sum(d for _, d in key_dims)
    if values.ndim != 2 or values.shape[1] != total:
        raise ValueError(f"expected (N, {total}) values for keys {[k for k, _ in key_dims]}, got {values.shape}")
    out, start = {}, 0
    for key, dim in key_dims:
        out[key] = values[:, start:start + dim]
        start += dim
    return out


def explored_states(task_id: str, num_envs: int, steps: int, *, noise_std: float = 0.3, seed: int = 0
                    ) -> np.ndarray:
    """(num_envs * steps, D) states the task's expert visits when N(0, noise_std²) is added to its 6 pose-action
    dims (the gripper command is the expert's): roughly what an exploring policy sees. No camera is rendered."""
    import torch

    from jaxrl_isaac.envs import embedded
    from jaxrl_isaac.envs.contract import POLICY_GROUP

    check_task(task_id)
    env = embedded.make(task_id, num_envs=num_envs, seed=seed, table_cam=(8, 8), wrist_cam=(8, 8),
                        max_episode_steps=max(steps // 2, 1))
    expert = embedded.make_expert(task_id, env)
    gen = torch.Generator().manual_seed(seed)
    obs, _ = env.reset(seed=seed)
    states = []
    try:
        for _ in range(steps):
            states.append(env.spec.state_fn(obs[POLICY_GROUP], env.quat_order).cpu().numpy())
            action = expert(obs).clone()
            action[:, :6] += noise_std * torch.randn(action[:, :6].shape, generator=gen)
            obs, *_ = env.step(action.clamp(-1.0, 1.0))
    finally:
        env.close()
    return np.concatenate(states).astype(np.float32)


def build_metadata(demos: Demos, embodiment_tag: str = DEFAULT_EMBODIMENT_TAG,
                   extra_states: np.ndarray | None = None) -> dict[str, Any]:
    """``{tag: entry}`` in the ``experiment_cfg/metadata.json`` schema (spec 3.5) for the demos; ``extra_states``
    (M, D) widen the state statistics (e.g. ``explored_states``)."""
    height, width = demos.table_images.shape[1:3]
    states = demos.states if extra_states is None else np.concatenate([demos.states, extra_states])
    vector = lambda dim: {"absolute": True, "rotation_type": None, "shape": [dim], "continuous": True}  # noqa: E731
    entry = {
        "statistics": {
            "state": {k: key_statistics(v) for k, v in _split_keys(states, demos.state_keys).items()},
            "action": {k: key_statistics(v) for k, v in _split_keys(demos.actions, ACTION_KEY_DIMS).items()},
        },
        "modalities": {
            "video": {k: {"resolution": [int(width), int(height)], "channels": 3, "fps": demos.fps}
                      for k in VIDEO_KEYS},
            "state": {k: vector(d) for k, d in demos.state_keys},
            "action": {k: vector(d) for k, d in ACTION_KEY_DIMS},
        },
        "embodiment_tag": embodiment_tag,
    }
    return {embodiment_tag: entry}


# ====================================================================================================== tokenizer

# The tokens the GR00T processor needs, in the real Eagle tokenizer's relative order.
_TINY_ADDED_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<IMG_CONTEXT>", "<img>", "</img>")


TINY_TOKENIZERS = ("words", "bytes")


def _byte_symbols() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the alphabet of Qwen2's byte-level BPE)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b], extra = chr(256 + extra), extra + 1
    return symbols


def prompt_corpus() -> list[str]:
    """Every prompt text the embedded tasks give the GR00T processor: the chat template with 1 and 2 images around
    each task's instruction, in both of RLinf's instruction formats. Fixed order, so the merges are deterministic."""
    from gr00t_port.backbone_config import EagleBackboneConfig
    from gr00t_port.processor import expand_image_placeholders, format_instruction, render_chat_prompt
    from jaxrl_isaac.envs.embedded.tasks import TASKS

    tokens_per_image = EagleBackboneConfig.tiny().tokens_per_image
    texts = []
    for spec in TASKS.values():
        for language_format in ("plain", "list_repr"):
            for num_images in (1, 2):
                text = render_chat_prompt(num_images, format_instruction(spec.description, language_format))
                texts.append(expand_image_placeholders(text, num_images, tokens_per_image))
    return texts


def _word_merges(texts: Sequence[str]) -> list[tuple[str, str]]:
    """BPE merges that spell every pre-token (Qwen2's regex split: a word with its leading space, a number, a run of
    punctuation) of ``texts`` left to right, so that each becomes one token; special tokens are left out."""
    import tempfile

    from gr00t_port.processor import load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:  # the byte tokenizer, only for its pre-tokenizer
        pre_tokenize = load_tokenizer(_write_tokenizer_files(pathlib.Path(tmp), [])).backend_tokenizer.pre_tokenizer
    specials = re.compile("|".join(re.escape(t) for t in _TINY_ADDED_TOKENS))
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for text in texts:
        for piece in specials.split(text):
            for word, _ in pre_tokenize.pre_tokenize_str(piece):
                for i in range(1, len(word)):
                    pair = (word[:i], word[i])
                    if pair not in seen:
                        seen.add(pair)
                        merges.append(pair)
    return merges


def write_tiny_tokenizer(directory: str | os.PathLike, kind: str = "words") -> pathlib.Path:
    """A Qwen2-style byte-level BPE tokenizer for the tiny models, in the Eagle tokenizer's file layout (vocab.json,
    merges.txt, tokenizer_config.json): 256 byte symbols, then (``kind="words"``) one merged token per word of the
    embedded tasks' prompts (``prompt_corpus``), then the processor's special tokens.

    ``"words"`` gives the 2-image reach prompt 47 tokens (8 of them image tokens), close to what Qwen's 151k-token
    vocabulary gives, instead of 125 with ``"bytes"`` (no merges): the VL sequence, and with it the work of the
    backbone, the VL self-attention and the DiT's cross-attention, is 2.7x shorter. Any other text still tokenises,
    byte by byte where no merge fits."""
    if kind not in TINY_TOKENIZERS:
        raise ValueError(f"tiny tokenizer kind must be one of {TINY_TOKENIZERS}, got {kind!r}")
    merges = _word_merges(prompt_corpus()) if kind == "words" else []
    return _write_tokenizer_files(pathlib.Path(directory), merges)


def _write_tokenizer_files(directory: pathlib.Path, merges: Sequence[tuple[str, str]]) -> pathlib.Path:
    """vocab.json (256 byte symbols, then one token per merge), merges.txt and tokenizer_config.json (the special
    tokens after the vocabulary, as in the real Eagle tokenizer)."""
    directory.mkdir(parents=True, exist_ok=True)
    symbols = _byte_symbols()
    vocab = {symbols[b]: b for b in range(256)}
    for left, right in merges:
        vocab[left + right] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in merges), encoding="utf-8")
    added = {str(len(vocab) + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                   "single_word": False, "special": True}
             for i, t in enumerate(_TINY_ADDED_TOKENS)}
    config = {"tokenizer_class": "Qwen2Tokenizer", "add_bos_token": False, "add_eos_token": False,
              "add_prefix_space": False, "added_tokens_decoder": added,
              "additional_special_tokens": list(_TINY_ADDED_TOKENS[1:]), "bos_token": None,
              "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>", "errors": "replace",
              "model_max_length": 16384, "pad_token": "<|endoftext|>", "split_special_tokens": False,
              "unk_token": None}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    return directory


def bootstrap_prompt_length(instruction: str, num_images: int = 2, tokenizer_kind: str = "words") -> int:
    """Tokens of the GR00T prompt that a bootstrap checkpoint's processor builds (tiny tokenizer of
    ``tokenizer_kind``, tiny Eagle backbone, RLinf's IsaacLab prompt format), so that
    ``rl_head_config.padding_value`` is checked before the SFT."""
    import tempfile

    from gr00t_port.backbone_config import EagleBackboneConfig
    from gr00t_port.processor import RLINF_ISAACLAB_CONFIG, format_instruction, load_tokenizer, prompt_token_ids

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = load_tokenizer(write_tiny_tokenizer(tmp, tokenizer_kind))
        text = format_instruction(instruction, RLINF_ISAACLAB_CONFIG.language_format)
        return len(prompt_token_ids(tokenizer, text, num_images, EagleBackboneConfig.tiny().tokens_per_image))


def tokenizer_files(directory: pathlib.Path) -> list[pathlib.Path]:
    names = ("tokenizer_config.json", "tokenizer.json", "vocab.json", "merges.txt", "special_tokens_map.json",
             "added_tokens.json")
    return [directory / n for n in names if (directory / n).is_file()]


# ========================================================================================================= model

MODEL_ARCHITECTURES = ("tiny", "small", "n15")


def tiny_model_config(vocab_size: int, image_token_index: int, action_horizon: int = 16, max_state_dim: int = 16,
                      architecture: str = "tiny"):
    """A random-init GR00T sized for the byte tokenizer and the Franka layout: 8 model action dims (7 real + 1
    padded), ``action_horizon`` steps, room for ``max_state_dim`` state dims, no remat (faster CPU compiles).

    ``tiny``: the toy sizes of ``GR00TConfig.tiny`` (action head width 24/40, 4 DiT layers of width 40; ~0.5 M
    parameters). ``small``: the same tiny Eagle backbone, an action head of width 128 (4 DiT layers of 4 x 32; ~2 M
    parameters), for tasks whose state carries the scene (the state-based stack task) and need more than the toy
    head to imitate a multi-stage expert.
    """
    from gr00t_port.config import ActionHeadConfig, DiTConfig, GR00TConfig
    from gr00t_port.backbone_config import EagleBackboneConfig

    if architecture not in ("tiny", "small"):
        raise ValueError(f"random-init architecture must be 'tiny' or 'small', got {architecture!r}")
    b = EagleBackboneConfig.tiny(remat_policy="none")
    b = b.replace(text=dataclasses.replace(b.text, vocab_size=vocab_size), image_token_index=image_token_index)
    head = ActionHeadConfig.tiny(b.output_dim, remat_policy="none").replace(
        action_dim=8, action_horizon=action_horizon, max_seq_len=max(12, action_horizon), max_state_dim=max_state_dim)
    if architecture == "small":
        width = 128
        head = head.replace(hidden_size=width, input_embedding_dim=width,
                            dit=DiTConfig(num_heads=4, head_dim=32, num_layers=4, output_dim=width,
                                          cross_attention_dim=b.output_dim))
    return GR00TConfig(backbone=b, action_head=head)


def check_model_fits(cfg, action_horizon: int, state_dim: int = STATE_DIM) -> None:
    h = cfg.action_head
    if h.action_horizon != action_horizon:
        raise ValueError(f"--action-horizon {action_horizon} differs from the model's action_horizon="
                         f"{h.action_horizon}")
    if h.action_dim < ACTION_DIM or h.max_state_dim < state_dim:
        raise ValueError(f"the model takes {h.action_dim} action / {h.max_state_dim} state dims; the task's layout "
                         f"needs {ACTION_DIM} / {state_dim}")


def random_params(cfg, seed: int) -> dict:
    """Random {"backbone", "action_head"} params of ``cfg`` filled in numpy from the model's shapes (a jitted Flax
    init of the whole model compiles for a long time on CPU): kernels N(0, 1/fan_in), norm scales 1, the rest
    N(0, 0.02^2). For the tiny smoke path and tests; real SFT starts from a converted checkpoint (--init)."""
    import jax

    from gr00t_port.model import GR00TN15

    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "scale":
            return np.ones(leaf.shape, leaf.dtype)
        x = rng.standard_normal(leaf.shape)
        x = x / np.sqrt(leaf.shape[-2]) if name in ("kernel", "W") and leaf.ndim >= 2 else 0.02 * x
        return x.astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, GR00TN15(cfg).param_shapes())


def modality_layout(state_keys: Sequence[tuple[str, int]]):
    """RLinf's Franka layout (``LIBERO_FRANKA_LAYOUT``) with the task's state keys, min_max normalized."""
    from gr00t_port.processor import LIBERO_FRANKA_LAYOUT

    return LIBERO_FRANKA_LAYOUT.with_state_keys([k for k, _ in state_keys])


def make_processor(cfg, metadata_entries: Mapping[str, Any], tokenizer, embodiment_tag: str,
                   state_keys: Sequence[tuple[str, int]] = STATE_KEY_DIMS):
    """The GR00T processor for training: Isaac-GR00T's transforms with RLinf's Franka layout (and the task's state
    keys), NHWC pixels."""
    from gr00t_port.normalization import EmbodimentMetadata
    from gr00t_port.processor import GR00TProcessor, GR00TProcessorConfig

    b, h = cfg.backbone, cfg.action_head
    proc_cfg = GR00TProcessorConfig(embodiment_tag=embodiment_tag, pixel_layout="NHWC",
                                    layout=modality_layout(state_keys),
                                    image_size=b.vision.image_size, tokens_per_image=b.tokens_per_image,
                                    max_state_dim=h.max_state_dim, max_action_dim=h.action_dim,
                                    action_horizon=h.action_horizon)
    metadata = EmbodimentMetadata.from_json_entry(metadata_entries[embodiment_tag], embodiment_tag,
                                                  source="SFT metadata")
    return GR00TProcessor(proc_cfg, metadata, tokenizer)


def make_batch(processor, demos: Demos, index: np.ndarray, *, augment: bool,
               rng: np.random.Generator | None) -> dict[str, np.ndarray]:
    """Model inputs for frames ``index`` (B,) of the demos, with their normalised action chunks as targets."""
    batch = processor({"image": demos.table_images[index], "wrist_image": demos.wrist_images[index]},
                      demos.states[index], demos.instruction, demos.action_chunks[index], train=augment, rng=rng)
    batch.pop("state_mask")
    return batch


def preprocess_frames(processor, demos: Demos, chunk: int = 1024) -> dict[str, np.ndarray]:
    """``make_batch`` of every frame in eval mode (no augmentation), computed once: the transform is then
    deterministic, so a training batch is an index into these arrays instead of a pass through the processor
    (which dominates a small model's SFT step time on the host). Returns {key: (num_frames, ...)}."""
    parts = []
    for start in range(0, demos.num_frames, chunk):
        n = min(start + chunk, demos.num_frames) - start
        batch = make_batch(processor, demos, np.arange(start, start + n), augment=False, rng=None)
        # Per-frame rows: a key batched as (n * k, ...) (the pixels, one row per camera view) becomes (n, k, ...).
        parts.append({key: value.reshape(n, value.shape[0] // n, *value.shape[1:]) for key, value in batch.items()})
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def index_frames(frames: Mapping[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    """The ``make_batch`` of frames ``index`` (B,) from ``preprocess_frames``' arrays."""
    return {key: value[index].reshape(-1, *value.shape[2:]) for key, value in frames.items()}


# ======================================================================================================= training

@dataclasses.dataclass(frozen=True)
class SFTSettings:
    """Optimisation settings; defaults are Isaac-GR00T ``scripts/gr00t_finetune.py``'s (HF Trainer, AdamW with
    betas (0.95, 0.999), cosine schedule after a 5 % linear warm-up, grad-norm clip 1.0), except the step count.

    augment: Isaac-GR00T's train-mode image transforms (random crop + colour jitter) instead of the eval crop.
    dropout: the action head's dropout (0.2 in N1.5) during training, as upstream's train mode.
    """

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_ratio: float = 0.05
    adam_beta1: float = 0.95
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    augment: bool = True
    dropout: bool = True
    log_interval: int = 10
    seed: int = 0

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"steps must be >= 0 (0: random params, statistics only) and batch_size >= 1, got "
                             f"{self.steps}, {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def make_optimizer(s: SFTSettings):
    import optax

    warmup = int(math.ceil(s.warmup_ratio * s.steps))
    schedule = optax.warmup_cosine_decay_schedule(0.0, s.lr, warmup_steps=max(warmup, 1),
                                                  decay_steps=max(s.steps, warmup + 1), end_value=0.0)
    if warmup == 0:
        schedule = optax.cosine_decay_schedule(s.lr, s.steps)
    tx = optax.chain(optax.clip_by_global_norm(s.clip_grad),
                     optax.adamw(schedule, b1=s.adam_beta1, b2=s.adam_beta2, eps=s.adam_eps,
                                 weight_decay=s.weight_decay))
    return tx, schedule


def make_loss_fn(cfg, dropout: bool):
    """(head_params, backbone_params, batch, rng) -> flow-matching loss; the backbone is an input, not a variable
    (frozen: ``tune_visual=False, tune_llm=False``), so gradients exist only for the action head."""
    import jax

    from gr00t_port.model import GR00TN15

    model = GR00TN15(cfg)

    def loss_fn(head_params, backbone_params, batch, rng, noise=None, t=None):
        features = model.backbone_features({"backbone": backbone_params}, batch)
        noise_rng, dropout_rng = (None, None) if rng is None else tuple(jax.random.split(rng))
        return model.action_head.flow_matching_loss(
            head_params, features, batch["state"], batch["embodiment_id"], batch["action"], batch["action_mask"],
            rng=noise_rng, noise=noise, t=t, dropout_rng=dropout_rng if dropout else None)

    return loss_fn


def make_train_step(cfg, tx, dropout: bool, compiler_options: Mapping[str, Any] | None = None):
    """Jitted (head_params, opt_state, backbone_params, batch, rng) -> (head_params, opt_state, loss, grad_norm)."""
    import jax
    import optax

    loss_fn = make_loss_fn(cfg, dropout)

    def step(head_params, opt_state, backbone_params, batch, rng):
        loss, grads = jax.value_and_grad(loss_fn)(head_params, backbone_params, batch, rng)
        updates, opt_state = tx.update(grads, opt_state, head_params)
        return optax.apply_updates(head_params, updates), opt_state, loss, optax.global_norm(grads)

    return jax.jit(step, donate_argnums=(0, 1), compiler_options=dict(compiler_options or {}) or None)


def _batch_indices(num_frames: int, batch_size: int, rng: np.random.Generator):
    """Endless stream of (batch_size,) indices: shuffled epochs without replacement (with, if fewer frames)."""
    while True:
        if num_frames < batch_size:
            yield rng.integers(0, num_frames, batch_size)
            continue
        order = rng.permutation(num_frames)
        for start in range(0, num_frames - batch_size + 1, batch_size):
            yield order[start:start + batch_size]


def train(cfg, params: dict, processor, demos: Demos, s: SFTSettings, *,
          compiler_options: Mapping[str, Any] | None = None,
          log: Callable[[str], None] = print) -> tuple[dict, list[dict[str, float]]]:
    """Trains the action head of ``params`` on the demos. Returns (new params, per-step log rows)."""
    import jax

    tx, schedule = make_optimizer(s)
    step_fn = make_train_step(cfg, tx, s.dropout, compiler_options)
    head = jax.tree.map(jax.numpy.asarray, params["action_head"])
    backbone = jax.tree.map(jax.numpy.asarray, params["backbone"])
    opt_state = tx.init(head)
    np_rng = np.random.default_rng(s.seed)
    indices = _batch_indices(demos.num_frames, s.batch_size, np_rng)
    key = jax.random.key(s.seed)
    history = []
    start = time.perf_counter()
    frames = None if s.augment or s.steps == 0 else preprocess_frames(processor, demos)
    for step in range(1, s.steps + 1):
        index = next(indices)
        batch = (make_batch(processor, demos, index, augment=True, rng=np_rng) if frames is None
                 else index_frames(frames, index))
        key, step_key = jax.random.split(key)
        head, opt_state, loss, grad_norm = step_fn(head, opt_state, backbone, batch, step_key)
        if step % s.log_interval == 0 or step in (1, s.steps):
            row = {"step": step, "loss": float(loss), "grad_norm": float(grad_norm),
                   "lr": float(schedule(step - 1)), "seconds": time.perf_counter() - start}
            history.append(row)
            log(f"step {step}/{s.steps}  loss {row['loss']:.4f}  grad_norm {row['grad_norm']:.3f}  "
                f"lr {row['lr']:.2e}  {row['seconds']:.1f} s")
    return {"backbone": params["backbone"], "action_head": jax.device_get(head)}, history


# ===================================================================================================== checkpoint

def save_checkpoint(out: str | os.PathLike, step: int, params: dict, cfg, metadata: Mapping[str, Any],
                    tokenizer_dir: pathlib.Path | None, *, base_assets: Mapping[str, Any] | None = None,
                    sft_info: Mapping[str, Any] | None = None,
                    state_keys: Sequence[tuple[str, int]] = STATE_KEY_DIMS) -> pathlib.Path:
    """Writes ``out/global_step_<step>/{params, assets}`` (``gr00t_port.convert``'s layout; params as numpy) and
    puts the tokenizer files and ``experiment_cfg/metadata.json`` in that step directory. Returns the step dir."""
    import jax
    import orbax.checkpoint as ocp

    from gr00t_port.convert import METADATA_FILE, STEP_PREFIX

    out = pathlib.Path(out)
    step_dir = out / f"{STEP_PREFIX}_{step}"
    if step_dir.exists():
        shutil.rmtree(step_dir)
    base = dict(base_assets or {})
    assets = {
        "hf_config": base.get("hf_config"),
        "eagle_config": base.get("eagle_config"),
        "metadata": dict(metadata),
        "gr00t_config": cfg.to_dict(),
        "modality_layout": modality_layout(state_keys).to_dict(),
        "provenance": {
            "producer": "jaxrl_isaac.sft",
            "layout_version": 1,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "init": base.get("provenance", {}).get("source") if base else None,
            **dict(sft_info or {}),
        },
    }
    params = jax.tree.map(np.asarray, params)
    options = ocp.CheckpointManagerOptions(step_prefix=STEP_PREFIX, create=True, enable_async_checkpointing=False)
    mngr = ocp.CheckpointManager(out.absolute(), options=options, item_names=("params", "assets"))
    mngr.save(step, args=ocp.args.Composite(params=ocp.args.PyTreeSave(params), assets=ocp.args.JsonSave(assets)),
              force=True)
    mngr.wait_until_finished()
    mngr.close()
    (step_dir / METADATA_FILE).parent.mkdir(parents=True, exist_ok=True)
    (step_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=1))
    if tokenizer_dir is not None:
        for f in tokenizer_files(pathlib.Path(tokenizer_dir)):
            shutil.copy2(f, step_dir / f.name)
    return step_dir


# ====================================================================================================== bootstrap

def max_episode_steps_for_stats(task_id: str) -> int:
    """Steps per noisy-expert episode when exploring for state statistics (reach: 80, the cube tasks: 300)."""
    from jaxrl_isaac.envs.embedded.tasks import REACH_ID

    return 80 if task_id == REACH_ID else 300


def bootstrap_checkpoint(task_id: str, out: str | os.PathLike, *, architecture: str = "tiny", steps: int,
                         episodes: int, batch_size: int, lr: float, cam: int, seed: int = 0,
                         embodiment_tag: str = DEFAULT_EMBODIMENT_TAG, num_envs: int = 16, augment: bool = True,
                         tokenizer: str = "words", tiled_rendering: bool = False,
                         log: Callable[[str], None] = print,
                         reuse_from: Sequence[str | os.PathLike] = ()) -> pathlib.Path:
    """``python -m jaxrl_isaac.sft`` with these arguments into ``out`` from a random ``architecture``, unless ``out``
    or one of the ``reuse_from`` dirs (read only) already holds the result of the same arguments; ``steps=0`` is the
    random init with its normalisation statistics (RL from scratch). Returns the ``global_step_<steps>`` dir."""
    from gr00t_port.convert import STEP_PREFIX

    out = pathlib.Path(out)
    # The recipe leaves out --out, so that a bootstrap dir copied into another run's log dir is still reused.
    recipe = ["--task", task_id, "--episodes", str(episodes), "--num-envs", str(num_envs),
              "--model-config", architecture, "--steps", str(steps), "--batch-size", str(batch_size), "--lr", str(lr),
              "--cam", str(cam), "--seed", str(seed), "--embodiment-tag", embodiment_tag,
              "--log-interval", str(max(steps // 10, 1)), "--tiny-tokenizer", tokenizer,
              *([] if augment else ["--no-augment"]), *(["--tiled-rendering"] if tiled_rendering else [])]
    argv = [*recipe, "--out", str(out)]
    for where in (out, *map(pathlib.Path, reuse_from)):
        step_dir = where / f"{STEP_PREFIX}_{steps}"
        if step_dir.is_dir() and _recorded_recipe(where / "bootstrap.json", log) == recipe:
            log(f"reusing the bootstrap SFT checkpoint {step_dir}")
            return step_dir
    log(f"bootstrap: a random {architecture} GR00T, then {steps} SFT steps on {episodes} expert episodes "
        f"(python -m jaxrl_isaac.sft {' '.join(argv)})")
    step_dir = run(build_parser().parse_args(argv), log=log)
    (out / "bootstrap.json").write_text(json.dumps(recipe))
    return step_dir


def _recorded_recipe(path: pathlib.Path, log: Callable[[str], None]) -> list[str] | None:
    """The recipe a bootstrap dir was made with (without ``--out``); None if there is none or it is unreadable (a
    half-written or edited file then means "rebuild", with one line saying why, instead of a traceback)."""
    if not path.is_file():
        return None
    try:
        recipe = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log(f"ignoring the unreadable bootstrap recipe {path} ({type(err).__name__})")
        return None
    if not isinstance(recipe, list) or not all(isinstance(a, str) for a in recipe):
        log(f"ignoring the bootstrap recipe {path}: not a list of arguments")
        return None
    return _without_out(recipe)


def _without_out(argv: list[str]) -> list[str]:
    """A stored recipe without its ``--out DIR`` pair (recipes written before it was left out still match)."""
    if "--out" not in argv:
        return argv
    i = argv.index("--out")
    return argv[:i] + argv[i + 2:]


# ============================================================================================================ CLI

def _positive_int(text: str) -> int:
    """argparse type: a count that must be >= 1, so that a bad value fails before any model is built."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jaxrl_isaac.sft", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default=SFT_TASK, help="embedded task id with a scripted expert")
    p.add_argument("--episodes", type=_positive_int, default=20, help="successful expert episodes to record")
    p.add_argument("--num-envs", type=_positive_int, default=8, help="parallel sub-envs while collecting")
    p.add_argument("--num-workers", type=_positive_int, default=1,
                   help="simulator processes sharing --num-envs while collecting (contiguous shares)")
    p.add_argument("--tiled-rendering", action="store_true",
                   help="render the demos' cameras as tiles of one buffer (env.*.init_params.tiled_rendering)")
    p.add_argument("--out", required=True, help="output directory; the checkpoint goes to OUT/global_step_<steps>")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model-config", choices=MODEL_ARCHITECTURES, default=None,
                       help="random-init architecture (default tiny when --init is not given)")
    model.add_argument("--init", default=None, help="a converted GR00T checkpoint (gr00t_port.convert output)")
    p.add_argument("--tokenizer", default=None, help="Eagle tokenizer dir (default: a tiny byte-level tokenizer for "
                                                     "tiny/small; else $GR00T_TOKENIZER_PATH / the --init dir / caches)")
    p.add_argument("--tiny-tokenizer", choices=TINY_TOKENIZERS, default="words",
                   help="the tiny/small models' tokenizer when --tokenizer is not given: 'words' merges each word of "
                        "the embedded prompts into one token (47-token reach prompt), 'bytes' has no merges (125)")
    p.add_argument("--embodiment-tag", default=DEFAULT_EMBODIMENT_TAG)
    p.add_argument("--steps", type=int, default=SFTSettings.steps,
                   help="optimizer steps; 0 writes the random model with its normalisation statistics only")
    p.add_argument("--batch-size", type=_positive_int, default=SFTSettings.batch_size)
    p.add_argument("--lr", type=float, default=SFTSettings.lr)
    p.add_argument("--action-horizon", type=int, default=16)
    p.add_argument("--cam", type=_positive_int, default=64, help="camera height = width in pixels")
    p.add_argument("--no-augment", action="store_true", help="eval-mode image transform (centre crop, no jitter)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--log-interval", type=int, default=SFTSettings.log_interval)
    p.add_argument("--state-stats-noise", type=float, default=0.3,
                   help="widen the state statistics with noisy-expert rollouts (action noise std) so that states an "
                        "RL policy explores still normalise to O(1); 0: statistics of the demos only (Isaac-GR00T)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nondeterministic-gpu-ops", action="store_true",
                   help="leave out XLA's deterministic GPU kernels (faster; two runs of the same command then differ)")
    return p


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> pathlib.Path:
    """The whole SFT pipeline for parsed CLI ``args``; returns the checkpoint's step directory."""
    from gr00t_port.config import GR00TConfig
    from gr00t_port.processor import IMAGE_CONTEXT_TOKEN, find_tokenizer_dir, load_tokenizer

    check_task(args.task)
    from jaxrl_isaac.envs.embedded.tasks import get_task
    task_state_dim = sum(d for _, d in get_task(args.task).state_keys)
    settings = SFTSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr, augment=not args.no_augment,
                           log_interval=args.log_interval, seed=args.seed)
    out = pathlib.Path(args.out)
    dtype = {"fp32": "float32", "bf16": "bfloat16"}[args.precision]
    base_assets: dict = {}
    # Resolve the tokenizer and model config before spending time on demos, so bad input fails at once.
    if args.init is not None:
        from gr00t_port.convert import load_converted

        params, base_assets, _ = load_converted(args.init)
        if "gr00t_config" not in base_assets:
            raise ValueError(f"{args.init}: assets lack 'gr00t_config'; convert it with python -m gr00t_port.convert")
        tokenizer_dir = find_tokenizer_dir(args.tokenizer, checkpoint_dir=args.init)
        cfg = GR00TConfig.from_dict(base_assets["gr00t_config"])
    elif (args.model_config or "tiny") in ("tiny", "small"):
        tokenizer_dir = (find_tokenizer_dir(args.tokenizer) if args.tokenizer is not None
                         else write_tiny_tokenizer(out / TOKENIZER_SUBDIR, args.tiny_tokenizer))
        tokenizer = load_tokenizer(tokenizer_dir)
        cfg = tiny_model_config(len(tokenizer), tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT_TOKEN),
                                args.action_horizon, max_state_dim=max(16, task_state_dim),
                                architecture=args.model_config or "tiny")
        params = None
    else:
        tokenizer_dir = find_tokenizer_dir(args.tokenizer)
        cfg = GR00TConfig.n15()
        params = None
    cfg = cfg.with_numerics(dtype=dtype)
    check_model_fits(cfg, args.action_horizon, task_state_dim)
    tokenizer = load_tokenizer(tokenizer_dir)
    if len(tokenizer) > cfg.backbone.text.vocab_size:
        raise ValueError(f"tokenizer at {tokenizer_dir} has {len(tokenizer)} tokens, more than the model's "
                         f"vocab_size={cfg.backbone.text.vocab_size}")
    if params is None:
        params = random_params(cfg, args.seed)
        log(f"random {args.model_config or 'tiny'} GR00T (no --init)")

    demos, report = collect_demos(args.task, args.episodes, args.num_envs, num_workers=args.num_workers,
                                  tiled_rendering=args.tiled_rendering,
                                  action_horizon=args.action_horizon,
                                  cam=args.cam, seed=args.seed, log=log)
    explored = None
    if args.state_stats_noise > 0:
        explored = explored_states(args.task, args.num_envs, 4 * max_episode_steps_for_stats(args.task),
                                   noise_std=args.state_stats_noise, seed=args.seed)
    metadata = build_metadata(demos, args.embodiment_tag, extra_states=explored)
    processor = make_processor(cfg, metadata, tokenizer, args.embodiment_tag, demos.state_keys)
    history: list[dict[str, float]] = []
    if settings.steps > 0:
        params, history = train(cfg, params, processor, demos, settings, log=log)
    info = {"task": args.task, "instruction": demos.instruction, "episodes": demos.num_episodes,
            "frames": demos.num_frames, "collect_frames_per_second": report.frames_per_second,
            "settings": dataclasses.asdict(settings), "loss_first": history[0]["loss"] if history else None,
            "loss_last": history[-1]["loss"] if history else None}
    step_dir = save_checkpoint(out, settings.steps, params, cfg, metadata, tokenizer_dir, base_assets=base_assets,
                               sft_info=info, state_keys=demos.state_keys)
    (out / "sft_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in history))
    log(f"wrote {step_dir}")
    return step_dir


def main(argv: Sequence[str] | None = None) -> int:
    from jaxrl_isaac.jax_setup import configure_jax_determinism, jax_backends_initialized

    args = build_parser().parse_args(argv)
    if not jax_backends_initialized():  # as train's cluster.deterministic_gpu_ops: the same SFT start every time
        configure_jax_determinism(not args.nondeterministic_gpu_ops)
    try:
        run(args)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
