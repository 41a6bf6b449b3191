"""Offline builder of the PyTorch GR00T N1.5 reference (lerobot 0.4.4's ``GR00TN15``) for benchmarks.

The reference is not part of the port; it is built here only to time it next to the Flax model in the same run
(``python -m jaxrl_isaac.bench gr00t``). Nothing touches the network:

* lerobot's package ``__init__`` files (datasets, motors, cameras ...) are bypassed by registering the parent
  packages as plain namespace modules;
* ``EagleBackbone.__init__`` normally copies assets to the HF cache, downloads the tokenizer files and reads the
  Eagle config from there; it is pointed at an Eagle config built from a ``GR00TConfig`` instead;
* SigLIP and Qwen3 are constructed by us and passed in, because Eagle's constructor would force
  FlashAttention-2 onto SigLIP; the attention backend is "sdpa" (or "eager").

Needs: torch, transformers 4.57.x, diffusers < 0.36, huggingface_hub, peft, draccus, dm-tree and lerobot 0.4.4
(installed with ``--no-deps``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.machinery
import importlib.util
import io
import os
import sys
import types
from pathlib import Path
from typing import Any, Iterator, Mapping
from unittest import mock

import numpy as np

from gr00t_port.backbone_config import EagleBackboneConfig
from gr00t_port.config import ActionHeadConfig, GR00TConfig

# lerobot's module-level code consults these; never let it reach the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_NAMESPACE_PACKAGES = (("lerobot", ""), ("lerobot.utils", "utils"), ("lerobot.policies", "policies"),
                       ("lerobot.policies.groot", "policies/groot"))


@functools.cache
def lerobot_groot() -> types.SimpleNamespace:
    """The reference modules: ``groot_n1``, ``flow_matching_action_head`` and the Eagle 2.5 VL classes."""
    spec = importlib.util.find_spec("lerobot")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the PyTorch reference needs lerobot 0.4.4 (pip install --no-deps lerobot==0.4.4)")
    root = Path(list(spec.submodule_search_locations)[0])
    for name, sub in _NAMESPACE_PACKAGES:
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(root / sub)]
            # A real spec, so importlib.util.find_spec("lerobot") keeps working elsewhere in the process.
            package.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
            package.__spec__.submodule_search_locations = [str(root / sub)]
            sys.modules[name] = package
    from lerobot.policies.groot import groot_n1
    from lerobot.policies.groot.action_head import flow_matching_action_head
    from lerobot.policies.groot.eagle2_hg_model import configuration_eagle2_5_vl, modeling_eagle2_5_vl

    return types.SimpleNamespace(
        groot_n1=groot_n1, flow_matching_action_head=flow_matching_action_head,
        Eagle25VLConfig=configuration_eagle2_5_vl.Eagle25VLConfig,
        Eagle25VLForConditionalGeneration=modeling_eagle2_5_vl.Eagle25VLForConditionalGeneration)


def eagle_config(cfg: EagleBackboneConfig, attn_implementation: str = "sdpa"):
    """``Eagle25VLConfig`` with ``cfg``'s SigLIP / Qwen3 sizes and the given attention backend on both towers."""
    v, t = cfg.vision, cfg.text
    vision = dict(model_type="siglip_vision_model", hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
                  num_hidden_layers=v.num_hidden_layers, num_attention_heads=v.num_attention_heads,
                  num_channels=v.num_channels, image_size=v.image_size, patch_size=v.patch_size,
                  layer_norm_eps=v.layer_norm_eps, hidden_act="gelu_pytorch_tanh")
    if not v.has_pooling_head:
        vision["vision_use_head"] = False
    text = dict(architectures=["Qwen3ForCausalLM"], vocab_size=t.vocab_size, hidden_size=t.hidden_size,
                intermediate_size=t.intermediate_size, num_hidden_layers=t.num_hidden_layers,
                num_attention_heads=t.num_attention_heads, num_key_value_heads=t.num_key_value_heads,
                head_dim=t.head_dim, rms_norm_eps=t.rms_norm_eps, rope_theta=t.rope_theta,
                tie_word_embeddings=t.tie_word_embeddings, hidden_act="silu", attention_bias=False,
                max_position_embeddings=40960)
    hf = lerobot_groot().Eagle25VLConfig(
        vision_config=vision, text_config=text, select_layer=-1, force_image_size=v.image_size,
        use_pixel_shuffle=False, mlp_connector_layers=1, image_token_index=cfg.image_token_index,
        template="qwen3-chat", dynamic_image_size=True, use_thumbnail=True, max_dynamic_tiles=12,
        _attn_implementation=attn_implementation)
    hf.vision_config._attn_implementation = attn_implementation
    hf.text_config._attn_implementation = attn_implementation
    return hf


def action_head_config(cfg: ActionHeadConfig) -> dict[str, Any]:
    """The ``action_head_cfg`` dict (checkpoint config.json layout) describing ``cfg``."""
    dit, vlsa = cfg.dit, cfg.vl_self_attention
    return {
        "action_dim": cfg.action_dim, "action_horizon": cfg.action_horizon, "add_pos_embed": cfg.add_pos_embed,
        "backbone_embedding_dim": cfg.backbone_embedding_dim, "hidden_size": cfg.hidden_size,
        "input_embedding_dim": cfg.input_embedding_dim, "max_action_dim": cfg.action_dim,
        "max_state_dim": cfg.max_state_dim, "max_num_embodiments": cfg.max_num_embodiments,
        "max_seq_len": cfg.max_seq_len, "model_dtype": "float32", "noise_beta_alpha": cfg.noise_beta_alpha,
        "noise_beta_beta": cfg.noise_beta_beta, "noise_s": cfg.noise_s,
        "num_inference_timesteps": cfg.num_inference_timesteps,
        "num_target_vision_tokens": cfg.num_target_vision_tokens, "num_timestep_buckets": cfg.num_timestep_buckets,
        "tune_diffusion_model": True, "tune_projector": True, "use_vlln": cfg.use_vlln,
        "diffusion_model_cfg": {"attention_head_dim": dit.head_dim, "cross_attention_dim": dit.cross_attention_dim,
                                "dropout": dit.dropout, "final_dropout": True, "interleave_self_attention": True,
                                "norm_type": "ada_norm", "num_attention_heads": dit.num_heads,
                                "num_layers": dit.num_layers, "output_dim": dit.output_dim,
                                "positional_embeddings": None},
        "vl_self_attention_cfg": {"attention_head_dim": vlsa.head_dim, "dropout": vlsa.dropout,
                                  "final_dropout": True, "num_attention_heads": vlsa.num_heads,
                                  "num_layers": vlsa.num_layers, "positional_embeddings": None},
    }


@contextlib.contextmanager
def _offline_eagle(cfg: EagleBackboneConfig, attn_implementation: str) -> Iterator[None]:
    ref = lerobot_groot()
    hf = eagle_config(cfg, attn_implementation)

    def from_config(config, **_):
        from transformers import Qwen3ForCausalLM, SiglipVisionModel

        return ref.Eagle25VLForConditionalGeneration(config, vision_model=SiglipVisionModel(config.vision_config),
                                                     language_model=Qwen3ForCausalLM(config.text_config))

    with mock.patch.object(ref.groot_n1, "ensure_eagle_cache_ready", lambda *a, **k: None), \
            mock.patch.object(ref.groot_n1, "AutoConfig", types.SimpleNamespace(from_pretrained=lambda *a, **k: hf)), \
            mock.patch.object(ref.groot_n1, "AutoModel", types.SimpleNamespace(from_config=from_config)), \
            contextlib.redirect_stdout(io.StringIO()):  # the reference prints its tune flags
        yield


def build_reference_model(cfg: GR00TConfig, *, attn_implementation: str = "sdpa", device: str = "cpu",
                          dtype: Any = None, seed: int = 0):
    """lerobot's ``GR00TN15`` for ``cfg`` with its constructors' random init (seeded), in eval mode, built on
    ``device`` and cast to ``dtype`` (torch dtype; default float32). Floating inputs are cast to ``dtype`` by the
    reference's own ``prepare_input``."""
    import torch

    ref = lerobot_groot()
    dtype = torch.float32 if dtype is None else dtype
    b = cfg.backbone
    head = action_head_config(cfg.action_head)
    config = ref.groot_n1.GR00TN15Config(
        backbone_cfg={"load_bf16": False, "project_to_dim": None, "reproject_vision": False,
                      "select_layer": b.select_layer, "tune_llm": False, "tune_visual": True,
                      "use_flash_attention": False},
        action_head_cfg=head, action_horizon=head["action_horizon"], action_dim=head["action_dim"],
        hidden_size=b.output_dim, model_dtype="float32", architectures=["GR00T_N1_5"],
        compute_dtype="bfloat16" if dtype == torch.bfloat16 else "float32")
    torch.manual_seed(seed)
    # Constructed (and randomly initialised) directly on ``device``: on a GPU that takes seconds, against tens of
    # seconds for 2.4 B parameters on the CPU.
    with torch.device(device), _offline_eagle(b, attn_implementation):
        model = ref.groot_n1.GR00TN15(config, local_model_path="")
    return model.to(dtype=dtype).eval()


def torch_inputs(inputs: Mapping[str, Any], device: str = "cpu", float_dtype: Any = None) -> dict[str, Any]:
    """The Flax model's input dict (numpy / JAX, NHWC pixels) -> the reference's (torch, NCHW pixels, int64 ids),
    floats in ``float_dtype`` (default float32), on ``device``. Adds the ``eagle_image_sizes`` the reference
    deletes unread."""
    import torch

    float_dtype = torch.float32 if float_dtype is None else float_dtype
    pixels = np.ascontiguousarray(np.asarray(inputs["eagle_pixel_values"], np.float32).transpose(0, 3, 1, 2))
    out = {
        "eagle_input_ids": torch.from_numpy(np.asarray(inputs["eagle_input_ids"], np.int64)),
        "eagle_attention_mask": torch.from_numpy(np.asarray(inputs["eagle_attention_mask"], np.int64)),
        "eagle_pixel_values": torch.from_numpy(pixels).to(float_dtype),
        "eagle_image_sizes": torch.full((pixels.shape[0], 2), pixels.shape[-1], dtype=torch.int64),
        "state": torch.from_numpy(np.asarray(inputs["state"], np.float32)).to(float_dtype),
        "embodiment_id": torch.from_numpy(np.asarray(inputs["embodiment_id"], np.int64)),
    }
    return {k: v.to(device) for k, v in out.items()}


@contextlib.contextmanager
def injected_noise(noise: Any) -> Iterator[None]:
    """Inside the block, the action head's initial ``torch.randn`` returns ``noise`` (a torch tensor, cast to the
    requested dtype and device), so that the reference and the port start from the same x_0."""
    fm = lerobot_groot().flow_matching_action_head

    def fixed(*args, dtype=None, device=None, **kwargs):
        return noise.to(device=device, dtype=dtype).clone()

    with mock.patch.object(fm.torch, "randn", fixed):
        yield


def reference_get_action(model, batch: Mapping[str, Any], noise: Any = None) -> Any:
    """``GR00TN15.get_action(batch)["action_pred"]`` (B, horizon, action_dim), under ``torch.inference_mode``;
    with ``noise`` the initial x_0 is injected."""
    import torch

    with torch.inference_mode(), (injected_noise(noise) if noise is not None else contextlib.nullcontext()):
        return model.get_action(dict(batch))["action_pred"]

