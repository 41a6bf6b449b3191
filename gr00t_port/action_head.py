"""GR00T N1.5's flow-matching action head (``FlowmatchingActionHead`` + its ``DiT``) in Flax Linen.

Flow convention (GR00T's, the opposite of some diffusion codebases): t = 0 is noise, t = 1 is data, the network
predicts the velocity ``action - noise`` and inference integrates it with explicit Euler from t = 0. The network
sees t only as an integer bucket ``int(t * num_timestep_buckets)`` (0..999).

One inference call (``FlowmatchingActionHead.get_action``):
  context = encode_context(backbone features, state, embodiment)   # vlln + VL self-attention + state encoder,
                                                                     # and the DiT cross-attention K/V: ONCE
  x = noise;  for each of N steps: x += (1/N) * velocity_from_context(context, x, bucket_i)

The cross-attention K/V of the VL tokens do not depend on the denoising step, so they are projected once per call
instead of once per step (same math as the reference, which recomputes them every step).

Parameter tree (``init`` returns it; ``action_head_key_rules`` maps it to torch keys):
  vlln, vl_self_attention/blocks (scanned over layers), state_encoder, action_encoder, action_decoder,
  future_tokens, position_embedding, dit/{timestep_encoder, cross_kv (stacked over cross blocks),
  pairs (scanned over (cross, self) block pairs), proj_out_1, proj_out_2}, value_head (optional, RLinf critic).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from gr00t_port.backbone_config import NO_REMAT, current_scan_unroll
from gr00t_port.config import ActionHeadConfig
from gr00t_port.keymap import KeyRule

Array = jax.Array


# ------------------------------------------------------------------------------------------------------ sinusoids

def _exp_f32(exponent: np.ndarray) -> np.ndarray:
    # The frequency tables are static: build them in numpy, with each fp32 op of the reference done in fp32 and
    # exp rounded once from float64. XLA would otherwise fold `c * i / n` into `i * (c / n)` and use a faster,
    # less exact exp; an ulp in a frequency near 1 becomes ~1e-4 rad at bucket 999. (torch's own vectorised exp
    # is within 1 ulp of this table.)
    return np.exp(exponent.astype(np.float64)).astype(np.float32)


def action_time_frequencies(dim: int) -> np.ndarray:
    """f_i = exp(-i * (ln(1e4) / (dim/2))), i < dim/2, float32 (the action encoder's sinusoid)."""
    half = dim // 2
    step = np.float32(np.log(np.float32(10000.0))) / np.float32(half)
    return _exp_f32(-np.arange(half, dtype=np.float32) * step)


def dit_time_frequencies(dim: int) -> np.ndarray:
    """f_i = exp(-ln(1e4) * i / (dim/2 - 1)), i < dim/2, float32 (diffusers Timesteps, downscale_freq_shift=1)."""
    half = dim // 2
    exponent = np.float32(-math.log(10000.0)) * np.arange(half, dtype=np.float32)
    return _exp_f32(exponent / np.float32(half - 1))


def action_time_sinusoid(t_bucket: Array, dim: int) -> Array:
    """The action encoder's step encoding [sin(k f), cos(k f)] (sin FIRST), f = ``action_time_frequencies``.

    t_bucket: (B,) integer buckets. Returns (B, dim) float32 (computed in fp32, as the reference).
    """
    freqs = t_bucket.astype(jnp.float32)[:, None] * jnp.asarray(action_time_frequencies(dim))[None, :]
    return jnp.concatenate([jnp.sin(freqs), jnp.cos(freqs)], axis=-1)


def dit_time_sinusoid(t_bucket: Array, dim: int) -> Array:
    """diffusers ``Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=1)``: [cos(k f), sin(k f)] (cos
    FIRST), f = ``dit_time_frequencies`` (note the divisor dim/2 - 1, unlike the action encoder's dim/2).

    t_bucket: (B,). Returns (B, dim) float32.
    """
    freqs = t_bucket.astype(jnp.float32)[:, None] * jnp.asarray(dit_time_frequencies(dim))[None, :]
    return jnp.concatenate([jnp.cos(freqs), jnp.sin(freqs)], axis=-1)


def denoising_buckets(num_steps: int, num_timestep_buckets: int) -> np.ndarray:
    """Integer buckets of the N Euler steps, computed exactly as the reference: int(i / N * buckets).

    (4 steps, 1000 buckets) -> [0, 250, 500, 750]. Returns (N,) int32.
    """
    if num_steps < 1:
        raise ValueError(f"denoising_steps={num_steps} must be >= 1")
    return np.array([int(i / float(num_steps) * num_timestep_buckets) for i in range(num_steps)], np.int32)


# ---------------------------------------------------------------------------------------------- building blocks

def _layer_norm(eps: float, affine: bool, dtype: Any, param_dtype: Any, name: str | None = None) -> nn.LayerNorm:
    # use_fast_variance=False: two-pass variance, as torch (E[x^2]-E[x]^2 loses digits when |mean| >> std).
    return nn.LayerNorm(epsilon=eps, use_scale=affine, use_bias=affine, use_fast_variance=False, dtype=dtype,
                        param_dtype=param_dtype, name=name)


def _remat(module_cls: type[nn.Module], policy_name: str) -> type[nn.Module]:
    if policy_name == NO_REMAT:
        return module_cls
    return nn.remat(module_cls, policy=getattr(jax.checkpoint_policies, policy_name), prevent_cse=False)


class CategorySpecificLinear(nn.Module):
    """One Linear per embodiment slot: y = x @ W[id] + b[id]. W is stored (E, in, out), i.e. NOT transposed."""

    num_categories: int
    in_features: int
    out_features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, category_ids: Array) -> Array:
        """x: (B, T, in); category_ids: (B,) int. Returns (B, T, out)."""
        w = self.param("W", nn.initializers.normal(0.02), (self.num_categories, self.in_features, self.out_features),
                       self.param_dtype)
        b = self.param("b", nn.initializers.zeros, (self.num_categories, self.out_features), self.param_dtype)
        w = jnp.take(w, category_ids, axis=0).astype(self.dtype)
        b = jnp.take(b, category_ids, axis=0).astype(self.dtype)
        return jnp.einsum("btd,bdh->bth", x.astype(self.dtype), w) + b[:, None, :]


class CategorySpecificMLP(nn.Module):
    """layer2(relu(layer1(x))) with per-embodiment weights."""

    num_categories: int
    in_features: int
    hidden_features: int
    out_features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, category_ids: Array) -> Array:
        lin = functools.partial(CategorySpecificLinear, self.num_categories, dtype=self.dtype,
                                param_dtype=self.param_dtype)
        h = jax.nn.relu(lin(self.in_features, self.hidden_features, name="layer1")(x, category_ids))
        return lin(self.hidden_features, self.out_features, name="layer2")(h, category_ids)


class MultiEmbodimentActionEncoder(nn.Module):
    """out = W3(swish(W2([W1(x), sinusoid(t_bucket)]))), all per-embodiment."""

    num_categories: int
    action_dim: int
    width: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, actions: Array, t_bucket: Array, category_ids: Array) -> Array:
        """actions: (B, T, action_dim); t_bucket: (B,) int; category_ids: (B,). Returns (B, T, width)."""
        lin = functools.partial(CategorySpecificLinear, self.num_categories, dtype=self.dtype,
                                param_dtype=self.param_dtype)
        a = lin(self.action_dim, self.width, name="W1")(actions, category_ids)
        tau = action_time_sinusoid(t_bucket, self.width).astype(a.dtype)
        tau = jnp.broadcast_to(tau[:, None, :], a.shape)
        h = lin(2 * self.width, self.width, name="W2")(jnp.concatenate([a, tau], axis=-1), category_ids)
        h = h * jax.nn.sigmoid(h)  # swish
        return lin(self.width, self.width, name="W3")(h, category_ids)


class Attention(nn.Module):
    """diffusers ``Attention`` with bias, no mask, scale head_dim^-0.5. K/V come from ``kv`` when given (the
    precomputed cross-attention projections), else from ``x`` itself (self-attention)."""

    num_heads: int
    head_dim: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, kv: tuple[Array, Array] | None = None) -> Array:
        """x: (B, T, D); kv: two (B, S, H*Dh) arrays or None. Returns (B, T, D)."""
        b, t, d = x.shape
        inner = self.num_heads * self.head_dim
        dense = functools.partial(nn.Dense, inner, dtype=self.dtype, param_dtype=self.param_dtype)
        q = dense(name="to_q")(x)
        if kv is None:
            k, v = dense(name="to_k")(x), dense(name="to_v")(x)
        else:
            k, v = kv
        heads = lambda y: y.reshape(*y.shape[:2], self.num_heads, self.head_dim)  # torch .view: head is outer
        o = jax.nn.dot_product_attention(heads(q), heads(k.astype(q.dtype)), heads(v.astype(q.dtype)),
                                         scale=self.head_dim ** -0.5)
        return nn.Dense(d, dtype=self.dtype, param_dtype=self.param_dtype, name="to_out")(o.reshape(b, t, inner))


class FeedForward(nn.Module):
    """diffusers ``FeedForward(activation_fn="gelu-approximate", final_dropout=True)``:
    proj_out(dropout(gelu_tanh(proj_in(x)))) followed by dropout."""

    mult: int
    dropout: float
    deterministic: bool
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = x.shape[-1]
        h = nn.Dense(self.mult * d, dtype=self.dtype, param_dtype=self.param_dtype, name="proj_in")(x)
        h = jax.nn.gelu(h, approximate=True)
        h = nn.Dropout(self.dropout)(h, deterministic=self.deterministic)
        h = nn.Dense(d, dtype=self.dtype, param_dtype=self.param_dtype, name="proj_out")(h)
        return nn.Dropout(self.dropout)(h, deterministic=self.deterministic)


class AdaLayerNorm(nn.Module):
    """LN_noaffine(x) * (1 + scale) + shift with (scale, shift) = split(linear(silu(temb))): scale FIRST."""

    eps: float
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, temb: Array) -> Array:
        """x: (B, T, D); temb: (B, D)."""
        mod = nn.Dense(2 * x.shape[-1], dtype=self.dtype, param_dtype=self.param_dtype, name="linear")(nn.silu(temb))
        scale, shift = jnp.split(mod, 2, axis=-1)
        y = _layer_norm(self.eps, False, self.dtype, self.param_dtype)(x)
        return y * (1 + scale[:, None]) + shift[:, None]


class TransformerBlock(nn.Module):
    """diffusers-style ``BasicTransformerBlock`` as GR00T uses it (pre-norm, no masks):
        x = x + dropout(attn(norm1(x)))      # K/V from `kv` (cross-attention) or from norm1(x)
        x = x + ff(norm3(x))
    norm1 is AdaLayerNorm(temb) in the DiT and an affine LayerNorm in the VL self-attention; norm3 is a LayerNorm
    without parameters in the DiT and affine in the VL self-attention. The attention output goes through two
    dropouts in the reference (``to_out.1`` and the block's ``final_dropout``); both are kept."""

    num_heads: int
    head_dim: int
    ff_mult: int
    dropout: float
    norm_eps: float
    adaptive_norm: bool
    deterministic: bool
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, temb: Array | None = None, kv: tuple[Array, Array] | None = None) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.adaptive_norm:
            h = AdaLayerNorm(self.norm_eps, name="norm1", **kw)(x, temb)
        else:
            h = _layer_norm(self.norm_eps, True, name="norm1", **kw)(x)
        a = Attention(self.num_heads, self.head_dim, name="attn", **kw)(h, kv)
        a = nn.Dropout(self.dropout)(a, deterministic=self.deterministic)  # to_out.1
        a = nn.Dropout(self.dropout)(a, deterministic=self.deterministic)  # block final_dropout
        x = x + a
        h = _layer_norm(self.norm_eps, not self.adaptive_norm, name="norm3", **kw)(x)
        return x + FeedForward(self.ff_mult, self.dropout, self.deterministic, name="ff", **kw)(h)


class VLSelfAttentionLayer(nn.Module):
    """One scanned step of ``vl_self_attention`` (carry = the VL tokens)."""

    block: dict
    deterministic: bool

    @nn.compact
    def __call__(self, x: Array, _: Any = None) -> tuple[Array, None]:
        return TransformerBlock(**self.block, adaptive_norm=False, deterministic=self.deterministic,
                                name="block")(x), None


class DiTBlockPair(nn.Module):
    """DiT blocks 2j (cross-attention to the VL tokens) and 2j+1 (self-attention), one scan step.

    Even and odd blocks have different parameter shapes (to_k/to_v read 2048-wide VL tokens vs 1536-wide action
    tokens), so the DiT is scanned over pairs rather than over single blocks.
    """

    block: dict
    deterministic: bool

    @nn.compact
    def __call__(self, x: Array, cross_kv: tuple[Array, Array], temb: Array) -> tuple[Array, None]:
        """x: (B, T, D) carry; cross_kv: this pair's VL K and V, each (B, S, D); temb: (B, D)."""
        make = functools.partial(TransformerBlock, **self.block, adaptive_norm=True, deterministic=self.deterministic)
        x = make(name="cross_attn_block")(x, temb, cross_kv)
        x = make(name="self_attn_block")(x, temb)
        return x, None


class _KVProjection(nn.Module):
    inner_dim: int
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, context: Array) -> tuple[Array, Array]:
        dense = functools.partial(nn.Dense, self.inner_dim, dtype=self.dtype, param_dtype=self.param_dtype)
        return dense(name="to_k")(context), dense(name="to_v")(context)


class CrossAttentionKV(nn.Module):
    """to_k / to_v of every cross-attention block of the DiT, stacked along a leading (num_pairs,) axis, so the VL
    K/V of all cross blocks are projected once per inference call."""

    num_pairs: int
    inner_dim: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, vl_tokens: Array) -> tuple[Array, Array]:
        """vl_tokens: (B, S, C). Returns K, V, each (num_pairs, B, S, inner_dim)."""
        stacked = nn.vmap(_KVProjection, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None,
                          out_axes=0, axis_size=self.num_pairs)
        return stacked(self.inner_dim, self.dtype, self.param_dtype, name="blocks")(vl_tokens)


class TimestepEncoder(nn.Module):
    """temb = linear_2(silu(linear_1(dit_time_sinusoid(k)))), (B,) -> (B, width)."""

    width: int
    channels: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, t_bucket: Array) -> Array:
        e = dit_time_sinusoid(t_bucket, self.channels).astype(self.dtype)
        dense = functools.partial(nn.Dense, self.width, dtype=self.dtype, param_dtype=self.param_dtype)
        return dense(name="linear_2")(nn.silu(dense(name="linear_1")(e)))


class DiT(nn.Module):
    """GR00T's ``DiT`` (16 blocks interleaving cross- and self-attention, AdaLN on the step embedding)."""

    config: ActionHeadConfig
    deterministic: bool = True

    def setup(self):
        c, d = self.config, self.config.dit
        kw = dict(dtype=c.jnp_dtype, param_dtype=c.jnp_param_dtype)
        block = dict(num_heads=d.num_heads, head_dim=d.head_dim, ff_mult=d.ff_mult, dropout=d.dropout,
                     norm_eps=d.norm_eps, **kw)
        self.timestep_encoder = TimestepEncoder(d.inner_dim, d.timestep_channels, **kw)
        self.cross_kv = CrossAttentionKV(d.num_pairs, d.inner_dim, **kw)
        self.pairs = nn.scan(_remat(DiTBlockPair, c.remat_policy), variable_axes={"params": 0},
                             split_rngs={"params": True, "dropout": True}, in_axes=(0, nn.broadcast),
                             length=d.num_pairs, unroll=min(current_scan_unroll(), d.num_pairs))(
                                 block, self.deterministic)
        self.norm_out = _layer_norm(d.output_norm_eps, False, **kw)
        self.proj_out_1 = nn.Dense(2 * d.inner_dim, **kw)
        self.proj_out_2 = nn.Dense(d.output_dim, **kw)

    def project_cross_kv(self, vl_tokens: Array) -> tuple[Array, Array]:
        """vl_tokens: (B, S, C) -> K, V each (num_pairs, B, S, inner_dim)."""
        return self.cross_kv(vl_tokens)

    def __call__(self, tokens: Array, cross_kv: tuple[Array, Array], t_bucket: Array) -> Array:
        """tokens: (B, T, inner_dim); cross_kv from ``project_cross_kv``; t_bucket: (B,). Returns (B, T, output_dim)."""
        temb = self.timestep_encoder(t_bucket)
        x, _ = self.pairs(tokens, cross_kv, temb)
        # Output AdaLN: (shift, scale) = split(proj_out_1(silu(temb))): shift FIRST, unlike AdaLayerNorm.
        shift, scale = jnp.split(self.proj_out_1(nn.silu(temb)), 2, axis=-1)
        x = self.norm_out(x) * (1 + scale[:, None]) + shift[:, None]
        return self.proj_out_2(x)


class VLSelfAttention(nn.Module):
    """``vl_self_attention``: ``num_layers`` self-attention blocks over the backbone tokens, scanned."""

    config: ActionHeadConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c, s = self.config, self.config.vl_self_attention
        block = dict(num_heads=s.num_heads, head_dim=s.head_dim, ff_mult=s.ff_mult, dropout=s.dropout,
                     norm_eps=s.norm_eps, dtype=c.jnp_dtype, param_dtype=c.jnp_param_dtype)
        layers = nn.scan(_remat(VLSelfAttentionLayer, c.remat_policy), variable_axes={"params": 0},
                         split_rngs={"params": True, "dropout": True}, length=s.num_layers,
                         unroll=min(current_scan_unroll(), s.num_layers))
        x, _ = layers(block, self.deterministic, name="blocks")(x, None)
        return x


class ValueHead(nn.Module):
    """RLinf's critic MLP (Linear+ReLU ..., Linear -> 1). Init as RLinf: Kaiming-normal (fan_out, relu) hidden
    layers, N(0, 0.02) last layer, zero biases."""

    hidden_dims: tuple[int, ...]
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """x: (B, value_head_input_dim). Returns (B, 1)."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, bias_init=nn.initializers.zeros)
        for i, width in enumerate(self.hidden_dims):
            x = jax.nn.relu(nn.Dense(width, kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
                                     name=f"dense_{i}", **kw)(x))
        return nn.Dense(1, kernel_init=nn.initializers.normal(0.02), name=f"dense_{len(self.hidden_dims)}", **kw)(x)


# --------------------------------------------------------------------------------------------------- the module

@flax.struct.dataclass
class HeadContext:
    """Everything the denoising loop needs that does not depend on the step.

    vl_tokens: (B, S, backbone_dim) after vlln + VL self-attention.
    state_features: (B, state_horizon, input_embedding_dim).
    cross_k, cross_v: (num_pairs, B, S, dit_inner_dim), the DiT cross-attention K/V of ``vl_tokens``.
    embodiment_id: (B,) int32.
    """

    vl_tokens: Array
    state_features: Array
    cross_k: Array
    cross_v: Array
    embodiment_id: Array


class ActionHeadModule(nn.Module):
    """Linen module of the whole head. Use it through ``FlowmatchingActionHead`` (params-first functions)."""

    config: ActionHeadConfig
    deterministic: bool = True

    def setup(self):
        c = self.config
        kw = dict(dtype=c.jnp_dtype, param_dtype=c.jnp_param_dtype)
        e = c.max_num_embodiments
        if c.use_vlln:
            self.vlln = _layer_norm(1e-5, True, **kw)
            self.vl_self_attention = VLSelfAttention(c, self.deterministic)
        self.state_encoder = CategorySpecificMLP(e, c.max_state_dim, c.hidden_size, c.input_embedding_dim, **kw)
        self.action_encoder = MultiEmbodimentActionEncoder(e, c.action_dim, c.input_embedding_dim, **kw)
        self.action_decoder = CategorySpecificMLP(e, c.hidden_size, c.hidden_size, c.action_dim, **kw)
        emb_init = nn.initializers.normal(0.02)
        self.future_tokens = nn.Embed(c.num_target_vision_tokens, c.input_embedding_dim, embedding_init=emb_init,
                                      **kw)
        if c.add_pos_embed:
            self.position_embedding = nn.Embed(c.max_seq_len, c.input_embedding_dim, embedding_init=emb_init, **kw)
        self.dit = DiT(c, self.deterministic)
        if c.value_head_hidden_dims:
            self.value_head = ValueHead(c.value_head_hidden_dims, **kw)

    def encode_context(self, vl_tokens: Array, state: Array, embodiment_id: Array) -> HeadContext:
        """vl_tokens: (B, S, backbone_dim) backbone features; state: (B, Ts, max_state_dim); embodiment_id: (B,)."""
        vl = vl_tokens.astype(self.config.jnp_dtype)
        if self.config.use_vlln:
            vl = self.vl_self_attention(self.vlln(vl))
        state_features = self.state_encoder(state, embodiment_id)
        k, v = self.dit.project_cross_kv(vl)
        return HeadContext(vl, state_features, k, v, embodiment_id)

    def velocity(self, context: HeadContext, x_t: Array, t_bucket: Array) -> Array:
        """x_t: (B, horizon, action_dim); t_bucket: (B,) int. Returns the predicted velocity, same shape as x_t."""
        c = self.config
        emb = context.embodiment_id
        a = self.action_encoder(x_t.astype(c.jnp_dtype), t_bucket, emb)
        if c.add_pos_embed:
            a = a + self.position_embedding(jnp.arange(a.shape[1]))[None]  # action tokens only
        b = a.shape[0]
        future = jnp.broadcast_to(self.future_tokens.embedding.astype(a.dtype)[None],
                                  (b, c.num_target_vision_tokens, c.input_embedding_dim))
        tokens = jnp.concatenate([context.state_features.astype(a.dtype), future, a], axis=1)
        out = self.dit(tokens, (context.cross_k, context.cross_v), t_bucket)
        # The decoder is per token, so decoding only the action tokens equals decoding all and slicing.
        return self.action_decoder(out[:, -x_t.shape[1]:], emb)

    def value(self, context: HeadContext) -> Array:
        """RLinf ``get_value`` (mean_token mode): critic(mean_S(vl_tokens) ++ flatten(state_features)) -> (B,)."""
        b = context.vl_tokens.shape[0]
        x = jnp.concatenate([jnp.mean(context.vl_tokens, axis=1), context.state_features.reshape(b, -1)], axis=-1)
        return self.value_head(x)[:, 0]

    def __call__(self, vl_tokens: Array, state: Array, embodiment_id: Array, x_t: Array, t_bucket: Array) -> Array:
        """Full single-step pass (creates every parameter at init)."""
        context = self.encode_context(vl_tokens, state, embodiment_id)
        if self.config.value_head_hidden_dims:
            self.value(context)
        return self.velocity(context, x_t, t_bucket)


# ------------------------------------------------------------------------------------------ params-first facade

@dataclasses.dataclass(frozen=True)
class FlowmatchingActionHead:
    """GR00T N1.5's action head as pure functions of ``params`` (jit them as you need; all shapes static).

    Inputs everywhere: vl_tokens (B, S, backbone_dim) = backbone features BEFORE vlln; state (B, 1, max_state_dim)
    (normalised, zero-padded); embodiment_id (B,) int in [0, max_num_embodiments).
    """

    config: ActionHeadConfig

    def module(self, deterministic: bool = True) -> ActionHeadModule:
        return ActionHeadModule(self.config, deterministic)

    def init(self, rng: Array, batch_size: int = 1, num_vl_tokens: int = 4) -> dict:
        return self.module().init(rng, *self._dummy_inputs(batch_size, num_vl_tokens))["params"]

    def param_shapes(self) -> dict:
        """The parameter tree as ``jax.ShapeDtypeStruct`` leaves, without allocating anything."""
        return jax.eval_shape(self.init, jax.random.key(0))

    def _dummy_inputs(self, batch_size: int, num_vl_tokens: int) -> tuple:
        c = self.config
        return (jnp.zeros((batch_size, num_vl_tokens, c.backbone_embedding_dim), c.jnp_dtype),
                jnp.zeros((batch_size, 1, c.max_state_dim), c.jnp_dtype),
                jnp.zeros((batch_size,), jnp.int32),
                jnp.zeros((batch_size, c.action_horizon, c.action_dim), c.jnp_dtype),
                jnp.zeros((batch_size,), jnp.int32))

    def _apply(self, params: dict, method: str, *args: Any, dropout_rng: Array | None = None) -> Any:
        module = self.module(deterministic=dropout_rng is None)
        rngs = {} if dropout_rng is None else {"dropout": dropout_rng}
        return module.apply({"params": params}, *args, method=getattr(ActionHeadModule, method), rngs=rngs)

    def encode_context(self, params: dict, vl_tokens: Array, state: Array, embodiment_id: Array, *,
                       dropout_rng: Array | None = None) -> HeadContext:
        """vlln + VL self-attention + state encoder + DiT cross K/V: the step-independent part. Dropout is active
        only when ``dropout_rng`` is given."""
        embodiment_id = self._check_embodiment(embodiment_id)
        return self._apply(params, "encode_context", vl_tokens, state, embodiment_id, dropout_rng=dropout_rng)

    def velocity_from_context(self, params: dict, context: HeadContext, x_t: Array, t_bucket: Array, *,
                              dropout_rng: Array | None = None) -> Array:
        """One DiT call: x_t (B, horizon, action_dim), t_bucket (B,) int -> velocity (B, horizon, action_dim)."""
        t_bucket = jnp.broadcast_to(jnp.asarray(t_bucket, jnp.int32), (x_t.shape[0],))
        return self._apply(params, "velocity", context, x_t, t_bucket, dropout_rng=dropout_rng)

    def velocity(self, params: dict, x_t: Array, t_bucket: Array, state: Array, embodiment_id: Array,
                 vl_tokens: Array) -> Array:
        """Velocity at (x_t, t_bucket) from raw backbone features: encode_context + velocity_from_context."""
        context = self.encode_context(params, vl_tokens, state, embodiment_id)
        return self.velocity_from_context(params, context, x_t, t_bucket)

    def value(self, params: dict, context: HeadContext) -> Array:
        """RLinf critic value (B,) of the observation encoded in ``context``."""
        if not self.config.value_head_hidden_dims:
            raise ValueError("this ActionHeadConfig has no value head (value_head_hidden_dims=())")
        return self._apply(params, "value", context)

    def get_action(self, params: dict, vl_tokens: Array, state: Array, embodiment_id: Array, *,
                   denoising_steps: int | None = None, noise: Array | None = None,
                   rng: Array | None = None) -> Array:
        """Euler integration of the flow from t = 0 (noise) to t = 1, as the reference ``get_action``.

        denoising_steps: N (default: config.num_inference_timesteps, 4 for N1.5); buckets int(i/N*1000).
        noise: the initial x_0, (B, horizon, action_dim); else drawn from ``rng`` (standard normal).
        Returns the normalised action chunk (B, horizon, action_dim) in the compute dtype.
        """
        c = self.config
        steps = c.num_inference_timesteps if denoising_steps is None else int(denoising_steps)
        buckets = jnp.asarray(denoising_buckets(steps, c.num_timestep_buckets))
        context = self.encode_context(params, vl_tokens, state, embodiment_id)
        b = vl_tokens.shape[0]
        shape = (b, c.action_horizon, c.action_dim)
        if noise is None:
            if rng is None:
                raise ValueError("get_action needs either `noise` or `rng`")
            noise = jax.random.normal(rng, shape, c.jnp_dtype)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {shape}")
        dt = 1.0 / steps

        def euler_step(i, x):
            v = self.velocity_from_context(params, context, x, jnp.full((b,), buckets[i]))
            # x + dt * v with torch's rounding: the product is rounded to the model dtype before the add.
            step = (v.astype(jnp.float32) * dt).astype(x.dtype)
            return (x.astype(jnp.float32) + step.astype(jnp.float32)).astype(x.dtype)

        return jax.lax.fori_loop(0, steps, euler_step, noise.astype(c.jnp_dtype))

    def sample_time(self, rng: Array, batch_size: int, dtype: Any = jnp.float32) -> Array:
        """Training time t = (s - u) / s with u ~ Beta(alpha, beta) (s = 0.999): in (-0.001, 1], skewed to t ~ 0."""
        c = self.config
        u = jax.random.beta(rng, c.noise_beta_alpha, c.noise_beta_beta, (batch_size,)).astype(dtype)
        return (c.noise_s - u) / c.noise_s

    def flow_matching_loss(self, params: dict, vl_tokens: Array, state: Array, embodiment_id: Array,
                           actions: Array, action_mask: Array, *, rng: Array | None = None,
                           noise: Array | None = None, t: Array | None = None,
                           dropout_rng: Array | None = None) -> Array:
        """The reference training loss: masked MSE between the predicted and true velocity ``action - noise``.

        actions, action_mask: (B, horizon, action_dim). noise (same shape) and t (B,) are drawn from ``rng`` unless
        given. Dropout is active only when ``dropout_rng`` is given. Returns a scalar (float32).
        """
        b = actions.shape[0]
        if noise is None or t is None:
            if rng is None:
                raise ValueError("flow_matching_loss needs `rng` unless both `noise` and `t` are given")
            noise_rng, t_rng = jax.random.split(rng)
            noise = jax.random.normal(noise_rng, actions.shape, actions.dtype) if noise is None else noise
            t = self.sample_time(t_rng, b, actions.dtype) if t is None else t
        t3 = t[:, None, None]
        x_t = (1 - t3) * noise + t3 * actions
        target = actions - noise
        # .long() in the reference truncates toward zero; t can be slightly negative (u > s), giving -1.
        t_bucket = (t * self.config.num_timestep_buckets).astype(jnp.int32)
        ctx_rng = vel_rng = None
        if dropout_rng is not None:
            ctx_rng, vel_rng = jax.random.split(dropout_rng)
        context = self.encode_context(params, vl_tokens, state, embodiment_id, dropout_rng=ctx_rng)
        pred = self.velocity_from_context(params, context, x_t, t_bucket, dropout_rng=vel_rng)
        err = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)) * action_mask.astype(jnp.float32)
        return jnp.sum(err) / jnp.sum(action_mask.astype(jnp.float32))

    def _check_embodiment(self, embodiment_id: Any) -> Array:
        ids = jnp.asarray(embodiment_id, jnp.int32)
        if not isinstance(ids, jax.core.Tracer):
            bad = np.asarray(ids)[(np.asarray(ids) < 0) | (np.asarray(ids) >= self.config.max_num_embodiments)]
            if bad.size:
                raise ValueError(f"embodiment_id {bad.tolist()} outside [0, {self.config.max_num_embodiments})")
        return ids


# -------------------------------------------------------------------------------------------- checkpoint key map

def action_head_key_rules(config: ActionHeadConfig, torch_prefix: str = "action_head.",
                          flax_prefix: tuple[str, ...] = ("action_head",)) -> list[KeyRule]:
    """Every torch tensor of ``FlowmatchingActionHead`` (and RLinf's value head when configured) <-> its Flax leaf."""
    rules: list[KeyRule] = []

    def add(torch_key: str, path: tuple[str, ...], transform: str = "identity", index: int | None = None,
            size: int | None = None) -> None:
        rules.append(KeyRule(torch_prefix + torch_key, flax_prefix + path, transform, index, size))

    def linear(torch_name: str, path: tuple[str, ...], index: int | None = None, size: int | None = None) -> None:
        add(f"{torch_name}.weight", path + ("kernel",), "linear", index, size)
        add(f"{torch_name}.bias", path + ("bias",), "identity", index, size)

    def category_linear(torch_name: str, path: tuple[str, ...]) -> None:
        add(f"{torch_name}.W", path + ("W",))
        add(f"{torch_name}.b", path + ("b",))

    def feed_forward(torch_block: str, path: tuple[str, ...], index: int, size: int) -> None:
        linear(f"{torch_block}.ff.net.0.proj", path + ("ff", "proj_in"), index, size)
        linear(f"{torch_block}.ff.net.2", path + ("ff", "proj_out"), index, size)

    c = config
    if c.use_vlln:
        add("vlln.weight", ("vlln", "scale"))
        add("vlln.bias", ("vlln", "bias"))
        n = c.vl_self_attention.num_layers
        for i in range(n):
            tb, p = f"vl_self_attention.transformer_blocks.{i}", ("vl_self_attention", "blocks", "block")
            add(f"{tb}.norm1.weight", p + ("norm1", "scale"), index=i, size=n)
            add(f"{tb}.norm1.bias", p + ("norm1", "bias"), index=i, size=n)
            for proj in ("to_q", "to_k", "to_v"):
                linear(f"{tb}.attn1.{proj}", p + ("attn", proj), i, n)
            linear(f"{tb}.attn1.to_out.0", p + ("attn", "to_out"), i, n)
            add(f"{tb}.norm3.weight", p + ("norm3", "scale"), index=i, size=n)
            add(f"{tb}.norm3.bias", p + ("norm3", "bias"), index=i, size=n)
            feed_forward(tb, p, i, n)
    for layer in ("layer1", "layer2"):
        category_linear(f"state_encoder.{layer}", ("state_encoder", layer))
        category_linear(f"action_decoder.{layer}", ("action_decoder", layer))
    for w in ("W1", "W2", "W3"):
        category_linear(f"action_encoder.{w}", ("action_encoder", w))
    add("future_tokens.weight", ("future_tokens", "embedding"))
    if c.add_pos_embed:
        add("position_embedding.weight", ("position_embedding", "embedding"))

    linear("model.timestep_encoder.timestep_embedder.linear_1", ("dit", "timestep_encoder", "linear_1"))
    linear("model.timestep_encoder.timestep_embedder.linear_2", ("dit", "timestep_encoder", "linear_2"))
    pairs = c.dit.num_pairs
    for i in range(c.dit.num_layers):
        j, cross = divmod(i, 2)[0], i % 2 == 0
        tb = f"model.transformer_blocks.{i}"
        p = ("dit", "pairs", "cross_attn_block" if cross else "self_attn_block")
        linear(f"{tb}.norm1.linear", p + ("norm1", "linear"), j, pairs)
        linear(f"{tb}.attn1.to_q", p + ("attn", "to_q"), j, pairs)
        for proj in ("to_k", "to_v"):
            # Cross blocks' K/V projections live outside the scanned pairs (projected once per call).
            linear(f"{tb}.attn1.{proj}", ("dit", "cross_kv", "blocks", proj) if cross else p + ("attn", proj),
                   j, pairs)
        linear(f"{tb}.attn1.to_out.0", p + ("attn", "to_out"), j, pairs)
        feed_forward(tb, p, j, pairs)
    linear("model.proj_out_1", ("dit", "proj_out_1"))
    linear("model.proj_out_2", ("dit", "proj_out_2"))

    if c.value_head_hidden_dims:  # RLinf: mlp.{0,2,4,...} are the Linears, the odd indices their ReLUs
        for i in range(len(c.value_head_hidden_dims) + 1):
            linear(f"value_head.mlp.{2 * i}", ("value_head", f"dense_{i}"))
    return rules
