"""The whole GR00T N1.5 policy network in Flax: Eagle 2.5 VL backbone feeding the flow-matching action head.

``GR00TN15(config)`` is a params-first facade (like ``FlowmatchingActionHead``): it holds only the config, every
method takes ``params`` explicitly, so callers ``jax.jit`` whichever entry point they time or train, with the
params as an argument. One inference call (``get_action``), as the reference ``GR00T_N1_5.get_action``:

  features = EagleBackbone(eagle_input_ids, eagle_attention_mask, eagle_pixel_values)     # (B, L, 2048), once
  actions  = FlowmatchingActionHead.get_action(features, state, embodiment_id, noise)     # (B, 16, 32)

Parameter tree: ``{"backbone": EagleBackbone params, "action_head": FlowmatchingActionHead params}``, the layout
``gr00t_port.convert`` writes, so a converted checkpoint's ``params`` item loads as is.

Input dict (the processor's output with ``pixel_layout="NHWC"``; extra keys such as ``state_mask`` are ignored):
  eagle_input_ids       (B, L) int
  eagle_attention_mask  (B, L) int/bool, 0 at padding (the action head uses no mask: see spec 2.7)
  eagle_pixel_values    (B*T*V, S, S, 3) float in [-1, 1], NHWC, sample-major then time then view
  state                 (B, 1, max_state_dim) float, normalised and zero-padded
  embodiment_id         (B,) int, the projector index (e.g. 31 for new_embodiment)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gr00t_port.action_head import FlowmatchingActionHead
from gr00t_port.config import GR00TConfig
from gr00t_port.eagle import EagleBackbone, check_inputs

Array = jax.Array
# Same axis name as jaxrl_isaac.sharding's learner mesh ("data", "fsdp"); gr00t_port does not import jaxrl_isaac.
FSDP_AXIS = "fsdp"
# Leaves smaller than this stay replicated under FSDP: sharding biases and norms saves nothing and costs gathers.
MIN_FSDP_ELEMENTS = 2**18
INPUT_KEYS = ("eagle_input_ids", "eagle_attention_mask", "eagle_pixel_values", "state", "embodiment_id")


@dataclasses.dataclass(frozen=True)
class GR00TN15:
    """GR00T N1.5 (backbone + action head) as pure functions of ``params``; all shapes static, jit-friendly."""

    config: GR00TConfig

    @property
    def backbone(self) -> EagleBackbone:
        return EagleBackbone(self.config.backbone)

    @property
    def action_head(self) -> FlowmatchingActionHead:
        return FlowmatchingActionHead(self.config.action_head)

    # ------------------------------------------------------------------------------------------------ params

    def init(self, rng: Array) -> dict:
        """Random params {"backbone": ..., "action_head": ...} in ``param_dtype`` (module initialisers)."""
        backbone_rng, head_rng = jax.random.split(rng)
        b = self.config.backbone
        ids = jnp.full((1, b.tokens_per_image), b.image_token_index, jnp.int32)
        pixels = jnp.zeros((1, b.vision.image_size, b.vision.image_size, b.vision.num_channels), jnp.float32)
        backbone = self.backbone.init(backbone_rng, ids, jnp.ones_like(ids), pixels)["params"]
        return {"backbone": backbone, "action_head": self.action_head.init(head_rng)}

    def param_shapes(self) -> dict:
        """The parameter tree as ``jax.ShapeDtypeStruct`` leaves (``jax.eval_shape``: nothing allocated)."""
        return jax.eval_shape(self.init, jax.random.key(0))

    def param_shardings(self, mesh: Mesh, fsdp_axis: str = FSDP_AXIS,
                        min_fsdp_elements: int = MIN_FSDP_ELEMENTS) -> dict:
        """A ``NamedSharding`` per leaf: replicated, except that when ``mesh`` has an ``fsdp_axis`` of size n > 1,
        each leaf of >= ``min_fsdp_elements`` elements is split over it along the larger of its last two axes
        that n divides (never a scanned layer axis, which ``nn.scan`` slices every step)."""
        n = dict(mesh.shape).get(fsdp_axis, 1)

        def sharding(leaf: jax.ShapeDtypeStruct) -> NamedSharding:
            if n == 1 or leaf.size < min_fsdp_elements:
                return NamedSharding(mesh, P())
            candidates = [a for a in range(max(leaf.ndim - 2, 0), leaf.ndim) if leaf.shape[a] % n == 0]
            if not candidates:
                return NamedSharding(mesh, P())
            axis = max(candidates, key=lambda a: leaf.shape[a])
            return NamedSharding(mesh, P(*[fsdp_axis if a == axis else None for a in range(leaf.ndim)]))

        return jax.tree.map(sharding, self.param_shapes())

    def make_sharded_params(self, mesh: Mesh, rng: Array, fsdp_axis: str = FSDP_AXIS,
                            min_fsdp_elements: int = MIN_FSDP_ELEMENTS) -> dict:
        """Random params created directly in their shardings (``param_shardings``) by one jitted init, so the
        full-size model is never materialised on a single device first."""
        shardings = self.param_shardings(mesh, fsdp_axis, min_fsdp_elements)
        return jax.jit(self.init, out_shardings=shardings)(rng)

    # ------------------------------------------------------------------------------------------------ forward

    def backbone_features(self, params: Mapping, inputs: Mapping[str, Any]) -> Array:
        """Eagle backbone on the ``eagle_*`` inputs -> backbone_features (B, L, backbone_dim) in the compute dtype."""
        ids, mask, pixels = _eagle_inputs(self.config, inputs)
        features, _ = self.backbone.apply({"params": params["backbone"]}, ids, mask, pixels)
        return features

    def action_head_get_action(self, params: Mapping, backbone_features: Array, state: Array, embodiment_id: Array,
                               *, rng: Array | None = None, noise: Array | None = None,
                               denoising_steps: int | None = None) -> Array:
        """Flow-matching sampler on given backbone features: (B, L, D), (B, 1, max_state_dim), (B,) ->
        (B, action_horizon, action_dim). ``noise`` is the initial x_0 (else drawn from ``rng``);
        ``denoising_steps`` defaults to ``config.action_head.num_inference_timesteps`` (4 for N1.5)."""
        state, embodiment_id = _head_inputs(self.config, backbone_features.shape[0], state, embodiment_id)
        return self.action_head.get_action(params["action_head"], backbone_features, state, embodiment_id,
                                           denoising_steps=denoising_steps, noise=noise, rng=rng)

    def get_action(self, params: Mapping, inputs: Mapping[str, Any], *, rng: Array | None = None,
                   noise: Array | None = None, denoising_steps: int | None = None) -> Array:
        """The reference ``GR00T_N1_5.get_action``: backbone once, then ``denoising_steps`` Euler steps of the
        action head. Returns the normalised action chunk (B, action_horizon, action_dim) in the compute dtype
        (the reference's ``action_pred``; ``Gr00tPolicy`` casts it to fp32 before unnormalising).

        noise: initial x_0 (B, action_horizon, action_dim) (inject it for parity tests and RL log-probs); else
        drawn from ``rng`` as a standard normal in the compute dtype.
        """
        missing = [k for k in INPUT_KEYS if k not in inputs]
        if missing:
            raise ValueError(f"GR00TN15 inputs lack {missing} (need {list(INPUT_KEYS)})")
        batch = jnp.shape(inputs["eagle_input_ids"])[0]
        _head_inputs(self.config, batch, inputs["state"], inputs["embodiment_id"])  # fail before the backbone runs
        features = self.backbone_features(params, inputs)
        return self.action_head_get_action(params, features, inputs["state"], inputs["embodiment_id"], rng=rng,
                                           noise=noise, denoising_steps=denoising_steps)


def _eagle_inputs(cfg: GR00TConfig, inputs: Mapping[str, Any]) -> tuple[Array, Array, Array]:
    missing = [k for k in INPUT_KEYS[:3] if k not in inputs]
    if missing:
        raise ValueError(f"GR00TN15 inputs lack {missing} (need {list(INPUT_KEYS)})")
    ids = jnp.asarray(inputs["eagle_input_ids"], jnp.int32)
    mask = jnp.asarray(inputs["eagle_attention_mask"], jnp.int32)
    pixels = jnp.asarray(inputs["eagle_pixel_values"])
    check_inputs(cfg.backbone, ids, mask, pixels)  # one-line errors for NCHW pixels, mismatched ids/mask, ...
    return ids, mask, pixels


def _head_inputs(cfg: GR00TConfig, batch: int, state: Any, embodiment_id: Any) -> tuple[Array, Array]:
    h = cfg.action_head
    state = jnp.asarray(state)
    if state.ndim != 3 or state.shape[0] != batch or state.shape[2] != h.max_state_dim:
        raise ValueError(f"GR00TN15: state must be (B={batch}, 1, max_state_dim={h.max_state_dim}); "
                         f"got shape {tuple(state.shape)}")
    embodiment_id = jnp.asarray(embodiment_id, jnp.int32)
    if embodiment_id.shape != (batch,):
        raise ValueError(f"GR00TN15: embodiment_id must be (B={batch},); got shape {tuple(embodiment_id.shape)}")
    return state, embodiment_id


# --------------------------------------------------------------------------------------- functional shortcuts

def init_params(cfg: GR00TConfig, rng: Array) -> dict:
    """``GR00TN15(cfg).init(rng)``."""
    return GR00TN15(cfg).init(rng)


def param_shapes(cfg: GR00TConfig) -> dict:
    """``GR00TN15(cfg).param_shapes()`` (no memory allocated; fine for the full 2.4 B model)."""
    return GR00TN15(cfg).param_shapes()


def make_sharded_params(cfg: GR00TConfig, mesh: Mesh, rng: Array, fsdp_axis: str = FSDP_AXIS,
                        min_fsdp_elements: int = MIN_FSDP_ELEMENTS) -> dict:
    """``GR00TN15(cfg).make_sharded_params(...)``: replicated on a mesh without an ``fsdp`` axis (or of size 1),
    FSDP-style split of the leaves of >= ``min_fsdp_elements`` elements otherwise."""
    return GR00TN15(cfg).make_sharded_params(mesh, rng, fsdp_axis, min_fsdp_elements)
