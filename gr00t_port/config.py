"""Configs of GR00T N1.5: the flow-matching action head and the whole model (Eagle backbone + action head).

``GR00TConfig.n15()`` is the released ``nvidia/GR00T-N1.5-3B`` architecture; ``GR00TConfig.from_checkpoint_config``
reads a checkpoint's ``config.json`` (the dict ``GR00T_N1_5.save_pretrained`` writes); ``GR00TConfig.tiny()`` is the
same architecture at toy sizes for CPU tests. Anything the port does not implement is refused with a one-line error
instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from gr00t_port.backbone_config import (NO_REMAT, EagleBackboneConfig, Qwen3Config, SiglipConfig,
                                         check_supported, config_value)

_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """The action head's DiT: ``num_layers`` blocks alternating cross-attention (even index, K/V from the VL tokens)
    and self-attention (odd index), AdaLayerNorm conditioned on the denoising-step embedding."""

    num_heads: int = 32
    head_dim: int = 48
    num_layers: int = 16
    output_dim: int = 1024
    cross_attention_dim: int = 2048
    dropout: float = 0.2
    norm_eps: float = 1e-5  # AdaLayerNorm and the pre-FF LayerNorm (no affine)
    output_norm_eps: float = 1e-6  # norm_out before proj_out_2
    ff_mult: int = 4  # diffusers FeedForward default
    timestep_channels: int = 256  # diffusers Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1)

    def __post_init__(self):
        if self.num_layers < 2 or self.num_layers % 2:
            # Blocks are scanned as (cross, self) pairs; an odd count would leave a lone cross block.
            raise ValueError(f"DiTConfig: num_layers={self.num_layers} must be even and >= 2 (interleaved "
                             f"cross/self-attention blocks are scanned in pairs)")

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def num_pairs(self) -> int:
        return self.num_layers // 2


@dataclasses.dataclass(frozen=True)
class VLSelfAttentionConfig:
    """``vl_self_attention``: pre-LN self-attention blocks over the backbone tokens (affine LayerNorms)."""

    num_heads: int = 32
    head_dim: int = 64
    num_layers: int = 4
    dropout: float = 0.2
    norm_eps: float = 1e-5
    ff_mult: int = 4

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.head_dim


@dataclasses.dataclass(frozen=True)
class ActionHeadConfig:
    """``FlowmatchingActionHead`` of GR00T N1.5 (defaults: the released ``action_head_cfg``).

    Numerics (not architecture):
      dtype: compute dtype ("float32" or "bfloat16"; ``Gr00tPolicy`` runs everything in bf16).
      param_dtype: dtype parameters are created in (checkpoints store the head in fp32).
      remat_policy: ``jax.checkpoint_policies`` name used by the scanned blocks, or "none".
    value_head_hidden_dims: RLinf's critic MLP widths ((1024, 512, 256) in RLinf); () = no value head.
    """

    action_dim: int = 32
    action_horizon: int = 16
    hidden_size: int = 1024  # state-encoder hidden width, DiT output width, action-decoder width
    input_embedding_dim: int = 1536  # token width inside the DiT
    backbone_embedding_dim: int = 2048
    max_state_dim: int = 64
    max_num_embodiments: int = 32
    num_target_vision_tokens: int = 32  # learned "future tokens" between the state token and the action tokens
    max_seq_len: int = 1024  # rows of the action position-embedding table
    add_pos_embed: bool = True
    use_vlln: bool = True  # vlln LayerNorm + vl_self_attention; False makes both the identity
    noise_beta_alpha: float = 1.5
    noise_beta_beta: float = 1.0
    noise_s: float = 0.999
    num_timestep_buckets: int = 1000
    num_inference_timesteps: int = 4
    dit: DiTConfig = dataclasses.field(default_factory=DiTConfig)
    vl_self_attention: VLSelfAttentionConfig = dataclasses.field(default_factory=VLSelfAttentionConfig)
    value_head_hidden_dims: tuple[int, ...] = ()
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat_policy: str = "nothing_saveable"

    def __post_init__(self):
        where = "ActionHeadConfig"
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ValueError(f"{where}: {name}={getattr(self, name)!r} is not one of {_DTYPES}")
        if self.remat_policy != NO_REMAT and not callable(getattr(jax.checkpoint_policies, self.remat_policy, None)):
            raise ValueError(f"{where}: remat_policy={self.remat_policy!r} is neither {NO_REMAT!r} nor a "
                             f"jax.checkpoint_policies name")
        if self.dit.inner_dim != self.input_embedding_dim:
            raise ValueError(f"{where}: dit.num_heads*dit.head_dim={self.dit.inner_dim} must equal "
                             f"input_embedding_dim={self.input_embedding_dim}")
        if self.dit.cross_attention_dim != self.backbone_embedding_dim:
            raise ValueError(f"{where}: dit.cross_attention_dim={self.dit.cross_attention_dim} must equal "
                             f"backbone_embedding_dim={self.backbone_embedding_dim}")
        if self.dit.output_dim != self.hidden_size:
            raise ValueError(f"{where}: dit.output_dim={self.dit.output_dim} must equal hidden_size="
                             f"{self.hidden_size} (the action decoder's input width)")
        if self.use_vlln and self.vl_self_attention.inner_dim != self.backbone_embedding_dim:
            raise ValueError(f"{where}: vl_self_attention.num_heads*head_dim={self.vl_self_attention.inner_dim} "
                             f"must equal backbone_embedding_dim={self.backbone_embedding_dim}")
        if self.add_pos_embed and self.action_horizon > self.max_seq_len:
            raise ValueError(f"{where}: action_horizon={self.action_horizon} exceeds max_seq_len={self.max_seq_len}")
        if self.num_inference_timesteps < 1:
            raise ValueError(f"{where}: num_inference_timesteps={self.num_inference_timesteps} must be >= 1")

    @property
    def jnp_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def jnp_param_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    @property
    def value_head_input_dim(self) -> int:
        """RLinf's critic input: mean VL token (backbone width) + the flattened state token (1 state step)."""
        return self.backbone_embedding_dim + self.input_embedding_dim

    def replace(self, **changes: Any) -> "ActionHeadConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def tiny(cls, backbone_embedding_dim: int = 48, **numerics: Any) -> "ActionHeadConfig":
        """Toy sizes with every structural feature kept: 32 embodiment slots, 2 (cross, self) DiT pairs, DiT width
        != backbone width != hidden width, head_dim != width/8."""
        return cls(
            action_dim=6, action_horizon=4, hidden_size=24, input_embedding_dim=40,
            backbone_embedding_dim=backbone_embedding_dim, max_state_dim=10, max_num_embodiments=32,
            num_target_vision_tokens=3, max_seq_len=12,
            dit=DiTConfig(num_heads=4, head_dim=10, num_layers=4, output_dim=24,
                          cross_attention_dim=backbone_embedding_dim),
            vl_self_attention=VLSelfAttentionConfig(num_heads=4, head_dim=backbone_embedding_dim // 4, num_layers=2),
            **numerics,
        )

    @classmethod
    def from_hf(cls, action_head_cfg: Mapping[str, Any], **numerics: Any) -> "ActionHeadConfig":
        """Build from a checkpoint's ``config.json["action_head_cfg"]`` (``FlowmatchingActionHeadConfig``)."""
        where = "action_head_cfg"
        unknown = sorted(set(action_head_cfg) - _HEAD_KEYS - _HEAD_IGNORED_KEYS)
        if unknown:
            raise ValueError(f"{where} has keys the port does not know: {unknown}")
        if action_head_cfg.get("expand_batch") is not None:
            raise ValueError(f"{where}.expand_batch={action_head_cfg['expand_batch']} is not supported (N1.5: None)")
        if action_head_cfg.get("load_pretrained_det_decode_layer_path") is not None:
            raise ValueError(f"{where}.load_pretrained_det_decode_layer_path is not supported (N1.5: None)")
        d = dict(action_head_cfg)
        dit_cfg = config_value(d, "diffusion_model_cfg", where)
        vlsa_cfg = config_value(d, "vl_self_attention_cfg", where) if d.get("use_vlln", True) else None
        kw: dict[str, Any] = {}
        # Sizes without a usable reference default are required; the rest default to FlowmatchingActionHeadConfig's
        # own defaults, which equal this class's.
        for key in ("action_dim", "action_horizon", "hidden_size", "input_embedding_dim", "backbone_embedding_dim",
                    "max_state_dim", "num_inference_timesteps"):
            kw[key] = int(config_value(d, key, where))
        for key in ("max_num_embodiments", "num_target_vision_tokens", "max_seq_len", "num_timestep_buckets"):
            if key in d:
                kw[key] = int(d[key])
        for key in ("noise_beta_alpha", "noise_beta_beta", "noise_s"):
            if key in d:
                kw[key] = float(d[key])
        for key in ("add_pos_embed", "use_vlln"):
            if key in d:
                kw[key] = bool(d[key])
        kw["dit"] = _parse_dit(dit_cfg, f"{where}.diffusion_model_cfg")
        if vlsa_cfg is not None:
            kw["vl_self_attention"] = _parse_vlsa(vlsa_cfg, f"{where}.vl_self_attention_cfg")
        return cls(**kw, **numerics)


@dataclasses.dataclass(frozen=True)
class GR00TConfig:
    """The whole GR00T N1.5 policy network: ``backbone`` (Eagle 2.5 VL) feeding ``action_head``."""

    backbone: EagleBackboneConfig = dataclasses.field(default_factory=EagleBackboneConfig.full)
    action_head: ActionHeadConfig = dataclasses.field(default_factory=ActionHeadConfig)

    def __post_init__(self):
        if self.backbone.output_dim != self.action_head.backbone_embedding_dim:
            raise ValueError(f"GR00TConfig: backbone output width {self.backbone.output_dim} != "
                             f"action_head.backbone_embedding_dim={self.action_head.backbone_embedding_dim}")

    def replace(self, **changes: Any) -> "GR00TConfig":
        return dataclasses.replace(self, **changes)

    def with_numerics(self, dtype: str | None = None, param_dtype: str | None = None) -> "GR00TConfig":
        """Same architecture with another compute and/or parameter dtype in both halves."""
        changes = {k: v for k, v in (("dtype", dtype), ("param_dtype", param_dtype)) if v is not None}
        return GR00TConfig(backbone=self.backbone.replace(**changes), action_head=self.action_head.replace(**changes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable nested dict (stored in converted checkpoints' assets); inverse of ``from_dict``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GR00TConfig":
        try:
            b, h = dict(d["backbone"]), dict(d["action_head"])
            backbone = EagleBackboneConfig(**{**b, "vision": SiglipConfig(**b["vision"]),
                                              "text": Qwen3Config(**b["text"])})
            head = ActionHeadConfig(**{**h, "dit": DiTConfig(**h["dit"]),
                                       "vl_self_attention": VLSelfAttentionConfig(**h["vl_self_attention"]),
                                       "value_head_hidden_dims": tuple(h.get("value_head_hidden_dims", ()))})
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a GR00TConfig dict: {e}") from None
        return cls(backbone=backbone, action_head=head)

    @classmethod
    def n15(cls, **numerics: Any) -> "GR00TConfig":
        """The released ``nvidia/GR00T-N1.5-3B`` architecture."""
        return cls(backbone=EagleBackboneConfig.full(**numerics), action_head=ActionHeadConfig(**numerics))

    @classmethod
    def tiny(cls, **numerics: Any) -> "GR00TConfig":
        backbone = EagleBackboneConfig.tiny(**numerics)
        return cls(backbone=backbone, action_head=ActionHeadConfig.tiny(backbone.output_dim, **numerics))

    @classmethod
    def from_checkpoint_config(cls, config: Mapping[str, Any], eagle_config: Mapping[str, Any] | None = None,
                               **numerics: Any) -> "GR00TConfig":
        """From a GR00T N1.5 checkpoint's ``config.json`` dict.

        The checkpoint holds only ``backbone_cfg`` and ``action_head_cfg``; the Eagle (SigLIP + Qwen3) sizes ship
        with the model code, so ``eagle_config=None`` means the released Eagle config.
        """
        model_type = config.get("model_type")
        if model_type != "gr00t_n1_5":
            raise ValueError(f"config.json model_type={model_type!r} is not 'gr00t_n1_5'")
        if "action_head_cfg" not in config:
            raise ValueError("config.json has no 'action_head_cfg' entry")
        backbone = EagleBackboneConfig.from_hf(eagle_config, config.get("backbone_cfg"), **numerics)
        head = ActionHeadConfig.from_hf(config["action_head_cfg"], **numerics)
        for key in ("action_dim", "action_horizon"):
            if key in config and int(config[key]) != getattr(head, key):
                raise ValueError(f"config.json {key}={config[key]} disagrees with action_head_cfg.{key}="
                                 f"{getattr(head, key)}")
        return cls(backbone=backbone, action_head=head)


# ------------------------------------------------------------------------------------------------ parsing helpers

_HEAD_KEYS = {
    "action_dim", "action_horizon", "add_pos_embed", "backbone_embedding_dim", "hidden_size", "input_embedding_dim",
    "max_state_dim", "max_num_embodiments", "max_seq_len", "noise_beta_alpha", "noise_beta_beta", "noise_s",
    "num_inference_timesteps", "num_target_vision_tokens", "num_timestep_buckets", "use_vlln",
    "diffusion_model_cfg", "vl_self_attention_cfg", "expand_batch", "load_pretrained_det_decode_layer_path",
}
# Training switches and fields the N1.5 head stores but never reads for its forward pass.
_HEAD_IGNORED_KEYS = {"max_action_dim", "model_dtype", "tune_projector", "tune_diffusion_model", "detection_coeff",
                      "freeze_decode_layer"}

def _common_block_checks(cfg: Mapping[str, Any], where: str) -> None:
    # DiT / SelfAttentionTransformer constructor arguments that N1.5 leaves at these values; anything else
    # changes the block math.
    check_supported(cfg, "positional_embeddings", (None,), where)
    check_supported(cfg, "activation_fn", ("gelu-approximate",), where)
    check_supported(cfg, "attention_bias", (True,), where)
    check_supported(cfg, "upcast_attention", (False,), where)
    check_supported(cfg, "final_dropout", (True,), where)


def _parse_dit(cfg: Mapping[str, Any], where: str) -> DiTConfig:
    _common_block_checks(cfg, where)
    check_supported(cfg, "norm_type", ("ada_norm",), where)
    check_supported(cfg, "norm_elementwise_affine", (False,), where)
    # AdaLayerNorm is built with its own eps default (1e-5) whatever norm_eps says; one value keeps both exact.
    check_supported(cfg, "norm_eps", (1e-5,), where)
    if cfg.get("interleave_self_attention") is not True:
        raise ValueError(f"{where}.interleave_self_attention={cfg.get('interleave_self_attention')!r} is not "
                         f"supported (N1.5: true)")
    return DiTConfig(
        num_heads=int(config_value(cfg, "num_attention_heads", where)),
        head_dim=int(config_value(cfg, "attention_head_dim", where)),
        num_layers=int(config_value(cfg, "num_layers", where)),
        output_dim=int(config_value(cfg, "output_dim", where)),
        cross_attention_dim=int(config_value(cfg, "cross_attention_dim", where)),
        dropout=float(cfg.get("dropout", 0.1)),  # DiT's constructor default
    )


def _parse_vlsa(cfg: Mapping[str, Any], where: str) -> VLSelfAttentionConfig:
    _common_block_checks(cfg, where)
    return VLSelfAttentionConfig(
        num_heads=int(config_value(cfg, "num_attention_heads", where)),
        head_dim=int(config_value(cfg, "attention_head_dim", where)),
        num_layers=int(config_value(cfg, "num_layers", where)),
        dropout=float(cfg.get("dropout", 0.1)),  # SelfAttentionTransformer's constructor default
    )
