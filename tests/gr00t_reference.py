"""Offline builders of the PyTorch GR00T N1.5 reference (lerobot 0.4.4's copy) for parity tests.

Nothing here touches the network: lerobot's package ``__init__`` files are bypassed (they import datasets, motors,
...), the Eagle config is built from an ``EagleBackboneConfig`` instead of being fetched from the hub, and the
attention backend is "eager" or "sdpa" instead of the hard-coded FlashAttention-2.

Public helpers:
  lerobot_groot()                            -> namespace of the reference modules (groot_n1, Eagle classes, ...)
  eagle_hf_config(cfg, attn)                 -> Eagle25VLConfig matching an EagleBackboneConfig
  randomize_(module, seed)                   -> every parameter random (norm weights near 1), in place
  build_reference_backbone(cfg, seed, attn)  -> lerobot EagleBackbone (eval mode, fp32)
  run_reference_backbone(backbone, ...)      -> backbone_features as numpy
  tiny_action_head_cfg(cfg)                  -> FlowmatchingActionHeadConfig kwargs sized for cfg.output_dim
  build_reference_gr00t(cfg, head_cfg, ...)  -> lerobot GR00TN15 (the full policy model, random weights)
  save_reference_checkpoint(model, dir, ...) -> released-layout safetensors checkpoint (2 shards + index)
  load_checkpoint_state(dir)                 -> {torch key: numpy array} read back from such a checkpoint
  torch_to_numpy(t)                          -> numpy, bf16 kept as ml_dtypes.bfloat16
"""

from __future__ import annotations

import contextlib
import functools
import importlib.machinery
import importlib.util
import io
import json
import os
import sys
import types
from pathlib import Path
from typing import Any, Iterator, Mapping
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from gr00t_port.backbone_config import EagleBackboneConfig  # noqa: E402

BACKBONE_PREFIX = "backbone."


def lerobot_groot() -> types.SimpleNamespace:
    """lerobot's GR00T N1.5 modules, imported without running ``lerobot/__init__.py`` (shared with the bench)."""
    from gr00t_port.reference_torch import lerobot_groot as load
    return load()


def eagle_hf_config(cfg: EagleBackboneConfig, attn_implementation: str = "eager"):
    """The Eagle 2.5 VL config GR00T would load, at ``cfg``'s sizes, with an attention backend that runs on CPU."""
    from gr00t_port.reference_torch import eagle_config
    return eagle_config(cfg, attn_implementation)


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every parameter a random value, in place, so that no weight is trivially 0 or 1.

    Norm weights ~ 1 + 0.1 N(0, 1); other vectors (biases) ~ 0.1 N(0, 1); matrices ~ N(0, 1 / fan_in) with fan_in =
    the input width (Linear [out, in] and CategorySpecific [E, in, out]: dim 1; conv: prod of dims 1..).
    Tied parameters are drawn once.
    """
    gen = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    with torch.no_grad():
        for submodule in module.modules():
            is_norm = "norm" in type(submodule).__name__.lower()
            for name, p in submodule.named_parameters(recurse=False):
                if id(p) in seen:
                    continue
                seen.add(id(p))
                noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
                if p.ndim == 1:
                    value = 1.0 + 0.1 * noise if is_norm and name == "weight" else 0.1 * noise
                else:
                    fan_in = int(np.prod(p.shape[1:])) if p.ndim == 4 else p.shape[1]
                    value = noise / np.sqrt(max(fan_in, 1))
                p.copy_(value.to(p.dtype))
    return module


@contextlib.contextmanager
def _offline_eagle(cfg: EagleBackboneConfig, attn_implementation: str) -> Iterator[None]:
    """Make lerobot's ``EagleBackbone.__init__`` build our Eagle config instead of reading the hub cache."""
    ref = lerobot_groot()
    hf_config = eagle_hf_config(cfg, attn_implementation)

    def from_config(config, **_):
        # Pass both towers in: Eagle's own constructor would force FlashAttention-2 onto SigLIP.
        from transformers import Qwen3ForCausalLM, SiglipVisionModel

        return ref.Eagle25VLForConditionalGeneration(
            config, vision_model=SiglipVisionModel(config.vision_config),
            language_model=Qwen3ForCausalLM(config.text_config))

    with mock.patch.object(ref.groot_n1, "ensure_eagle_cache_ready", lambda *a, **k: None), \
            mock.patch.object(ref.groot_n1, "AutoConfig", types.SimpleNamespace(
                from_pretrained=lambda *a, **k: hf_config)), \
            mock.patch.object(ref.groot_n1, "AutoModel", types.SimpleNamespace(from_config=from_config)), \
            contextlib.redirect_stdout(io.StringIO()):  # the reference prints its tune flags
        yield


def reference_backbone_cfg(cfg: EagleBackboneConfig) -> dict:
    """``config.json["backbone_cfg"]`` as in released N1.5 checkpoints, with ``cfg``'s select_layer."""
    return {"eagle_path": "NVEagle/eagle_er-qwen3_1_7B-Siglip2_400M_stage1_5_128gpu_er_v7_1mlp_nops",
            "load_bf16": False, "project_to_dim": None, "reproject_vision": False,
            "select_layer": cfg.select_layer, "tune_llm": False, "tune_visual": True, "use_flash_attention": True}


def build_reference_backbone(cfg: EagleBackboneConfig, seed: int = 0, attn_implementation: str = "eager"):
    """lerobot's ``EagleBackbone`` (Qwen3 truncated to select_layer layers), random fp32 weights, eval mode."""
    ref = lerobot_groot()
    kwargs = {k: v for k, v in reference_backbone_cfg(cfg).items() if k != "eagle_path"}
    with _offline_eagle(cfg, attn_implementation):
        backbone = ref.groot_n1.EagleBackbone(**kwargs)
    return randomize_(backbone, seed).eval()


def run_reference_backbone(backbone, input_ids: np.ndarray, attention_mask: np.ndarray,
                           pixel_values_nhwc: np.ndarray) -> np.ndarray:
    """The reference ``EagleBackbone.forward``: (B, L) ids/mask, (N_img, H, W, C) pixels -> features (B, L, D)."""
    dtype = next(backbone.parameters()).dtype
    pixels = torch.from_numpy(np.ascontiguousarray(np.asarray(pixel_values_nhwc).transpose(0, 3, 1, 2)))
    batch = {
        "eagle_input_ids": torch.from_numpy(np.asarray(input_ids, np.int64)),
        "eagle_attention_mask": torch.from_numpy(np.asarray(attention_mask, np.int64)),
        "eagle_pixel_values": pixels.to(dtype),
        "eagle_image_sizes": torch.zeros(pixels.shape[0], 2, dtype=torch.int64),  # deleted by forward_eagle
    }
    with torch.no_grad():
        out = backbone(backbone.prepare_input(batch))
    return out["backbone_features"].float().numpy()


def tiny_action_head_cfg(cfg: EagleBackboneConfig) -> dict:
    """A small ``action_head_cfg`` (same keys as the released config.json) that fits ``cfg``'s feature width."""
    width = cfg.output_dim
    if width % 4:
        raise ValueError(f"tiny_action_head_cfg: backbone width {width} is not divisible by 4 heads")
    return {
        "action_dim": 6, "action_horizon": 4, "add_pos_embed": True, "backbone_embedding_dim": width,
        "hidden_size": 24, "input_embedding_dim": 32, "max_action_dim": 6, "max_state_dim": 8,
        "model_dtype": "float32", "noise_beta_alpha": 1.5, "noise_beta_beta": 1.0, "noise_s": 0.999,
        "num_inference_timesteps": 4, "num_target_vision_tokens": 3, "num_timestep_buckets": 1000,
        "tune_diffusion_model": True, "tune_projector": True, "use_vlln": True, "max_seq_len": 16,
        "max_num_embodiments": 32,
        "diffusion_model_cfg": {"attention_head_dim": 8, "cross_attention_dim": width, "dropout": 0.2,
                                "final_dropout": True, "interleave_self_attention": True, "norm_type": "ada_norm",
                                "num_attention_heads": 4, "num_layers": 4, "output_dim": 24,
                                "positional_embeddings": None},
        "vl_self_attention_cfg": {"attention_head_dim": width // 4, "dropout": 0.2, "final_dropout": True,
                                  "num_attention_heads": 4, "num_layers": 2, "positional_embeddings": None},
    }


def build_reference_gr00t(cfg: EagleBackboneConfig, action_head_cfg: Mapping[str, Any] | None = None,
                          seed: int = 0, attn_implementation: str = "eager"):
    """lerobot's ``GR00TN15`` (backbone + flow-matching head) with random fp32 weights, in eval mode."""
    ref = lerobot_groot()
    head = dict(action_head_cfg) if action_head_cfg is not None else tiny_action_head_cfg(cfg)
    config = ref.groot_n1.GR00TN15Config(
        backbone_cfg={k: v for k, v in reference_backbone_cfg(cfg).items() if k != "eagle_path"},
        action_head_cfg=head, action_horizon=head["action_horizon"], action_dim=head["action_dim"],
        hidden_size=cfg.output_dim, model_dtype="float32", architectures=["GR00T_N1_5"])
    with _offline_eagle(cfg, attn_implementation):
        model = ref.groot_n1.GR00TN15(config, local_model_path="")
    return randomize_(model, seed).eval()


def torch_to_numpy(t: torch.Tensor) -> np.ndarray:
    """CPU numpy copy; bf16 stays bf16 (as ml_dtypes.bfloat16), since numpy has no native bf16."""
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return t.numpy().copy()


def save_reference_checkpoint(model, out_dir: str | os.PathLike, cfg: EagleBackboneConfig,
                              backbone_dtype: torch.dtype = torch.bfloat16, num_shards: int = 2) -> Path:
    """Write ``model`` as a released GR00T N1.5 checkpoint: sharded safetensors + index + config.json.

    * keys and order exactly ``model.state_dict()``, including SigLIP's unused ``head.*`` and a *cloned*
      ``backbone.eagle_model.language_model.lm_head.weight`` (safetensors refuses tensors sharing memory);
    * ``backbone.*`` in ``backbone_dtype`` (bf16 in released checkpoints), the action head in fp32;
    * shards split in state_dict order at equal byte fractions (real checkpoints cut at 5 GB, so shard 1 holds the
      backbone and the start of the head); ``model.safetensors.index.json`` maps each key to its shard;
    * ``config.json`` as in released checkpoints, plus ``eagle_config.json`` (an extra of these test checkpoints:
      real ones rely on the Eagle config shipped with the model code, ``EagleBackboneConfig.full()``).
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, value in model.state_dict().items():
        dtype = backbone_dtype if key.startswith(BACKBONE_PREFIX) else torch.float32
        state[key] = value.detach().to(dtype).clone().contiguous()
    sizes = [t.numel() * t.element_size() for t in state.values()]
    total = sum(sizes)
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(num_shards)]
    running = 0
    for (key, value), size in zip(state.items(), sizes):
        shards[min(running * num_shards // total, num_shards - 1)][key] = value
        running += size
    shards = [s for s in shards if s]
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    head = dict(model.config.action_head_cfg)
    config = {
        "action_dim": head["action_dim"], "action_horizon": head["action_horizon"], "architectures": ["GR00T_N1_5"],
        "attn_implementation": None, "hidden_size": cfg.output_dim, "model_dtype": "float32",
        "model_type": "gr00t_n1_5", "torch_dtype": str(backbone_dtype).removeprefix("torch."),
        "transformers_version": "4.51.3", "backbone_cfg": reference_backbone_cfg(cfg), "action_head_cfg": head,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "eagle_config.json").write_text(json.dumps(eagle_hf_config(cfg).to_dict(), indent=2, default=str))
    return out


def load_checkpoint_state(ckpt_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a sharded checkpoint (via its index), in index order, as numpy (bf16 kept)."""
    from safetensors import safe_open

    ckpt = Path(ckpt_dir)
    weight_map = json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"]
    state = {}
    for shard in dict.fromkeys(weight_map.values()):
        with safe_open(str(ckpt / shard), framework="pt") as f:
            for key in f.keys():
                state[key] = torch_to_numpy(f.get_tensor(key))
    return {k: state[k] for k in weight_map}


def backbone_state_numpy(backbone, prefix: str = "backbone.") -> dict[str, np.ndarray]:
    """A reference backbone's state_dict as numpy, keyed as in a GR00T checkpoint (``backbone.eagle_model....``)."""
    return {f"{prefix}{k}": torch_to_numpy(v) for k, v in backbone.state_dict().items()}

