"""Configs of GR00T N1.5's Eagle 2.5 VL backbone: SigLIP vision tower, linear connector, truncated Qwen3.

``EagleBackboneConfig.full()`` is the released N1.5 backbone; ``tiny()`` is a few-thousand-parameter variant of
the same architecture for CPU tests; ``from_hf(...)`` reads the Eagle config dict (``vision_config`` /
``text_config`` / ``image_token_index`` ...) and the checkpoint ``config.json``'s ``backbone_cfg``.
Every field is an architecture fact or a numerics choice; anything the port does not implement is refused by
``from_hf`` with a one-line error instead of being silently ignored.
"""

from __future__ import annotations

import contextlib
import contextvars

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

_DTYPES = ("float32", "bfloat16", "float16")
# Names accepted for `remat_policy`: any `jax.checkpoint_policies` attribute, or "none" for no rematerialisation.
NO_REMAT = "none"


@dataclasses.dataclass(frozen=True)
class SiglipConfig:
    """transformers' ``SiglipVisionModel`` (SigLIP 1 architecture, no CLS token, learned position table)."""

    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 27
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 14
    layer_norm_eps: float = 1e-6
    # The MAP pooling head is built (and stored in checkpoints) unless the config says vision_use_head=False;
    # its output is never used by GR00T, so the port only needs to know whether its tensors exist.
    has_pooling_head: bool = True

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"SiglipConfig: hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"SiglipConfig: image_size={self.image_size} is not a multiple of "
                             f"patch_size={self.patch_size}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_patches(self) -> int:
        """Tokens per image: (image_size / patch_size)^2 (256 for 224 px / 14 px patches)."""
        return (self.image_size // self.patch_size) ** 2


@dataclasses.dataclass(frozen=True)
class Qwen3Config:
    """transformers' ``Qwen3ForCausalLM`` text config (Qwen3-1.7B sizes by default).

    ``num_hidden_layers`` is the depth of the full language model; GR00T keeps only the first
    ``EagleBackboneConfig.select_layer`` of them.
    """

    vocab_size: int = 151680
    hidden_size: int = 2048
    intermediate_size: int = 6144
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    tie_word_embeddings: bool = True

    def __post_init__(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"Qwen3Config: num_attention_heads={self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads}")
        if self.head_dim % 2:
            raise ValueError(f"Qwen3Config: head_dim={self.head_dim} must be even for rotate-half RoPE")


@dataclasses.dataclass(frozen=True)
class EagleBackboneConfig:
    """GR00T N1.5's ``EagleBackbone``: SigLIP -> mlp1 (one Linear) -> Qwen3 layers [0, select_layer) -> final norm.

    Numerics (not architecture):
      dtype: compute dtype of activations and matmuls ("float32" or "bfloat16"; the released policy runs bf16).
      param_dtype: dtype parameters are created/stored in.
      remat_policy: the ``jax.checkpoint_policies`` used by the remat-wrapped scanned layers, or "none".
    """

    vision: SiglipConfig = dataclasses.field(default_factory=SiglipConfig)
    text: Qwen3Config = dataclasses.field(default_factory=Qwen3Config)
    select_layer: int = 12
    image_token_index: int = 151669  # <IMG_CONTEXT>
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat_policy: str = "nothing_saveable"

    def __post_init__(self):
        if not 1 <= self.select_layer <= self.text.num_hidden_layers:
            raise ValueError(f"EagleBackboneConfig: select_layer={self.select_layer} must be in "
                             f"[1, text.num_hidden_layers={self.text.num_hidden_layers}]")
        if not 0 <= self.image_token_index < self.text.vocab_size:
            raise ValueError(f"EagleBackboneConfig: image_token_index={self.image_token_index} is outside the "
                             f"vocabulary [0, {self.text.vocab_size})")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ValueError(f"EagleBackboneConfig: {name}={getattr(self, name)!r} is not one of {_DTYPES}")
        if self.remat_policy != NO_REMAT and not callable(getattr(jax.checkpoint_policies, self.remat_policy, None)):
            raise ValueError(f"EagleBackboneConfig: remat_policy={self.remat_policy!r} is neither {NO_REMAT!r} nor "
                             f"a jax.checkpoint_policies name")

    @property
    def tokens_per_image(self) -> int:
        """<IMG_CONTEXT> tokens per image (no pixel shuffle, one tile): 256 at 224 px."""
        return self.vision.num_patches

    @property
    def output_dim(self) -> int:
        """Width of ``backbone_features`` (``eagle_linear`` is Identity in N1.5)."""
        return self.text.hidden_size

    @property
    def jnp_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def jnp_param_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    def replace(self, **changes: Any) -> "EagleBackboneConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def full(cls, **numerics: Any) -> "EagleBackboneConfig":
        """The released N1.5 backbone: SigLIP 27x1152 at 224 px, Qwen3-1.7B truncated to its first 12 layers."""
        return cls(vision=SiglipConfig(), text=Qwen3Config(), select_layer=12, image_token_index=151669, **numerics)

    @classmethod
    def tiny(cls, **numerics: Any) -> "EagleBackboneConfig":
        """Same architecture at toy sizes: 28 px images (4 tokens each), GQA 4/2 with head_dim != hidden/heads,
        different vision and text widths (so a transposed mlp1 cannot go unnoticed), 2 of 3 LLM layers kept."""
        return cls(
            vision=SiglipConfig(hidden_size=32, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4,
                                image_size=28, patch_size=14),
            text=Qwen3Config(vocab_size=128, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=10_000.0),
            select_layer=2,
            image_token_index=100,
            **numerics,
        )

    @classmethod
    def from_hf(cls, eagle_config: Mapping[str, Any] | None = None, backbone_cfg: Mapping[str, Any] | None = None,
                **numerics: Any) -> "EagleBackboneConfig":
        """Build from HF-style dicts.

        Args:
          eagle_config: the Eagle 2.5 VL ``config.json`` dict (``Eagle25VLConfig.to_dict()``). GR00T checkpoints do
            not contain it (it ships with the model code); ``None`` means the released N1.5 Eagle config.
          backbone_cfg: ``config.json["backbone_cfg"]`` of a GR00T checkpoint (``select_layer``,
            ``project_to_dim``, ``reproject_vision``; training flags such as ``tune_llm`` are ignored).
            ``None`` means the N1.5 values (``select_layer=12``, no projection).
          numerics: ``dtype`` / ``param_dtype`` / ``remat_policy`` overrides.
        """
        base = cls.full()
        vision, text, image_token_index = base.vision, base.text, base.image_token_index
        if eagle_config is not None:
            vision, text, image_token_index = _parse_eagle_config(eagle_config)
        select_layer = base.select_layer
        if backbone_cfg is not None:
            if backbone_cfg.get("project_to_dim") is not None:
                raise ValueError(f"backbone_cfg.project_to_dim={backbone_cfg['project_to_dim']} is not supported "
                                 f"(GR00T N1.5 uses None, i.e. eagle_linear = Identity)")
            if backbone_cfg.get("reproject_vision", False):
                raise ValueError("backbone_cfg.reproject_vision=True is not supported (the reference asserts False)")
            select_layer = int(backbone_cfg.get("select_layer", select_layer))
        return cls(vision=vision, text=text, select_layer=select_layer, image_token_index=image_token_index,
                   **numerics)


_REQUIRED = object()


def config_value(cfg: Mapping[str, Any], key: str, where: str, default: Any = _REQUIRED) -> Any:
    """``cfg[key]``; a missing size key is an error (HF's own defaults describe other models, not GR00T)."""
    value = cfg.get(key, default)
    if value is _REQUIRED or value is None and default is _REQUIRED:
        raise ValueError(f"{where} has no {key!r} entry")
    return value


def check_supported(cfg: Mapping[str, Any], key: str, allowed: tuple, where: str) -> None:
    if key in cfg and cfg[key] not in allowed:
        raise ValueError(f"{where}.{key}={cfg[key]!r} is not supported by the port (supported: {allowed})")


def _parse_eagle_config(eagle: Mapping[str, Any]) -> tuple[SiglipConfig, Qwen3Config, int]:
    where = "eagle_config"
    v = config_value(eagle, "vision_config", where)
    t = config_value(eagle, "text_config", where)
    image_token_index = int(config_value(eagle, "image_token_index", where))
    # Eagle options GR00T N1.5 does not use; a config that turns them on describes another model.
    check_supported(eagle, "use_pixel_shuffle", (False,), where)
    check_supported(eagle, "mlp_connector_layers", (1,), where)
    check_supported(eagle, "select_layer", (-1,), where)  # Eagle's own ViT layer choice: -1 = last_hidden_state
    check_supported(eagle, "use_backbone_lora", (0, False, None), where)
    check_supported(eagle, "use_llm_lora", (0, False, None), where)

    vwhere = f"{where}.vision_config"
    check_supported(v, "model_type", ("siglip_vision_model",), vwhere)
    check_supported(v, "hidden_act", ("gelu_pytorch_tanh",), vwhere)
    vision = SiglipConfig(
        hidden_size=int(config_value(v, "hidden_size", vwhere)),
        intermediate_size=int(config_value(v, "intermediate_size", vwhere)),
        num_hidden_layers=int(config_value(v, "num_hidden_layers", vwhere)),
        num_attention_heads=int(config_value(v, "num_attention_heads", vwhere)),
        num_channels=int(config_value(v, "num_channels", vwhere, 3)),
        image_size=int(config_value(v, "image_size", vwhere)),
        patch_size=int(config_value(v, "patch_size", vwhere)),
        layer_norm_eps=float(config_value(v, "layer_norm_eps", vwhere, 1e-6)),
        # transformers builds the MAP head unless the config sets vision_use_head=False.
        has_pooling_head=bool(config_value(v, "vision_use_head", vwhere, True)),
    )
    force = eagle.get("force_image_size")
    if force is not None and int(force) != vision.image_size:
        # Eagle sizes its token count from force_image_size but SigLIP its position table from image_size.
        raise ValueError(f"{where}.force_image_size={force} differs from vision_config.image_size="
                         f"{vision.image_size}; the reference would be inconsistent")

    twhere = f"{where}.text_config"
    architectures = t.get("architectures") or []
    if architectures[:1] != ["Qwen3ForCausalLM"]:
        raise ValueError(f"{twhere}.architectures={architectures} is not supported (only Qwen3ForCausalLM)")
    check_supported(t, "hidden_act", ("silu",), twhere)
    check_supported(t, "attention_bias", (False,), twhere)
    check_supported(t, "rope_scaling", (None,), twhere)
    check_supported(t, "use_sliding_window", (False,), twhere)
    heads = int(config_value(t, "num_attention_heads", twhere))
    # Defaults below are transformers' Qwen3Config defaults, used only for keys a serialized config may omit.
    text = Qwen3Config(
        vocab_size=int(config_value(t, "vocab_size", twhere)),
        hidden_size=int(config_value(t, "hidden_size", twhere)),
        intermediate_size=int(config_value(t, "intermediate_size", twhere)),
        num_hidden_layers=int(config_value(t, "num_hidden_layers", twhere)),
        num_attention_heads=heads,
        num_key_value_heads=int(t.get("num_key_value_heads") or heads),
        head_dim=int(config_value(t, "head_dim", twhere, 128)),
        rms_norm_eps=float(config_value(t, "rms_norm_eps", twhere, 1e-6)),
        rope_theta=float(config_value(t, "rope_theta", twhere, 10_000.0)),
        tie_word_embeddings=bool(config_value(t, "tie_word_embeddings", twhere, False)),
    )
    return vision, text, image_token_index


_SCAN_UNROLL: contextvars.ContextVar[int] = contextvars.ContextVar("gr00t_scan_unroll", default=1)


@contextlib.contextmanager
def scan_unroll(steps: int):
    """Unroll every scanned layer stack by ``steps`` while modules are traced inside this context.

    An inference-only knob: the parameters keep their stacked layout (so checkpoints are unaffected), only the
    compiled loop changes. Unrolled, a whole forward pass is straight-line code that XLA can capture as one GPU
    command buffer instead of launching each layer from a while loop; compile time grows with ``steps``.
    """
    if steps < 1:
        raise ValueError(f"scan_unroll needs steps >= 1, got {steps}")
    token = _SCAN_UNROLL.set(steps)
    try:
        yield
    finally:
        _SCAN_UNROLL.reset(token)


def current_scan_unroll() -> int:
    return _SCAN_UNROLL.get()


def scanned(block: type, *, length: int, remat_policy: str, in_axes: tuple = ()) -> type:
    """``block`` stacked ``length`` times with ``nn.scan`` (params get a leading layer axis), each step wrapped in
    ``nn.remat`` under ``remat_policy`` unless it is "none". Tracing one layer instead of ``length`` keeps compile
    time flat in depth; ``block.__call__(carry, *broadcast_args)`` must return ``(carry, None)``."""
    if remat_policy != NO_REMAT:
        block = nn.remat(block, policy=getattr(jax.checkpoint_policies, remat_policy), prevent_cse=False)
    return nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=in_axes, length=length,
                   unroll=min(current_scan_unroll(), length))
