"""SigLIP vision tower of GR00T N1.5 (transformers' ``SiglipVisionModel``), as Flax Linen modules.

patch conv (stride = patch) -> + learned position table -> N pre-LN encoder layers (scanned) -> post_layernorm.
No CLS token, no position interpolation, no attention mask. The MAP pooling head exists in checkpoints but its
output is unused by GR00T, so it is not built here (``eagle.dropped_keys`` accounts for its tensors).

Param tree (scanned leaves carry a leading layer axis of size ``num_hidden_layers``):
  embeddings/{patch_embedding/{kernel (p, p, C, D), bias}, position_embedding/embedding (P, D)}
  encoder/layers/{layer_norm1, self_attn/{q,k,v,out}_proj, layer_norm2, mlp/{fc1, fc2}}
  post_layernorm/{scale, bias}
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gr00t_port.backbone_config import SiglipConfig, scanned
from gr00t_port.keymap import KeyRule


def _layer_norm(cfg: SiglipConfig, dtype: Any, param_dtype: Any, name: str) -> nn.LayerNorm:
    # Two-pass variance, as torch computes it (the one-pass E[x^2]-E[x]^2 form loses digits in fp32).
    return nn.LayerNorm(epsilon=cfg.layer_norm_eps, use_fast_variance=False, dtype=dtype, param_dtype=param_dtype,
                        name=name)


class SiglipAttention(nn.Module):
    """Unmasked multi-head self-attention with biased q/k/v/out projections."""

    config: SiglipConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (N, T, D) -> (N, T, D)."""
        cfg = self.config
        n, t, _ = x.shape
        dense = functools.partial(nn.Dense, cfg.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype)
        split = lambda y: y.reshape(n, t, cfg.num_attention_heads, cfg.head_dim)  # head is the outer feature factor
        q, k, v = (split(dense(name=f"{p}_proj")(x)) for p in ("q", "k", "v"))
        logits = jnp.einsum("nqhd,nkhd->nhqk", q, k) * (cfg.head_dim ** -0.5)
        # Softmax in fp32 then back to the compute dtype, as the eager/SDPA reference does.
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
        out = jnp.einsum("nhqk,nkhd->nqhd", probs, v).reshape(n, t, cfg.hidden_size)
        return dense(name="out_proj")(out)


class SiglipMLP(nn.Module):
    config: SiglipConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        h = nn.Dense(cfg.intermediate_size, dtype=self.dtype, param_dtype=self.param_dtype, name="fc1")(x)
        h = jax.nn.gelu(h, approximate=True)  # gelu_pytorch_tanh
        return nn.Dense(cfg.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype, name="fc2")(h)


class SiglipEncoderLayer(nn.Module):
    """x += Attn(LN1 x); x += MLP(LN2 x). Returns (x, None) so that it can be scanned."""

    config: SiglipConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, None]:
        cfg, dt, pdt = self.config, self.dtype, self.param_dtype
        x = x + SiglipAttention(cfg, dt, pdt, name="self_attn")(_layer_norm(cfg, dt, pdt, "layer_norm1")(x))
        x = x + SiglipMLP(cfg, dt, pdt, name="mlp")(_layer_norm(cfg, dt, pdt, "layer_norm2")(x))
        return x, None


class SiglipEncoder(nn.Module):
    config: SiglipConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat_policy: str = "nothing_saveable"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        layers = scanned(SiglipEncoderLayer, length=self.config.num_hidden_layers, remat_policy=self.remat_policy)
        x, _ = layers(self.config, self.dtype, self.param_dtype, name="layers")(x)
        return x


class SiglipEmbeddings(nn.Module):
    """Patch conv (kernel = stride = patch, no padding) + learned position table; no CLS token."""

    config: SiglipConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        """pixel_values (N, H, W, C) -> (N, num_patches, D)."""
        cfg = self.config
        p = cfg.patch_size
        x = nn.Conv(cfg.hidden_size, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                    param_dtype=self.param_dtype, name="patch_embedding")(pixel_values.astype(self.dtype))
        x = x.reshape(x.shape[0], cfg.num_patches, cfg.hidden_size)  # row-major over the (h, w) grid, as torch
        positions = nn.Embed(cfg.num_patches, cfg.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
                             name="position_embedding")(jnp.arange(cfg.num_patches))
        return x + positions[None]


class SiglipVisionModel(nn.Module):
    """pixel_values (N, H, W, C) NHWC, normalized to [-1, 1] -> last_hidden_state (N, num_patches, D).

    The output is SigLIP's ``last_hidden_state`` (post_layernorm applied), what Eagle feeds to ``mlp1``.
    """

    config: SiglipConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat_policy: str = "nothing_saveable"

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        cfg = self.config
        expected = (cfg.image_size, cfg.image_size, cfg.num_channels)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(f"SiglipVisionModel: pixel_values must be NHWC (N, {', '.join(map(str, expected))}); "
                             f"got shape {tuple(pixel_values.shape)}")
        x = SiglipEmbeddings(cfg, self.dtype, self.param_dtype, name="embeddings")(pixel_values)
        x = SiglipEncoder(cfg, self.dtype, self.param_dtype, self.remat_policy, name="encoder")(x)
        return _layer_norm(cfg, self.dtype, self.param_dtype, "post_layernorm")(x)


def siglip_key_rules(cfg: SiglipConfig, torch_prefix: str, flax_prefix: tuple[str, ...]) -> list[KeyRule]:
    """Rules for every tensor of ``SiglipVisionModel`` except the unused pooling head.

    torch_prefix: e.g. "backbone.eagle_model.vision_model.vision_model."; flax_prefix: path of this module.
    """
    # Listed in the reference state_dict's order, so that an export can be written in that order.
    rules = [
        KeyRule(f"{torch_prefix}embeddings.patch_embedding.weight",
                (*flax_prefix, "embeddings", "patch_embedding", "kernel"), "conv2d"),
        KeyRule(f"{torch_prefix}embeddings.patch_embedding.bias",
                (*flax_prefix, "embeddings", "patch_embedding", "bias")),
        KeyRule(f"{torch_prefix}embeddings.position_embedding.weight",
                (*flax_prefix, "embeddings", "position_embedding", "embedding")),
    ]
    linear = (("weight", "kernel", "linear"), ("bias", "bias", "identity"))
    norm = (("weight", "scale", "identity"), ("bias", "bias", "identity"))
    per_layer = [  # (torch suffix, flax sub-path, transform)
        *[(f"layer_norm1.{w}", ("layer_norm1", f), t) for w, f, t in norm],
        *[(f"self_attn.{p}.{w}", ("self_attn", p, f), t) for p in ("k_proj", "v_proj", "q_proj", "out_proj")
          for w, f, t in linear],
        *[(f"layer_norm2.{w}", ("layer_norm2", f), t) for w, f, t in norm],
        *[(f"mlp.{p}.{w}", ("mlp", p, f), t) for p in ("fc1", "fc2") for w, f, t in linear],
    ]
    n = cfg.num_hidden_layers
    for i in range(n):
        for suffix, sub, transform in per_layer:
            rules.append(KeyRule(f"{torch_prefix}encoder.layers.{i}.{suffix}",
                                 (*flax_prefix, "encoder", "layers", *sub), transform, stack_index=i, stack_size=n))
    rules += [KeyRule(f"{torch_prefix}post_layernorm.{w}", (*flax_prefix, "post_layernorm", f), t)
              for w, f, t in norm]
    return rules


def pooling_head_shapes(cfg: SiglipConfig, torch_prefix: str) -> dict[str, tuple[int, ...]]:
    """torch keys -> shapes of the MAP pooling head (``head.*``): in checkpoints, never executed by GR00T."""
    if not cfg.has_pooling_head:
        return {}
    d, f = cfg.hidden_size, cfg.intermediate_size
    p = f"{torch_prefix}head."
    return {
        f"{p}probe": (1, 1, d),
        f"{p}attention.in_proj_weight": (3 * d, d),
        f"{p}attention.in_proj_bias": (3 * d,),
        f"{p}attention.out_proj.weight": (d, d),
        f"{p}attention.out_proj.bias": (d,),
        f"{p}layernorm.weight": (d,),
        f"{p}layernorm.bias": (d,),
        f"{p}mlp.fc1.weight": (f, d),
        f"{p}mlp.fc1.bias": (f,),
        f"{p}mlp.fc2.weight": (d, f),
        f"{p}mlp.fc2.bias": (d,),
    }
