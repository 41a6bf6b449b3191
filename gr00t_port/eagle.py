"""GR00T N1.5's Eagle 2.5 VL backbone in Flax, and its checkpoint key rules.

Forward (``EagleBackbone.__call__``), as ``EagleBackbone.forward_eagle`` in the reference:
  1. embeds = embed_tokens(input_ids)                                   (B, L, D)
  2. vit = mlp1(SigLIP(pixel_values).last_hidden_state)                 (N_img, T_img, D)
  3. the k-th <IMG_CONTEXT> token in flattened (B, L) order gets the k-th vision token (in-order fill)
  4. Qwen3 layers [0, select_layer) with causal + padding mask, positions arange(L), then the final RMSNorm
  -> backbone_features (B, L, D) and the unchanged attention mask (``eagle_linear`` is Identity in N1.5).

Checkpoint tensors (prefix ``backbone.eagle_model.``): every one is either mapped by ``backbone_key_rules`` or
listed by ``dropped_keys`` (SigLIP's MAP pooling head and ``language_model.lm_head.weight``: stored, never used).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gr00t_port.backbone_config import EagleBackboneConfig
from gr00t_port.keymap import KeyRule, flax_to_torch_array, torch_to_flax_array
from gr00t_port.qwen3 import Qwen3Model, qwen3_key_rules
from gr00t_port.siglip import SiglipVisionModel, pooling_head_shapes, siglip_key_rules

TORCH_PREFIX = "backbone.eagle_model."
FLAX_PREFIX = ("backbone",)
LM_HEAD_KEY = "language_model.lm_head.weight"  # after TORCH_PREFIX


class EagleBackbone(nn.Module):
    """input_ids (B, L) int, attention_mask (B, L) {0,1}, pixel_values (N_img, H, W, C) NHWC in [-1, 1]
    -> (backbone_features (B, L, D), attention_mask (B, L)).

    ``pixel_values`` are ordered sample-major (then time, then view), the order of the <IMG_CONTEXT> runs in the
    prompts; ``N_img * tokens_per_image`` must equal the number of <IMG_CONTEXT> tokens in ``input_ids``
    (checked when ``input_ids`` is concrete; under ``jit`` the k-th token takes the k-th feature, clamped).
    """

    config: EagleBackboneConfig

    def setup(self):
        cfg = self.config
        dt, pdt = cfg.jnp_dtype, cfg.jnp_param_dtype
        self.vision_model = SiglipVisionModel(cfg.vision, dt, pdt, cfg.remat_policy)
        self.mlp1 = nn.Dense(cfg.text.hidden_size, dtype=dt, param_dtype=pdt)
        self.language_model = Qwen3Model(cfg.text, cfg.select_layer, dt, pdt, cfg.remat_policy)

    def encode_images(self, pixel_values: jax.Array) -> jax.Array:
        """(N_img, H, W, C) -> mlp1(SigLIP last_hidden_state): (N_img, tokens_per_image, D)."""
        return self.mlp1(self.vision_model(pixel_values))

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array, pixel_values: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
        check_inputs(self.config, input_ids, attention_mask, pixel_values)
        embeds = self.language_model.embed(input_ids)
        vision = self.encode_images(pixel_values)
        embeds = fill_image_tokens(embeds, input_ids, vision, self.config.image_token_index)
        return self.language_model(embeds, attention_mask), attention_mask


def check_inputs(cfg: EagleBackboneConfig, input_ids: jax.Array, attention_mask: jax.Array, pixel_values: jax.Array
                 ) -> None:
    """Shapes always; the <IMG_CONTEXT> count too when ``input_ids`` is concrete (not under ``jit``)."""
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(f"EagleBackbone: input_ids {tuple(input_ids.shape)} and attention_mask "
                         f"{tuple(attention_mask.shape)} must both be (B, L)")
    v = cfg.vision
    expected = (v.image_size, v.image_size, v.num_channels)
    if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
        raise ValueError(f"EagleBackbone: pixel_values must be NHWC (N_img, {', '.join(map(str, expected))}); "
                         f"got shape {tuple(pixel_values.shape)}")
    if not isinstance(input_ids, jax.core.Tracer):
        n_tokens = int((np.asarray(input_ids) == cfg.image_token_index).sum())
        n_images = pixel_values.shape[0]
        if n_tokens != n_images * cfg.tokens_per_image:
            raise ValueError(f"EagleBackbone: {n_tokens} <IMG_CONTEXT> tokens (id {cfg.image_token_index}) in "
                             f"input_ids but {n_images} images x {cfg.tokens_per_image} tokens = "
                             f"{n_images * cfg.tokens_per_image} vision tokens")


def fill_image_tokens(embeds: jax.Array, input_ids: jax.Array, vision: jax.Array, image_token_index: int
                      ) -> jax.Array:
    """Replace the embeddings of <IMG_CONTEXT> tokens, in flattened (B, L) order, by the rows of ``vision``.

    embeds (B, L, D); input_ids (B, L); vision (N_img, T_img, D) -> (B, L, D). Under a count mismatch the k-th
    token still takes the k-th vision row (clamped): ``check_inputs`` rejects that case outside ``jit``.
    """
    b, l, d = embeds.shape
    flat_vision = vision.reshape(-1, d).astype(embeds.dtype)
    is_image = (input_ids == image_token_index).reshape(-1)
    order = jnp.clip(jnp.cumsum(is_image) - 1, 0, flat_vision.shape[0] - 1)
    filled = jnp.where(is_image[:, None], flat_vision[order], embeds.reshape(-1, d))
    return filled.reshape(b, l, d)


# ----------------------------------------------------------------------------------------------- key rules


def backbone_key_rules(cfg: EagleBackboneConfig, torch_prefix: str = TORCH_PREFIX,
                       flax_prefix: tuple[str, ...] = FLAX_PREFIX) -> list[KeyRule]:
    """One rule per used backbone tensor, in the reference state_dict's order: SigLIP (embeddings, layers,
    post_layernorm), Qwen3 (``embed_tokens``, ``layers.{i}`` for i < select_layer, ``norm``), ``mlp1.0``.

    torch_prefix: where the Eagle model sits in the torch state_dict ("backbone.eagle_model." in GR00T checkpoints).
    flax_prefix: where ``EagleBackbone``'s params sit in the Flax tree (("backbone",) by default; () for the bare
      module).
    """
    return [
        *siglip_key_rules(cfg.vision, f"{torch_prefix}vision_model.vision_model.", (*flax_prefix, "vision_model")),
        *qwen3_key_rules(cfg.text, cfg.select_layer, f"{torch_prefix}language_model.model.",
                         (*flax_prefix, "language_model")),
        KeyRule(f"{torch_prefix}mlp1.0.weight", (*flax_prefix, "mlp1", "kernel"), "linear"),
        KeyRule(f"{torch_prefix}mlp1.0.bias", (*flax_prefix, "mlp1", "bias")),
    ]


def backbone_torch_keys(cfg: EagleBackboneConfig, torch_prefix: str = TORCH_PREFIX) -> list[str]:
    """Every backbone key of a GR00T checkpoint (rules and dropped), in the reference state_dict's order:
    SigLIP ... post_layernorm, SigLIP head.*, Qwen3 embed/layers/norm, lm_head, mlp1."""
    ruled = [r.torch_key for r in backbone_key_rules(cfg, torch_prefix)]
    dropped = list(dropped_keys(cfg, torch_prefix))
    lm_head = f"{torch_prefix}{LM_HEAD_KEY}"
    head = [k for k in dropped if k != lm_head]
    first_text = ruled.index(f"{torch_prefix}language_model.model.embed_tokens.weight")
    first_mlp1 = ruled.index(f"{torch_prefix}mlp1.0.weight")
    return [*ruled[:first_text], *head, *ruled[first_text:first_mlp1], lm_head, *ruled[first_mlp1:]]


def dropped_keys(cfg: EagleBackboneConfig, torch_prefix: str = TORCH_PREFIX) -> dict[str, tuple[int, ...]]:
    """Backbone tensors in GR00T checkpoints that the port does not use: torch key -> torch shape.

    * SigLIP's MAP pooling head ``vision_model.vision_model.head.*`` (its ``pooler_output`` is discarded).
    * ``language_model.lm_head.weight`` (logits unused; tied to ``embed_tokens``; may be absent from a checkpoint).
    A strict converter accepts these as present-and-ignored; ``recreate_dropped`` rebuilds them for export.
    """
    shapes = pooling_head_shapes(cfg.vision, f"{torch_prefix}vision_model.vision_model.")
    shapes[f"{torch_prefix}{LM_HEAD_KEY}"] = (cfg.text.vocab_size, cfg.text.hidden_size)
    return shapes


def recreate_dropped(cfg: EagleBackboneConfig, embed_tokens: np.ndarray,
                     originals: Mapping[str, np.ndarray] | None = None, torch_prefix: str = TORCH_PREFIX
                     ) -> dict[str, np.ndarray]:
    """The dropped tensors for a Flax -> torch export, so that the torch model loads with ``strict=True``.

    For each key of ``dropped_keys``: the tensor from ``originals`` (the source checkpoint) when present there with
    the right shape; otherwise ``lm_head.weight`` = a copy of ``embed_tokens`` (V, D) (what tying gives; note that
    the backbone is frozen in GR00T fine-tuning, so the tie is preserved) and the pooling head = zeros (never run).
    """
    out = {}
    lm_head = f"{torch_prefix}{LM_HEAD_KEY}"
    for key, shape in dropped_keys(cfg, torch_prefix).items():
        if originals is not None and key in originals and tuple(np.shape(originals[key])) == shape:
            out[key] = np.asarray(originals[key])
        elif key == lm_head:
            out[key] = np.array(embed_tokens, copy=True)
        else:
            out[key] = np.zeros(shape, dtype=np.asarray(embed_tokens).dtype)
    return out


# ------------------------------------------------------------------------------------- load / export helpers


def backbone_param_shapes(cfg: EagleBackboneConfig) -> Any:
    """``jax.eval_shape`` of the bare module's params (no memory allocated; fine for the full 1.3 B model)."""
    module = EagleBackbone(cfg)
    ids = jnp.full((1, cfg.tokens_per_image), cfg.image_token_index, jnp.int32)
    pixels = jnp.zeros((1, cfg.vision.image_size, cfg.vision.image_size, cfg.vision.num_channels), jnp.float32)
    variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), ids, jnp.ones_like(ids), pixels))
    return variables["params"]


def load_backbone_params(flat_torch_state: Mapping[str, np.ndarray], cfg: EagleBackboneConfig,
                         torch_prefix: str = TORCH_PREFIX) -> dict:
    """Torch-layout tensors -> the bare ``EagleBackbone``'s params, through ``backbone_key_rules`` (strict).

    Keys outside ``torch_prefix`` (e.g. the action head) are ignored; inside it, every tensor must be mapped by a
    rule or listed by ``dropped_keys`` (``lm_head.weight`` may be missing), and every Flax leaf must be filled with
    the expected shape. Values are cast to ``cfg.param_dtype``.
    """
    rules = backbone_key_rules(cfg, torch_prefix, flax_prefix=())
    dropped = dropped_keys(cfg, torch_prefix)
    ruled = {r.torch_key for r in rules}
    unknown = sorted(k for k in flat_torch_state if k.startswith(torch_prefix) and k not in ruled and k not in dropped)
    if unknown:
        raise ValueError(f"load_backbone_params: {len(unknown)} backbone tensors have no rule, e.g. {unknown[:3]}")
    missing = sorted(k for k in ruled if k not in flat_torch_state)
    if missing:
        raise ValueError(f"load_backbone_params: {len(missing)} backbone tensors missing, e.g. {missing[:3]}")

    expected = backbone_param_shapes(cfg)
    dtype = cfg.jnp_param_dtype
    stacks: dict[tuple[str, ...], list] = {}
    flat: dict[tuple[str, ...], np.ndarray] = {}
    for rule in rules:
        value = torch_to_flax_array(np.asarray(flat_torch_state[rule.torch_key]), rule.transform)
        if rule.stack_index is None:
            flat[rule.flax_path] = value
        else:
            stacks.setdefault(rule.flax_path, [None] * rule.stack_size)[rule.stack_index] = value
    for path, layers in stacks.items():
        flat[path] = np.stack(layers)

    expected_flat = {tuple(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(expected)}
    if set(flat) != set(expected_flat):
        extra, absent = sorted(set(flat) - set(expected_flat)), sorted(set(expected_flat) - set(flat))
        raise ValueError(f"load_backbone_params: rules and module disagree: extra {extra[:3]}, unfilled {absent[:3]}")
    for path, value in flat.items():
        if value.shape != expected_flat[path].shape:
            raise ValueError(f"load_backbone_params: {'/'.join(path)} has shape {value.shape} after conversion, "
                             f"expected {expected_flat[path].shape}")
    params: dict = {}
    for path, value in flat.items():
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jnp.asarray(value, dtype=dtype)
    return params


def export_backbone_state(params: Mapping, cfg: EagleBackboneConfig, originals: Mapping[str, np.ndarray] | None = None,
                          torch_prefix: str = TORCH_PREFIX) -> dict[str, np.ndarray]:
    """The bare ``EagleBackbone``'s params -> torch-layout tensors, dropped tensors re-created (``recreate_dropped``),
    keys in the reference state_dict's order (``backbone_torch_keys``).

    Arrays keep the params' dtype (cast when saving, e.g. to bf16 as in released checkpoints).
    """
    out: dict[str, np.ndarray] = {}
    for rule in backbone_key_rules(cfg, torch_prefix, flax_prefix=()):
        leaf = params
        for key in rule.flax_path:
            leaf = leaf[key]
        value = np.array(leaf)  # a writable host copy (torch.from_numpy refuses read-only buffers)
        if rule.stack_index is not None:
            value = value[rule.stack_index]
        out[rule.torch_key] = flax_to_torch_array(value, rule.transform)
    embed = out[f"{torch_prefix}language_model.model.embed_tokens.weight"]
    out.update(recreate_dropped(cfg, embed, originals, torch_prefix))
    return {key: out[key] for key in backbone_torch_keys(cfg, torch_prefix)}
