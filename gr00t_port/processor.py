"""GR00T N1.5 processor: camera frames, instruction, state (and actions) -> the model's input arrays, and model
actions -> environment actions.

It reproduces, for the data configs RLinf uses (``LiberoFrankaDataConfig`` for ``libero_franka`` and
``isaaclab_franka``), Isaac-GR00T's modality transforms followed by ``GR00TTransform`` + ``collate`` and the Eagle
2.5 VL processor:

images  (per view, uint8 (H, W, 3))
  1. x / 255 as float32                                              (VideoToTensor)
  2. crop (int(H * 0.95), int(W * 0.95)): centred in eval, random      (VideoCrop; H, W from metadata.json, which
     position in train                                                  must equal the frames' size)
  3. bilinear resize with antialiasing to image_size x image_size      (VideoResize, torchvision on float tensors)
  4. train only: colour jitter, brightness .3, contrast .4,             (VideoColorJitter)
     saturation .5, hue .08, in a random order
  5. uint8(x * 255), truncating                                        (VideoToNumpy)
  6. (u8 - 127.5) / 127.5 as float32, channels first                   (Eagle image processor, one tile)
  Every frame reaches the Eagle stage at image_size x image_size, which is exactly one tile, so each image is
  always ``tokens_per_image`` tokens. (Fed directly, the Eagle processor would resize a square frame of any size,
  e.g. IsaacLab's 200 or 256 px, bicubically to one tile, but split a non-square one into up to 12 tiles plus a
  thumbnail; that never happens here.) Steps 3 and 5 go through torch on CPU because the truncation in step 5
  turns any difference in float summation order into one-level pixel differences; with the reference's own
  kernel the pixels are bit-identical. In train mode one crop and one jitter draw are shared by all views and
  frames of a sample, as when Isaac-GR00T's data loader transforms one sample at a time.

text    Eagle chat template (the processor's, not Qwen3's) with add_generation_prompt::

          <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
          <image 1><img><IMG_CONTEXT>*N</img><image 2><img>...</img>{instruction}<|im_end|>\\n<|im_start|>assistant\\n

        (one line; N = tokens_per_image, images in (time, view) order), tokenized by the Qwen3 tokenizer (it adds
        no BOS/EOS), left-padded to the longest prompt of the batch with ``<|endoftext|>`` (151643) and
        mask 0. ``language_format="list_repr"`` renders the instruction as ``str([instruction])``, i.e.
        ``['pick up ...']``, which is what ``Gr00tPolicy.get_action`` on unbatched input and LeRobot feed the
        model; RLinf and Isaac-GR00T training feed the plain string (the default).

state   per-key normalization from metadata.json, concatenated in layout order, zero-padded to 64 + mask.

The output of :meth:`GR00TProcessor.__call__` is the model input contract (numpy)::

  eagle_input_ids       (B, L) int64
  eagle_attention_mask  (B, L) int64
  eagle_pixel_values    (B*T*V, 3, S, S) float32, sample-major, then time, then view ((B*T*V, S, S, 3) with
                        pixel_layout="NHWC", the layout gr00t_port.eagle takes)
  state                 (B, 1, 64) float32
  state_mask            (B, 1, 64) bool (unused by the model)
  embodiment_id         (B,) int64
  action, action_mask   (B, 16, 32) float32 / bool, only when actions are given (training)

The tokenizer files are not part of released GR00T checkpoints; :func:`find_tokenizer_dir` says where they are
looked for. Nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from gr00t_port.embodiment import embodiment_projector_index
from gr00t_port.normalization import EmbodimentMetadata, StateActionCodec, load_embodiment_metadata

# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModalityLayout:
    """Which metadata keys feed the model, in which order, and how each state/action key is normalized.

    Keys are the metadata.json sub-keys (``"x"``, not ``"state.x"``). ``*_modes`` align with ``*_keys``; a mode is
    one of ``min_max``, ``q99``, ``mean_std``, ``binary``, ``none``.
    """

    video_keys: tuple[str, ...]
    state_keys: tuple[str, ...]
    state_modes: tuple[str, ...]
    action_keys: tuple[str, ...]
    action_modes: tuple[str, ...]

    def __post_init__(self):
        for kind in ("state", "action"):
            keys, modes = getattr(self, f"{kind}_keys"), getattr(self, f"{kind}_modes")
            if len(keys) != len(modes) or len(set(keys)) != len(keys):
                raise ValueError(f"ModalityLayout: {kind}_keys {keys} must be unique and align with {kind}_modes "
                                 f"{modes}")

    def to_dict(self) -> dict[str, list[str]]:
        """JSON form, stored in checkpoint assets as ``modality_layout``."""
        return {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Any, source: str = "modality_layout") -> "ModalityLayout":
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(d, dict) or sorted(d) != sorted(names):
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"{source} must have exactly the keys {names}, got {got}")
        return cls(**{k: tuple(str(v) for v in d[k]) for k in names})

    def with_state_keys(self, state_keys: Sequence[str], mode: str = "min_max") -> "ModalityLayout":
        """The same layout with other state keys, all normalized with ``mode``."""
        return dataclasses.replace(self, state_keys=tuple(state_keys), state_modes=(mode,) * len(state_keys))


_FRANKA_EEF_KEYS = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")

# RLinf's LiberoFrankaDataConfig, used for both ``libero_franka`` and ``isaaclab_franka``: a third-person and a
# wrist camera; 8-D state (eef xyz 3, axis-angle 3, gripper fingers 2); 7-D action; min_max everywhere.
LIBERO_FRANKA_LAYOUT = ModalityLayout(
    video_keys=("image", "wrist_image"),
    state_keys=_FRANKA_EEF_KEYS,
    state_modes=("min_max",) * 7,
    action_keys=_FRANKA_EEF_KEYS,
    action_modes=("min_max",) * 7,
)


@dataclasses.dataclass(frozen=True)
class GR00TProcessorConfig:
    """Processor settings. Defaults: Isaac-GR00T's processing with RLinf's Franka layout for ``isaaclab_franka``;
    :data:`RLINF_ISAACLAB_CONFIG` adds RLinf's rollout-only details (fixed length 570, bf16-rounded states).

    embodiment_tag: metadata.json entry and projector index (``isaaclab_franka`` -> 31).
    embodiment_overrides: extra/replaced tag -> projector ids (e.g. ``(("new_embodiment", 10),)`` for RLinf).
    image_size, tokens_per_image: the vision tower's input size and tokens per image (224, 256; smaller for tiny
      test models).
    crop_scale: VideoCrop's scale (0.95 in every GR00T data config).
    language_format: ``plain`` (RLinf, training) or ``list_repr`` (``str([text])``, Gr00tPolicy/LeRobot).
    default_instruction: used when no instruction is given (Isaac-GR00T's default).
    pad_to_length: if set, right-pad ids with 0 and the mask with 0 after the left padding, to this fixed length
      (RLinf's ``padding_value: 570``; also gives jit-friendly static shapes).
    strict_video_resolution: require frames to match metadata.json's video resolution, as Isaac-GR00T does.
    state_bf16_roundtrip: round states through bfloat16 before normalizing, as RLinf's rollout does.
    pixel_layout: ``NCHW`` (the PyTorch model's (N, 3, S, S)) or ``NHWC`` (what Flax convolutions take).
    """

    embodiment_tag: str = "isaaclab_franka"
    layout: ModalityLayout = LIBERO_FRANKA_LAYOUT
    embodiment_overrides: tuple[tuple[str, int], ...] = ()
    image_size: int = 224
    tokens_per_image: int = 256
    crop_scale: float = 0.95
    max_state_dim: int = 64
    max_action_dim: int = 32
    action_horizon: int = 16
    language_format: Literal["plain", "list_repr"] = "plain"
    default_instruction: str = "Perform the default behavior."
    pad_to_length: int | None = None
    strict_video_resolution: bool = True
    state_bf16_roundtrip: bool = False
    pixel_layout: Literal["NCHW", "NHWC"] = "NCHW"

    def __post_init__(self):
        if self.pixel_layout not in ("NCHW", "NHWC"):
            raise ValueError(f"pixel_layout must be 'NCHW' or 'NHWC', got {self.pixel_layout!r}")
        if self.language_format not in ("plain", "list_repr"):
            raise ValueError(f"language_format must be 'plain' or 'list_repr', got {self.language_format!r}")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        if self.image_size <= 0 or self.tokens_per_image <= 0:
            raise ValueError(f"image_size and tokens_per_image must be positive, got {self.image_size}, "
                             f"{self.tokens_per_image}")


# RLinf's GR00T N1.5 rollout for IsaacLab stack-cube (``predict_action_batch``): ids and mask right-padded to
# ``padding_value: 570``, states rounded through bfloat16 first.
RLINF_ISAACLAB_CONFIG = GR00TProcessorConfig(pad_to_length=570, state_bf16_roundtrip=True)


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------

# VideoColorJitter's ranges in every GR00T data config: factor ranges for brightness/contrast/saturation, shift for hue.
COLOR_JITTER = {"brightness": (0.7, 1.3), "contrast": (0.6, 1.4), "saturation": (0.5, 1.5), "hue": (-0.08, 0.08)}
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


def crop_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """VideoCrop's output size: (int(H * scale), int(W * scale))."""
    return int(height * scale), int(width * scale)


def center_crop_offset(height: int, width: int, crop: tuple[int, int]) -> tuple[int, int]:
    """torchvision CenterCrop's (top, left): Python-rounded half of the margin (6.5 -> 6)."""
    return int(round((height - crop[0]) / 2.0)), int(round((width - crop[1]) / 2.0))


def _torch():
    import torch  # noqa: PLC0415 - imported on first use so that importing this module stays light

    return torch


def _resize_bilinear_antialias(frames, size: int):
    """(N, 3, h, w) float32 torch tensor -> (N, 3, size, size); torchvision's Resize(antialias=True) kernel."""
    if tuple(frames.shape[-2:]) == (size, size):
        return frames  # torchvision returns the input unchanged when the size already matches
    return _torch().nn.functional.interpolate(frames, size=[size, size], mode="bilinear", align_corners=False,
                                              antialias=True)


def _grayscale(frames):
    torch = _torch()
    r, g, b = frames.unbind(dim=-3)
    gray = torch.add(torch.add(r * _GRAY_WEIGHTS[0], g, alpha=_GRAY_WEIGHTS[1]), b, alpha=_GRAY_WEIGHTS[2])
    return gray.unsqueeze(dim=-3)


def _blend(frames, other, ratio: float):
    """ratio * frames + (1 - ratio) * other, clamped to [0, 1] (torchvision's _blend, same op order)."""
    return _torch().add(frames * ratio, other, alpha=1.0 - ratio).clamp(0.0, 1.0)


def _rgb_to_hsv(frames):
    torch = _torch()
    r, g, b = frames.unbind(dim=-3)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    gray = maxc == minc  # hue and saturation are 0 there
    chroma = maxc - minc
    saturation = chroma / torch.where(gray, torch.ones_like(maxc), maxc)
    safe_chroma = torch.where(gray, torch.ones_like(chroma), chroma)
    rc, gc, bc = (maxc - r) / safe_chroma, (maxc - g) / safe_chroma, (maxc - b) / safe_chroma
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(gray, torch.zeros_like(hue), hue)
    hue = torch.fmod(hue / 6.0 + 1.0, 1.0)
    return torch.stack((hue, saturation, maxc), dim=-3)


def _hsv_to_rgb(frames):
    torch = _torch()
    h, s, v = frames.unbind(dim=-3)
    sector = torch.floor(h * 6.0)
    f = h * 6.0 - sector
    sector = sector.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    # (r, g, b) per hue sector 0..5.
    table = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
    out = torch.zeros_like(frames)
    for k, (r, g, b) in enumerate(table):
        sel = (sector == k).unsqueeze(dim=-3)
        out = torch.where(sel, torch.stack((r, g, b), dim=-3), out)
    return out


def _adjust_hue(frames, shift: float):
    torch = _torch()
    h, s, v = _rgb_to_hsv(frames).unbind(dim=-3)
    return _hsv_to_rgb(torch.stack((torch.remainder(h + shift, 1.0), s, v), dim=-3))


def color_jitter(frames, rng: np.random.Generator):
    """VideoColorJitter on (N, 3, H, W) float [0, 1] frames: one draw of factors and order for all N frames."""
    torch = _torch()
    order = rng.permutation(4)
    factors = [rng.uniform(*COLOR_JITTER[name]) for name in ("brightness", "contrast", "saturation", "hue")]
    for op in order:
        factor = float(factors[op])
        if op == 0:
            frames = (frames * factor).clamp(0.0, 1.0)
        elif op == 1:
            mean = torch.mean(_grayscale(frames), dim=(-3, -2, -1), keepdim=True)
            frames = _blend(frames, mean, factor)
        elif op == 2:
            frames = _blend(frames, _grayscale(frames), factor)
        else:
            frames = _adjust_hue(frames, factor)
    return frames


def transform_frames(frames: np.ndarray, *, image_size: int = 224, crop_scale: float = 0.95, train: bool = False,
                     rng: np.random.Generator | None = None) -> np.ndarray:
    """GR00T's video transforms for the frames of ONE sample (all views and times share the random draws).

    Args:
      frames: (N, H, W, 3) uint8, N = time x view frames of one sample (or any stack in eval mode).
      image_size: output side.
      crop_scale: VideoCrop scale (the crop size comes from the frames' size, which GR00T requires to equal
        metadata.json's resolution).
      train: random crop + colour jitter (needs ``rng``) instead of the centred crop.
    Returns:
      (N, image_size, image_size, 3) uint8, what the reference hands to the Eagle processor.
    """
    torch = _torch()
    _, height, width, _ = frames.shape
    crop = crop_size(height, width, crop_scale)
    if min(crop) < 1:
        raise ValueError(f"frames of size {(height, width)} are too small to crop by {crop_scale}")
    if train:
        if rng is None:
            raise ValueError("train-mode image transforms need an rng (np.random.Generator)")
        top = int(rng.integers(0, height - crop[0] + 1))
        left = int(rng.integers(0, width - crop[1] + 1))
    else:
        top, left = center_crop_offset(height, width, crop)
    # Cropping before the float conversion gives the same values as the reference's convert-then-crop.
    cropped = np.ascontiguousarray(frames[:, top : top + crop[0], left : left + crop[1]])
    x = (torch.from_numpy(cropped).to(torch.float32) / 255.0).permute(0, 3, 1, 2)
    x = _resize_bilinear_antialias(x, image_size)
    if train:
        x = color_jitter(x, rng)
    return (x.permute(0, 2, 3, 1) * 255).to(torch.uint8).numpy()


# Eagle's (x / 255 - 0.5) / 0.5, which transformers fuses into (x - 127.5) / 127.5 in float32; a lookup table
# over the 256 uint8 levels gives the same float32 values several times faster.
_PIXEL_LUT = (np.arange(256, dtype=np.float32) - np.float32(127.5)) / np.float32(127.5)


def pixel_values(frames: np.ndarray, layout: str = "NCHW") -> np.ndarray:
    """(N, S, S, 3) uint8 -> float32 in [-1, 1] (Eagle's image normalization), (N, 3, S, S) or (N, S, S, 3)."""
    return _PIXEL_LUT[np.ascontiguousarray(frames.transpose(0, 3, 1, 2)) if layout == "NCHW" else frames]


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------------------------

TOKENIZER_ENV_VAR = "GR00T_TOKENIZER_PATH"
LEROBOT_EAGLE_ASSETS_REPO = "lerobot/eagle2hg-processor-groot-n1p5"
ISAAC_GR00T_EAGLE_SUBDIR = pathlib.Path("model") / "backbone" / "eagle2_hg_model"

IMAGE_CONTEXT_TOKEN = "<IMG_CONTEXT>"
IMAGE_START_TOKEN = "<img>"
IMAGE_END_TOKEN = "</img>"
REQUIRED_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_CONTEXT_TOKEN, IMAGE_START_TOKEN,
                   IMAGE_END_TOKEN)
SYSTEM_PROMPT = "You are a helpful assistant."


def _is_tokenizer_dir(path: pathlib.Path) -> bool:
    return (path / "tokenizer_config.json").is_file() and (
        (path / "tokenizer.json").is_file() or ((path / "vocab.json").is_file() and (path / "merges.txt").is_file())
    )


def tokenizer_search_path(checkpoint_dir: str | os.PathLike | None = None) -> list[tuple[str, pathlib.Path]]:
    """Where the Eagle (Qwen3) tokenizer is looked for when no path is given, in order."""
    candidates: list[tuple[str, pathlib.Path]] = []
    if os.environ.get(TOKENIZER_ENV_VAR):
        candidates.append((f"${TOKENIZER_ENV_VAR}", pathlib.Path(os.environ[TOKENIZER_ENV_VAR]).expanduser()))
    if checkpoint_dir is not None:
        candidates.append(("the checkpoint directory", pathlib.Path(checkpoint_dir)))
    try:
        spec = importlib.util.find_spec("gr00t")  # finds an Isaac-GR00T install without importing it
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            candidates.append(("the installed Isaac-GR00T package", pathlib.Path(root) / ISAAC_GR00T_EAGLE_SUBDIR))
    hf_home = pathlib.Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser()
    lerobot_home = pathlib.Path(os.environ.get("HF_LEROBOT_HOME", hf_home / "lerobot")).expanduser()
    candidates.append(("LeRobot's Eagle asset cache", lerobot_home / LEROBOT_EAGLE_ASSETS_REPO))
    hub_cache = pathlib.Path(os.environ.get("HF_HUB_CACHE", hf_home / "hub")).expanduser()
    repo_cache = hub_cache / ("models--" + LEROBOT_EAGLE_ASSETS_REPO.replace("/", "--")) / "snapshots"
    snapshots = sorted(repo_cache.iterdir()) if repo_cache.is_dir() else []
    candidates += [("the Hugging Face hub cache", snapshot) for snapshot in snapshots]
    if not snapshots:
        candidates.append(("the Hugging Face hub cache", repo_cache / "<revision>"))
    return candidates


def find_tokenizer_dir(path: str | os.PathLike | None = None,
                       checkpoint_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The directory holding the Eagle tokenizer files (tokenizer_config.json + tokenizer.json or vocab.json and
    merges.txt): ``path`` if given, else the first hit of :func:`tokenizer_search_path`."""
    if path is not None:
        path = pathlib.Path(path).expanduser()
        if not _is_tokenizer_dir(path):
            raise FileNotFoundError(f"no tokenizer at {path}: expected tokenizer_config.json plus tokenizer.json or "
                                    "vocab.json + merges.txt")
        return path
    searched = tokenizer_search_path(checkpoint_dir)
    for _, candidate in searched:
        if _is_tokenizer_dir(candidate):
            return candidate
    where = "; ".join(f"{name} ({candidate})" for name, candidate in searched)
    raise FileNotFoundError(
        "GR00T N1.5's Eagle tokenizer was not found (released checkpoints do not include it). Looked in: "
        f"{where}. Provide it by passing tokenizer_path= or setting ${TOKENIZER_ENV_VAR} to a directory with "
        "tokenizer_config.json, vocab.json and merges.txt (Isaac-GR00T's gr00t/model/backbone/eagle2_hg_model/ "
        f"or the Hugging Face repo {LEROBOT_EAGLE_ASSETS_REPO}, downloaded beforehand)."
    )


def prompt_token_ids(tokenizer, text: str, num_images: int, tokens_per_image: int) -> np.ndarray:
    """Token ids (L,) of the chat prompt for an already formatted instruction ``text`` and ``num_images`` images
    of ``tokens_per_image`` tokens each (what ``GR00TProcessor.prompt_ids`` caches)."""
    prompt = expand_image_placeholders(render_chat_prompt(num_images, text), num_images, tokens_per_image)
    return np.asarray(tokenizer(prompt, add_special_tokens=True)["input_ids"], np.int64)


def load_tokenizer(path: str | os.PathLike | None = None, checkpoint_dir: str | os.PathLike | None = None):
    """Loads the Qwen2/Qwen3 fast tokenizer from local files only and checks the tokens the processor needs."""
    from transformers import Qwen2TokenizerFast  # noqa: PLC0415 - heavy import, only when a tokenizer is loaded

    directory = find_tokenizer_dir(path, checkpoint_dir)
    tokenizer = Qwen2TokenizerFast.from_pretrained(str(directory), local_files_only=True)
    tokenizer.padding_side = "left"
    for token in REQUIRED_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if not isinstance(token_id, int) or tokenizer.convert_ids_to_tokens(token_id) != token:
            raise ValueError(f"tokenizer at {directory} has no {token!r} token; it is not the Eagle tokenizer")
    if tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer at {directory} has no pad token (Eagle pads with <|endoftext|>)")
    return tokenizer


# ----------------------------------------------------------------------------------------------------------------
# Prompt
# ----------------------------------------------------------------------------------------------------------------


def format_instruction(instruction: Any, language_format: str = "plain") -> str:
    """The text the chat template receives: the plain string, or ``str([text])`` for ``list_repr``."""
    text = str(instruction)
    return str([text]) if language_format == "list_repr" else text


def render_chat_prompt(num_images: int, text: str) -> str:
    """The Eagle chat template, one user turn of ``num_images`` images then ``text``, plus the generation prompt.
    Images appear as ``<image-k>`` placeholders, as the template writes them."""
    images = "".join(f"<image-{k}>" for k in range(1, num_images + 1))
    return (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{images}{text}<|im_end|>\n"
            "<|im_start|>assistant\n")


def expand_image_placeholders(prompt: str, num_images: int, tokens_per_image: int) -> str:
    """Eagle's replacement of ``<image-k>`` by ``<image k><img><IMG_CONTEXT>*tokens_per_image</img>`` (one tile)."""
    body = IMAGE_START_TOKEN + IMAGE_CONTEXT_TOKEN * tokens_per_image + IMAGE_END_TOKEN
    for k in range(1, num_images + 1):
        placeholder = f"<image-{k}>"
        if prompt.count(placeholder) != 1:
            raise ValueError(f"prompt must contain {placeholder} exactly once")
        prompt = prompt.replace(placeholder, f"<image {k}>{body}")
    return prompt


# ----------------------------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------------------------


def collate(samples: Sequence[Mapping[str, np.ndarray]], pad_token_id: int,
            pad_to_length: int | None = None) -> dict[str, np.ndarray]:
    """Per-sample processor outputs -> one model batch.

    Each sample: ``input_ids`` (L_i,), ``pixel_values`` (T*V, 3, S, S), ``state``/``state_mask`` (1, 64),
    ``embodiment_id`` (), optionally ``action``/``action_mask`` (16, 32). Ids are left-padded with
    ``pad_token_id`` to the longest sample (Eagle's padding); with ``pad_to_length`` they are then right-padded
    with id 0 / mask 0 to that length (RLinf).
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    with_actions = {"action" in s for s in samples}
    if len(with_actions) != 1:
        raise ValueError("collate: either every sample has an action or none does")
    lengths = [len(s["input_ids"]) for s in samples]
    longest = max(lengths)
    total = longest if pad_to_length is None else pad_to_length
    if total < longest:
        raise ValueError(f"a prompt has {longest} tokens, more than pad_to_length={pad_to_length}")
    ids = np.zeros((len(samples), total), np.int64)
    mask = np.zeros((len(samples), total), np.int64)
    for row, (sample, length) in enumerate(zip(samples, lengths)):
        ids[row, : longest - length] = pad_token_id
        ids[row, longest - length : longest] = sample["input_ids"]
        mask[row, longest - length : longest] = 1
    batch = {
        "eagle_input_ids": ids,
        "eagle_attention_mask": mask,
        "eagle_pixel_values": np.concatenate([s["pixel_values"] for s in samples], axis=0),
        "state": np.stack([s["state"] for s in samples]),
        "state_mask": np.stack([s["state_mask"] for s in samples]),
        "embodiment_id": np.asarray([s["embodiment_id"] for s in samples], np.int64),
    }
    if "action" in samples[0]:
        batch["action"] = np.stack([s["action"] for s in samples])
        batch["action_mask"] = np.stack([s["action_mask"] for s in samples])
    return batch


# ----------------------------------------------------------------------------------------------------------------
# Action post-processing (RLinf simulation_io)
# ----------------------------------------------------------------------------------------------------------------


def isaaclab_stack_cube_actions(actions: np.ndarray, num_action_chunks: int = 16) -> np.ndarray:
    """RLinf's IsaacLab stack-cube conversion: first ``num_action_chunks`` steps of (B, H, 7) unnormalized
    actions, gripper -> sign(gripper) (IsaacLab's binary gripper closes for < 0, opens otherwise)."""
    out = _first_steps(actions, num_action_chunks, 7)
    out[..., -1] = np.sign(out[..., -1])
    return out


def libero_actions(actions: np.ndarray, num_action_chunks: int = 5) -> np.ndarray:
    """RLinf's LIBERO conversion: first ``num_action_chunks`` steps, gripper g in [0, 1] -> sign(1 - 2g)."""
    out = _first_steps(actions, num_action_chunks, 7)
    out[..., -1] = np.sign(1 - 2 * out[..., -1])
    return out


def _first_steps(actions: np.ndarray, steps: int, dim: int) -> np.ndarray:
    actions = np.asarray(actions)
    if actions.ndim != 3 or actions.shape[-1] != dim:
        raise ValueError(f"actions must be (B, horizon, {dim}), got {actions.shape}")
    if not 1 <= steps <= actions.shape[1]:
        raise ValueError(f"num_action_chunks={steps} must be in [1, {actions.shape[1]}]")
    return np.array(actions[:, :steps], copy=True)


# ----------------------------------------------------------------------------------------------------------------
# The processor
# ----------------------------------------------------------------------------------------------------------------


_PROMPT_CACHE_SIZE = 4096  # distinct (num_images, instruction) prompts kept tokenized


def _to_numpy(value: Any) -> np.ndarray:
    """numpy view of a numpy/JAX array or a (CPU or CUDA) torch tensor."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class GR00TProcessor:
    """Builds GR00T N1.5 model inputs from observations and turns model actions back into env actions.

    Args:
      config: processor settings.
      metadata: the embodiment's metadata.json entry (:func:`gr00t_port.normalization.load_embodiment_metadata`).
      tokenizer: the Eagle tokenizer (:func:`load_tokenizer`).
    """

    def __init__(self, config: GR00TProcessorConfig, metadata: EmbodimentMetadata, tokenizer):
        self.config = config
        self.metadata = metadata
        self.tokenizer = tokenizer
        layout = config.layout
        self.codec = StateActionCodec(
            metadata, layout.state_keys, layout.state_modes, layout.action_keys, layout.action_modes,
            max_state_dim=config.max_state_dim, max_action_dim=config.max_action_dim,
            action_horizon=config.action_horizon,
        )
        self.embodiment_id = embodiment_projector_index(config.embodiment_tag, dict(config.embodiment_overrides))
        missing = [key for key in layout.video_keys if key not in metadata.video]
        if config.strict_video_resolution and missing:
            raise ValueError(f"{metadata.source}[{metadata.tag!r}].modalities.video: missing {missing} "
                             f"(has: {', '.join(metadata.video) or 'nothing'})")
        self.pad_token_id = int(tokenizer.pad_token_id)
        self._prompt_ids: dict[tuple[int, str], np.ndarray] = {}

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str | os.PathLike, config: GR00TProcessorConfig = GR00TProcessorConfig(),
                        tokenizer_path: str | os.PathLike | None = None) -> GR00TProcessor:
        """Reads ``<checkpoint_dir>/experiment_cfg/metadata.json`` and finds the tokenizer (see
        :func:`find_tokenizer_dir`)."""
        metadata = load_embodiment_metadata(checkpoint_dir, config.embodiment_tag)
        return cls(config, metadata, load_tokenizer(tokenizer_path, checkpoint_dir=checkpoint_dir))

    @property
    def valid_action_dim(self) -> int:
        """Sum of the action keys' dims (7 for the Franka layouts)."""
        return self.codec.action_dim

    # -- text ----------------------------------------------------------------------------------------------------

    def prompt_ids(self, instruction: Any, num_images: int) -> np.ndarray:
        """Token ids (L,) of the full prompt for ``num_images`` images; cached per (num_images, text)."""
        text = format_instruction(instruction, self.config.language_format)
        key = (num_images, text)
        if key not in self._prompt_ids:
            if len(self._prompt_ids) >= _PROMPT_CACHE_SIZE:
                self._prompt_ids.clear()
            self._prompt_ids[key] = prompt_token_ids(self.tokenizer, text, num_images, self.config.tokens_per_image)
        return self._prompt_ids[key]

    # -- observations --------------------------------------------------------------------------------------------

    def __call__(self, images: Mapping[str, Any], state: Any, instructions: str | Sequence[str] | None = None,
                 actions: Any = None, *, train: bool = False,
                 rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """One batch of observations -> model inputs (see the module docstring for the output contract).

        Args:
          images: video key -> uint8 frames (B, H, W, 3) or (B, T, H, W, 3), channels last, for every key of
            ``config.layout.video_keys``.
          state: (B, D) / (B, 1, D) concatenated raw state in layout order, or key -> (B, d).
          instructions: B strings, one string for the whole batch, or None for ``default_instruction``.
          actions: optional raw action chunk (B, 16, D) or key -> (B, 16, d) (training targets).
          train: random crop and colour jitter (needs ``rng``) instead of the deterministic eval transform.
        """
        return collate(self.encode_samples(images, state, instructions, actions, train=train, rng=rng),
                       self.pad_token_id, self.config.pad_to_length)

    def encode_samples(self, images: Mapping[str, Any], state: Any, instructions: str | Sequence[str] | None = None,
                       actions: Any = None, *, train: bool = False,
                       rng: np.random.Generator | None = None) -> list[dict[str, np.ndarray]]:
        """Like ``__call__`` but returns the unpadded per-sample dicts that :func:`collate` batches."""
        frames = self._stack_frames(images)  # (B, T, V, H, W, 3)
        batch, steps, views = frames.shape[:3]
        texts = self._instructions(instructions, batch)
        state_arr = self._state(state)
        padded_state, state_mask = self.codec.encode_state(state_arr)
        if padded_state.shape[0] != batch:
            raise ValueError(f"state has batch size {padded_state.shape[0]} but the images have {batch}")
        if actions is not None:
            action_arr = ({k: _to_numpy(v) for k, v in actions.items()} if isinstance(actions, Mapping)
                          else _to_numpy(actions))
            padded_action, action_mask = self.codec.encode_action(action_arr)
            if padded_action.shape[0] != batch:
                raise ValueError(f"actions have batch size {padded_action.shape[0]} but the images have {batch}")
        pixels = self._pixels(frames, train, rng)  # (B, T*V, 3, S, S) or (B, T*V, S, S, 3)
        samples = []
        for i in range(batch):
            sample = {
                "input_ids": self.prompt_ids(texts[i], steps * views),
                "pixel_values": pixels[i],
                "state": padded_state[i],
                "state_mask": state_mask[i],
                "embodiment_id": np.int64(self.embodiment_id),
            }
            if actions is not None:
                sample["action"], sample["action_mask"] = padded_action[i], action_mask[i]
            samples.append(sample)
        return samples

    def _stack_frames(self, images: Mapping[str, Any]) -> np.ndarray:
        keys = self.config.layout.video_keys
        if not isinstance(images, Mapping):
            raise ValueError(f"images must be a mapping video key -> frames with keys {list(keys)}")
        missing = [key for key in keys if key not in images]
        if missing:
            raise ValueError(f"images is missing video keys {missing}; expected {list(keys)}, got {list(images)}")
        views = []
        for key in keys:
            frames = _to_numpy(images[key])
            if frames.dtype != np.uint8:
                raise ValueError(f"images[{key!r}] must be uint8 (0..255), got {frames.dtype}")
            if frames.ndim == 4:
                frames = frames[:, None]
            if frames.ndim != 5:
                raise ValueError(f"images[{key!r}] must be (B, H, W, 3) or (B, T, H, W, 3), got shape {frames.shape}")
            if frames.shape[-1] != 3:
                raise ValueError(f"images[{key!r}] must be channels-last RGB (..., H, W, 3), got shape {frames.shape}")
            views.append(frames)
        shapes = {key: v.shape for key, v in zip(keys, views)}
        if len({s[:2] for s in shapes.values()}) != 1:
            raise ValueError(f"video keys disagree on (batch, time): {shapes}")
        if len({s[2:4] for s in shapes.values()}) != 1:
            raise ValueError(f"all video keys must have the same height and width (as GR00T's VideoCrop requires), "
                             f"got {shapes}")
        if self.config.strict_video_resolution:
            height, width = views[0].shape[2:4]
            for key in keys:
                expected = self.metadata.video[key].resolution
                if expected != (width, height):
                    raise ValueError(
                        f"images[{key!r}] are {width}x{height} (WxH) but metadata.json says {expected[0]}x"
                        f"{expected[1]}; GR00T crops using the metadata resolution (set strict_video_resolution="
                        "False to crop from the frames' own size)"
                    )
        return np.stack(views, axis=2)

    def _pixels(self, frames: np.ndarray, train: bool, rng: np.random.Generator | None) -> np.ndarray:
        batch, steps, views, height, width, _ = frames.shape
        size, scale = self.config.image_size, self.config.crop_scale
        if train:
            # One crop/jitter draw per sample, shared by its views and times.
            per_sample = [transform_frames(frames[i].reshape(-1, height, width, 3), image_size=size,
                                           crop_scale=scale, train=True, rng=rng) for i in range(batch)]
            resized = np.stack(per_sample)
        else:
            # Eval transforms are per image, so the whole batch goes through one call.
            resized = transform_frames(frames.reshape(-1, height, width, 3), image_size=size, crop_scale=scale)
        pixels = pixel_values(resized.reshape(-1, size, size, 3), self.config.pixel_layout)
        return pixels.reshape(batch, steps * views, *pixels.shape[1:])

    def _instructions(self, instructions: str | Sequence[str] | None, batch: int) -> list[Any]:
        if instructions is None:
            return [self.config.default_instruction] * batch
        if isinstance(instructions, str):
            return [instructions] * batch
        texts = list(_to_numpy(instructions).reshape(-1)) if isinstance(instructions, np.ndarray) else list(instructions)
        if len(texts) != batch:
            raise ValueError(f"got {len(texts)} instructions for a batch of {batch}")
        for text in texts:
            if not isinstance(text, str):
                raise ValueError(f"instructions must be strings, got {type(text).__name__}")
        return texts

    def _state(self, state: Any) -> np.ndarray | dict[str, np.ndarray]:
        if isinstance(state, Mapping):
            state = {key: _to_numpy(value) for key, value in state.items()}
        else:
            state = _to_numpy(state)
        if not self.config.state_bf16_roundtrip:
            return state
        import ml_dtypes  # noqa: PLC0415 - ships with jax

        def roundtrip(x: np.ndarray) -> np.ndarray:
            return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)

        return {k: roundtrip(v) for k, v in state.items()} if isinstance(state, dict) else roundtrip(state)

    # -- actions -------------------------------------------------------------------------------------------------

    def decode_actions(self, action_pred: Any) -> dict[str, np.ndarray]:
        """Model actions (B, H, 32), normalized -> {action key: (B, H, d)} unnormalized float32."""
        return self.codec.decode_action(_to_numpy(action_pred))

    def env_actions(self, action_pred: Any) -> np.ndarray:
        """Model actions (B, H, 32) -> unnormalized (B, H, valid_action_dim), action keys concatenated."""
        return self.codec.concat_action(self.decode_actions(action_pred))
