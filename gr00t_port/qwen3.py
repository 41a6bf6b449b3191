"""The truncated Qwen3 language model of GR00T N1.5 (transformers' ``Qwen3Model``), as Flax Linen modules.

GR00T keeps the first ``select_layer`` decoder layers and reads ``hidden_states[select_layer]``, which in
transformers is the final RMSNorm applied to the last kept layer's output; ``Qwen3Model.__call__`` returns exactly
that. ``lm_head`` logits are never used and not built.

Per layer: x += o_proj(attn(RMSNorm x)); x += down(silu(gate h) * up h) with h = RMSNorm x.
Attention: GQA, per-head RMSNorm on q and k *before* rotate-half RoPE (theta from config), scale head_dim^-0.5,
causal + key-padding mask, positions = arange(L) whatever the padding (the reference passes position_ids=None).

Padded query rows: the released model runs FlashAttention-2, whose varlen kernel writes zeros as the attention
output of padding positions; this port does the same, so pad-position features match the training/serving backend
(SDPA/eager instead give left-pad rows a uniform attention and let right-pad rows attend to the prompt).

Param tree (``layers`` leaves carry a leading axis of size ``num_layers``):
  embed_tokens/embedding (V, D)
  layers/{input_layernorm/scale, self_attn/{q,k,v,o}_proj/kernel, self_attn/{q,k}_norm/scale,
          post_attention_layernorm/scale, mlp/{gate,up,down}_proj/kernel}
  norm/scale
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gr00t_port.backbone_config import Qwen3Config, scanned
from gr00t_port.keymap import KeyRule


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) computed in fp32, cast back to the input dtype, then times ``scale`` (no 1+w)."""

    eps: float
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return scale.astype(self.dtype) * normed.astype(x.dtype).astype(self.dtype)


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """positions (L,) -> cos, sin (L, head_dim) in fp32; frequencies repeated as [f, f] (rotate-half layout)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[:, None] * inv_freq[None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def _rotate_half(x: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x (B, L, H, dh); cos/sin (L, dh) already in x's dtype."""
    return x * cos[None, :, None, :] + _rotate_half(x) * sin[None, :, None, :]


class Qwen3Attention(nn.Module):
    config: Qwen3Config
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, attention_mask: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        """x (B, L, D); attention_mask (B, L) bool, True = real token; cos/sin (L, head_dim) -> (B, L, D)."""
        cfg = self.config
        b, l, _ = x.shape
        h, kv, dh = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        dense = functools.partial(nn.Dense, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
        norm = functools.partial(RMSNorm, cfg.rms_norm_eps, self.dtype, self.param_dtype)
        q = norm(name="q_norm")(dense(h * dh, name="q_proj")(x).reshape(b, l, h, dh))
        k = norm(name="k_norm")(dense(kv * dh, name="k_proj")(x).reshape(b, l, kv, dh))
        v = dense(kv * dh, name="v_proj")(x).reshape(b, l, kv, dh)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        # GQA: query head j uses kv head j // group (transformers' repeat_kv), i.e. heads split as (kv, group).
        group = h // kv
        q = q.reshape(b, l, kv, group, dh)
        logits = jnp.einsum("bqkgd,bskd->bkgqs", q, k) * (dh ** -0.5)
        causal = jnp.tril(jnp.ones((l, l), dtype=bool))
        allowed = causal[None] & attention_mask[:, None, :]  # (B, Lq, Lk)
        logits = jnp.where(allowed[:, None, None], logits.astype(jnp.float32), jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v)
        # FlashAttention-2 semantics for padding queries: their attention output is exactly zero.
        out = out * attention_mask[:, :, None, None, None].astype(out.dtype)
        return dense(cfg.hidden_size, name="o_proj")(out.reshape(b, l, h * dh))


class Qwen3MLP(nn.Module):
    config: Qwen3Config
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        dense = functools.partial(nn.Dense, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
        gate = dense(cfg.intermediate_size, name="gate_proj")(x)
        up = dense(cfg.intermediate_size, name="up_proj")(x)
        return dense(cfg.hidden_size, name="down_proj")(jax.nn.silu(gate) * up)


class Qwen3DecoderLayer(nn.Module):
    """One pre-norm decoder layer; returns (x, None) so that it can be scanned."""

    config: Qwen3Config
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, attention_mask: jax.Array, cos: jax.Array, sin: jax.Array
                 ) -> tuple[jax.Array, None]:
        cfg, dt, pdt = self.config, self.dtype, self.param_dtype
        h = RMSNorm(cfg.rms_norm_eps, dt, pdt, name="input_layernorm")(x)
        x = x + Qwen3Attention(cfg, dt, pdt, name="self_attn")(h, attention_mask, cos, sin)
        h = RMSNorm(cfg.rms_norm_eps, dt, pdt, name="post_attention_layernorm")(x)
        x = x + Qwen3MLP(cfg, dt, pdt, name="mlp")(h)
        return x, None


class Qwen3Model(nn.Module):
    """Token embedding, the first ``num_layers`` decoder layers (scanned) and the final RMSNorm.

    Two entry points, because Eagle edits the embeddings (image features) between them:
      ``embed(input_ids (B, L) int) -> (B, L, D)`` and ``__call__(inputs_embeds, attention_mask) -> (B, L, D)``.
    """

    config: Qwen3Config
    num_layers: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    remat_policy: str = "nothing_saveable"

    def setup(self):
        cfg = self.config
        if not 1 <= self.num_layers <= cfg.num_hidden_layers:
            raise ValueError(f"Qwen3Model: num_layers={self.num_layers} must be in [1, {cfg.num_hidden_layers}]")
        self.embed_tokens = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype)
        layers = scanned(Qwen3DecoderLayer, length=self.num_layers, remat_policy=self.remat_policy,
                         in_axes=(nn.broadcast, nn.broadcast, nn.broadcast))
        self.layers = layers(cfg, self.dtype, self.param_dtype)
        self.norm = RMSNorm(cfg.rms_norm_eps, self.dtype, self.param_dtype)

    def embed(self, input_ids: jax.Array) -> jax.Array:
        return self.embed_tokens(input_ids)

    def __call__(self, inputs_embeds: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """inputs_embeds (B, L, D); attention_mask (B, L), nonzero = real token (None = all real)."""
        b, l, _ = inputs_embeds.shape
        mask = jnp.ones((b, l), bool) if attention_mask is None else attention_mask.astype(bool)
        cos, sin = rope_cos_sin(jnp.arange(l), self.config.head_dim, self.config.rope_theta)
        x = inputs_embeds.astype(self.dtype)
        x, _ = self.layers(x, mask, cos.astype(self.dtype), sin.astype(self.dtype))
        return self.norm(x)


def qwen3_key_rules(cfg: Qwen3Config, num_layers: int, torch_prefix: str, flax_prefix: tuple[str, ...]
                    ) -> list[KeyRule]:
    """Rules for ``embed_tokens``, ``layers.{i}`` (i < num_layers) and ``norm`` (not ``lm_head``).

    torch_prefix: e.g. "backbone.eagle_model.language_model.model."; flax_prefix: path of this module.
    """
    # Listed in the reference state_dict's order, so that an export can be written in that order.
    per_layer = [
        *[(f"self_attn.{p}.weight", ("self_attn", p, "kernel"), "linear")
          for p in ("q_proj", "k_proj", "v_proj", "o_proj")],
        ("self_attn.q_norm.weight", ("self_attn", "q_norm", "scale"), "identity"),
        ("self_attn.k_norm.weight", ("self_attn", "k_norm", "scale"), "identity"),
        *[(f"mlp.{p}.weight", ("mlp", p, "kernel"), "linear") for p in ("gate_proj", "up_proj", "down_proj")],
        ("input_layernorm.weight", ("input_layernorm", "scale"), "identity"),
        ("post_attention_layernorm.weight", ("post_attention_layernorm", "scale"), "identity"),
    ]
    rules = [KeyRule(f"{torch_prefix}embed_tokens.weight", (*flax_prefix, "embed_tokens", "embedding"))]
    for i in range(num_layers):
        for suffix, sub, transform in per_layer:
            rules.append(KeyRule(f"{torch_prefix}layers.{i}.{suffix}", (*flax_prefix, "layers", *sub), transform,
                                 stack_index=i, stack_size=num_layers))
    rules.append(KeyRule(f"{torch_prefix}norm.weight", (*flax_prefix, "norm", "scale")))
    return rules
