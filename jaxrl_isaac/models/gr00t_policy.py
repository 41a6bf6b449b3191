"""GR00T N1.5 as an RL policy behind the runner's ``Policy`` interface (RLinf's ``GR00T_N1_5_ForRLActionPrediction``).

One policy call (``sample``), as RLinf's rollout (docs/gr00t_n15_spec.md §5.2-5.4):

  features = EagleBackbone(ids, mask, pixels)                         # once per observation (frozen by default)
  context  = action_head.encode_context(features, state, embodiment)  # vlln + VL self-attention + state token
  x_0 ~ N(0, I)  (B, H=16, D=32);  k ~ U{0..K-1} per sample              # K = denoising_steps = 4
  for i < K:  v_i = velocity(context, x_i, bucket int(i/K*1000))
              x_{i+1} = x_i + v_i / K            if i != k             # deterministic Euler step
              x_{i+1} ~ N(mean_k, std_k²)         if i == k             # Flow-SDE step (``flow_sde``)
  logprob  = Σ over the C executed steps x A real dims of log N(x_{k+1}; mean_k, std_k²)
  value    = critic(mean VL token ++ state token)                      # RLinf's value head, (B,)
  actions  = gripper_rule(unnormalize(x_K))[:, :C, :A]                 # what the env executes

``train_inputs`` = {"chain": x_0..x_K (B, K+1, H, D) float32, "denoise_step": k (B,) int32}; ``evaluate`` reruns
the backbone and ONE DiT call at step k on the stored ``chain[:, k]`` and scores the stored ``chain[:, k+1]``
under the new params (teacher-forced, nothing resampled), so at the rollout params the PPO ratio is 1.

Decisions (spec references in brackets):
* k is drawn per sample (RLinf: one k per call for the whole batch, Python RNG); same marginal, and jittable.
  ``ignore_last`` excludes k = K-1 for every noise method (RLinf reads it for flow_sde only; flow_cps's last
  step has std 0, i.e. log-prob 0 and no learning signal, so excluding it there is what one wants).
* The chain, the transition arithmetic and the log-density are float32 even with ``precision: bf16`` (RLinf does
  them in bf16); the network sees each chain state rounded to its compute dtype. [§5.4]
* The padded action space: GR00T always predicts D = 32 dims (horizon 16); only the first C steps and the first
  A = 7 (``valid_action_dim``) dims enter the log-prob and the entropy; the padded dims and the unexecuted steps
  are still integrated (they condition later steps through the DiT) but carry no probability mass. [§5.4]
* ``joint_logprob``: every step is stochastic and the log-prob is the SUM over the K transitions (the chain's
  log-density given x_0). RLinf averages over K + 1 terms including the N(0, I) prior of x_0, which is
  parameter-free; its N1.5 recompute path is broken (reads a missing ``config.num_steps``). [§5.4]
* ``flow_noise`` (RLinf's N1.5 ``reinflow``): std = ExploreNoiseNet(DiT output of the action tokens), an MLP
  hidden_size -> 128 -> 64 -> D with tanh, squashed to std in [0.08, 0.16]; it conditions on the observation, the
  chain state and the step through the DiT features. [rlinf_embodied_spec §5.3]
* Value head: ``FlowmatchingActionHead.value`` = RLinf's ``get_value`` in ``mean_token`` mode (mean over all L VL
  tokens, pads included, after vlln + VL self-attention, ++ state token). ``detach_critic_input`` (RLinf's key,
  True in its gr00t.yaml) stops the value loss's gradient at that input, so the critic cannot reshape the features
  the actor uses; RLinf's N1.5 code ignores the key and always lets it through (``detach_critic_input: False``
  reproduces that). Created with RLinf's init when the checkpoint has none. [§5.3]
* Trainable: the action head and the value head (and the noise net); the backbone is frozen unless
  ``tune_visual`` (SigLIP + mlp1) / ``tune_llm`` (Qwen3). ``evaluate`` stops gradients at frozen params, so no
  backbone gradient is computed; the optimizer must also skip them (``is_trainable_param``). [§5.5]
* ``cache_backbone_features`` (ours): with the backbone frozen its features are a fixed function of the observation,
  so ``sample`` stores them in ``train_inputs`` and ``evaluate`` starts from them instead of running the backbone
  again on every sample of every update epoch. Identical log-probs (the stored features are the ones the rollout
  used); the price is L x backbone_dim values per sample in the trajectory.
* Dropout is off everywhere (RLinf ``disable_dropout: True``); ``disable_dropout: False`` is refused.
* ``act`` (eval mode) integrates deterministically from x_0 = 0 (the prior's mean) unless given an ``rng``, in
  which case x_0 ~ N(0, I) as RLinf's eval rollout; the evaluator passes one (``eval_samples_noise``), because
  PPO trains the policy from sampled x_0, and the x_0 = 0 path alone is not what it improves.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch

from gr00t_port.action_head import (ActionHeadModule, DiT, FlowmatchingActionHead, HeadContext, ValueHead,
                                    denoising_buckets)
from gr00t_port.config import GR00TConfig
from gr00t_port.model import GR00TN15
from gr00t_port.processor import GR00TProcessor
from jaxrl_isaac.envs import obs_mapping
from jaxrl_isaac.models import flow_sde
from jaxrl_isaac.models.policy import PolicyEval, PolicySample

Array = jax.Array
OBS_KEYS = ("eagle_input_ids", "eagle_attention_mask", "eagle_images", "state", "embodiment_id")
# Env-action conventions of RLinf's simulation_io: the 7th dim is the gripper command.
ACTION_CONVERTERS = ("isaaclab_stack_cube", "libero")
LOGPROB_TYPES = ("chunk_level", "action_level")
VALUE_HEAD = "value_head"
NOISE_NET = "explore_noise_net"
# train_inputs key of the rollout's backbone features (B, L, backbone_dim), with cache_backbone_features.
BACKBONE_FEATURES = "backbone_features"
# Backbone sub-trees and the switch that makes them trainable (Isaac-GR00T's set_trainable_parameters).
_BACKBONE_SWITCHES = {"vision_model": "tune_visual", "mlp1": "tune_visual", "language_model": "tune_llm"}
_PIXEL_SCALE = np.float32(127.5)
# Eagle's (u8 - 127.5) / 127.5 per uint8 level, rounded once in numpy: XLA would turn the division by a constant
# into a multiplication by its reciprocal, 1 ulp away from the processor's (and the reference's) pixels.
_PIXEL_LUT = (np.arange(256, dtype=np.float32) - _PIXEL_SCALE) / _PIXEL_SCALE


@dataclasses.dataclass(frozen=True)
class GR00TRLConfig:
    """How GR00T N1.5 becomes a stochastic policy with log-probs and a value (``actor.model`` + its
    ``rl_head_config``). Defaults: RLinf's IsaacLab stack-cube recipe.

    action_dim: A, real action dims (must equal the checkpoint's ``valid_action_dim``, 7 for Franka).
    num_action_chunks: C <= action horizon (16); the first C predicted steps are executed.
    denoising_steps: K Euler steps (overrides the head's num_inference_timesteps, as RLinf).
    noise_method / noise_level / joint_logprob / ignore_last: see ``jaxrl_isaac.models.flow_sde``.
    value_head_hidden_dims: RLinf's critic MLP; () with add_value_head=False.
    noise_net_hidden_dims / noise_std_range: the learned-noise head (flow_noise), RLinf's (128, 64), [0.08, 0.16].
    logprob_type: chunk_level (sum over C x A -> (B,)) or action_level (keep (B, C, A)).
    action_converter: gripper rule of the env: ``isaaclab_stack_cube`` sign(g), ``libero`` sign(1 - 2g).
    """

    action_dim: int = 7
    num_action_chunks: int = 16
    denoising_steps: int = 4
    noise_method: str = "flow_sde"
    noise_level: float = 0.5
    joint_logprob: bool = False
    ignore_last: bool = False
    add_value_head: bool = True
    value_head_hidden_dims: tuple[int, ...] = (1024, 512, 256)
    noise_net_hidden_dims: tuple[int, ...] = (128, 64)
    noise_std_range: tuple[float, float] = (0.08, 0.16)
    tune_visual: bool = False
    tune_llm: bool = False
    cache_backbone_features: bool = False
    detach_critic_input: bool = False
    logprob_type: str = "chunk_level"
    action_converter: str = "isaaclab_stack_cube"

    def __post_init__(self):
        flow_sde.check_noise_method(self.noise_method)
        if self.denoising_steps < 1:
            raise ValueError(f"actor.model.denoising_steps={self.denoising_steps} must be >= 1")
        if self.ignore_last and not self.joint_logprob and self.denoising_steps < 2:
            raise ValueError(f"rl_head_config.ignore_last=True needs denoising_steps >= 2, got {self.denoising_steps}")
        if self.noise_level <= 0:
            raise ValueError(f"rl_head_config.noise_level={self.noise_level} must be > 0")
        if self.logprob_type not in LOGPROB_TYPES:
            raise ValueError(f"algorithm.logprob_type={self.logprob_type!r} is not supported by the GR00T policy "
                             f"(supported: {LOGPROB_TYPES})")
        if self.action_converter not in ACTION_CONVERTERS:
            raise ValueError(f"actor.model.obs_converter_type={self.action_converter!r} is not one of "
                             f"{ACTION_CONVERTERS}")
        if self.add_value_head and not self.value_head_hidden_dims:
            raise ValueError("add_value_head=True needs non-empty value_head_hidden_dims")
        lo, hi = self.noise_std_range
        if not 0 < lo <= hi:
            raise ValueError(f"noise_std_range={self.noise_std_range} must satisfy 0 < min <= max")

    @property
    def caches_backbone_features(self) -> bool:
        """Whether ``sample`` stores the backbone features for ``evaluate``: asked for, and the backbone frozen
        (so the features under the learner's params are the rollout's, exactly)."""
        return self.cache_backbone_features and not (self.tune_visual or self.tune_llm)

    @property
    def learned_noise(self) -> bool:
        return self.noise_method in flow_sde.LEARNED_NOISE_METHODS


class ExploreNoiseNet(nn.Module):
    """RLinf's ``ExploreNoiseNet`` (``noise_scheduler_type="learn"``): per-element std from DiT features.

    std = exp(0.5 * (lv_min + (lv_max - lv_min) * (tanh(mlp(h)) + 1) / 2)), lv = log(std_range²), so std stays
    in ``std_range``. Linear layers use torch's default init (U(+-1/sqrt(fan_in)) for weights and biases)."""

    hidden_dims: tuple[int, ...]
    out_dim: int
    std_range: tuple[float, float]
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Array) -> Array:
        """features: (B, H, hidden_size) -> std (B, H, out_dim) float32."""
        x = features.astype(jnp.float32)
        widths = (*self.hidden_dims, self.out_dim)
        for i, width in enumerate(widths):
            bound = 1.0 / math.sqrt(x.shape[-1])
            x = nn.Dense(width, dtype=jnp.float32, param_dtype=self.param_dtype,
                         kernel_init=nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
                         bias_init=lambda key, shape, dtype, b=bound: jax.random.uniform(key, shape, dtype, -b, b),
                         name=f"dense_{i}")(x)
            if i < len(widths) - 1:
                x = jnp.tanh(x)
        lv_min, lv_max = (math.log(s ** 2) for s in self.std_range)
        logvar = lv_min + (lv_max - lv_min) * (jnp.tanh(x) + 1.0) / 2.0
        return jnp.exp(0.5 * logvar)


class GR00TRLPolicy:
    """Implements ``jaxrl_isaac.models.policy.Policy`` with GR00T N1.5 (see the module docstring).

    Args:
      rl: the RL settings.
      model_config: the network (``GR00TConfig``); its denoising steps and value head are set from ``rl``.
      processor: turns env observations into model inputs; its ``pad_to_length`` must be set (fixed shapes at the
        jit boundary) and its ``pixel_layout`` must be NHWC.
      quat_order: the env's ``quat_order`` ("wxyz" IsaacLab 2.x, "xyzw" IsaacLab 3.0 / embedded).
      task_description: the instruction fed to the model.
      state_fn: the env's 8-dim state builder (default: RLinf's eef pos + axis-angle + gripper).
      checkpoint: a converted checkpoint (``.../global_step_0`` from ``python -m gr00t_port.convert``) that
        ``init`` loads; None: ``init`` returns ``base_params`` or random params.
      base_params: explicit params {"backbone", "action_head"} (tests); heads missing from them are created.
    """

    eval_samples_noise = True  # the evaluator passes act() an rng: x_0 ~ N(0, I) as RLinf's eval mode

    def __init__(self, rl: GR00TRLConfig, model_config: GR00TConfig, processor: GR00TProcessor, *,
                 quat_order: str, task_description: str, state_fn: obs_mapping.StateFn | None = None,
                 checkpoint: str | os.PathLike | None = None, base_params: Mapping | None = None):
        head_cfg = model_config.action_head.replace(
            num_inference_timesteps=rl.denoising_steps,
            value_head_hidden_dims=tuple(rl.value_head_hidden_dims) if rl.add_value_head else ())
        self.rl = rl
        self.model_config = GR00TConfig(backbone=model_config.backbone, action_head=head_cfg)
        self.model = GR00TN15(self.model_config)
        self.head = FlowmatchingActionHead(head_cfg)
        self.processor = processor
        self.quat_order = quat_order
        self.task_description = task_description
        self.state_fn = state_fn or obs_mapping.eef_axis_angle_gripper_state
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.base_params = base_params
        self.action_dim = rl.action_dim
        self.num_action_chunks = rl.num_action_chunks
        self._check_consistency()
        self._buckets = denoising_buckets(rl.denoising_steps, head_cfg.num_timestep_buckets)
        self._action_decoders = self._build_action_decoders()

    # ------------------------------------------------------------------------------------------------ building

    @classmethod
    def from_config(cls, cfg: Any, env: Any, split: str = "train") -> "GR00TRLPolicy":
        """From the typed train config (``cfg.actor.model``, ``cfg.algorithm.logprob_type``,
        ``cfg.env.<split>.init_params.task_description``) and the env it will act in (for ``quat_order``, the
        task's own instruction when the config gives none, and an IsaacLab task's ``spec.state_fn``)."""
        from gr00t_port.normalization import EmbodimentMetadata
        from gr00t_port.processor import LIBERO_FRANKA_LAYOUT, RLINF_ISAACLAB_CONFIG, ModalityLayout, load_tokenizer

        m, h = cfg.actor.model, cfg.actor.model.rl_head_config
        model_path = m.model_path
        task = getattr(cfg.env, split).init_params.task_description or getattr(env, "task_description", None)
        if model_path is None and m.bootstrap is not None:
            if task:  # a prompt longer than padding_value fails here, not after minutes of SFT
                from jaxrl_isaac.sft import bootstrap_prompt_length
                _check_padding(h.padding_value, bootstrap_prompt_length(task, tokenizer_kind=m.bootstrap.tokenizer))
            model_path = bootstrap_checkpoint_for(cfg, split)
        if model_path is None:
            raise ValueError("actor.model.model_path must name a converted GR00T checkpoint (python -m "
                             "gr00t_port.convert SRC DST; then DST/global_step_0)")
        if m.is_lora:
            raise ValueError("actor.model.is_lora=True is not supported by the GR00T policy")
        if h.noise_anneal:
            raise ValueError("rl_head_config.noise_anneal=True is not supported (RLinf's N1.5 head has no global "
                             "step to anneal with either)")
        if h.use_vlm_value or h.value_vlm_mode != "mean_token":
            raise ValueError(f"rl_head_config: only use_vlm_value=False with value_vlm_mode='mean_token' is "
                             f"supported, got use_vlm_value={h.use_vlm_value}, value_vlm_mode={h.value_vlm_mode!r}")
        if not h.disable_dropout:
            raise ValueError("rl_head_config.disable_dropout=False is not supported: the RL policy runs without "
                             "dropout so that evaluate() reproduces the rollout log-probs")
        step_dir, assets = read_converted_assets(model_path)
        if "gr00t_config" not in assets or "metadata" not in assets:
            raise ValueError(f"{step_dir}: assets lack 'gr00t_config'/'metadata'; convert the checkpoint with "
                             f"python -m gr00t_port.convert")
        dtype = {"bf16": "bfloat16", "fp32": "float32"}[m.precision]
        model_config = GR00TConfig.from_dict(assets["gr00t_config"]).with_numerics(dtype=dtype, param_dtype=dtype)
        add_value_head = m.add_value_head if h.add_value_head is None else h.add_value_head
        # A checkpoint that already has a value head (e.g. exported after RL) keeps its widths; else RLinf's.
        value_dims = model_config.action_head.value_head_hidden_dims or GR00TRLConfig.value_head_hidden_dims
        rl = GR00TRLConfig(
            action_dim=m.action_dim, num_action_chunks=m.num_action_chunks, denoising_steps=m.denoising_steps,
            noise_method=h.noise_method, noise_level=h.noise_level, joint_logprob=h.joint_logprob,
            ignore_last=h.ignore_last, add_value_head=add_value_head, value_head_hidden_dims=tuple(value_dims),
            tune_visual=m.tune_visual, tune_llm=m.tune_llm, cache_backbone_features=m.cache_backbone_features,
            detach_critic_input=h.detach_critic_input,
            logprob_type=cfg.algorithm.logprob_type,
            action_converter=m.obs_converter_type)
        tag = m.embodiment_tag
        entries = assets["metadata"] or {}
        if tag not in entries:
            raise ValueError(f"{step_dir}: metadata has no entry for embodiment_tag {tag!r} (has: "
                             f"{', '.join(sorted(entries)) or 'nothing'})")
        metadata = EmbodimentMetadata.from_json_entry(entries[tag], tag, source=f"{step_dir}/assets metadata")
        # Converted upstream checkpoints use RLinf's Franka layout; ours record theirs (a task may add state keys).
        layout = (ModalityLayout.from_dict(assets["modality_layout"], f"{step_dir}/assets modality_layout")
                  if assets.get("modality_layout") else LIBERO_FRANKA_LAYOUT)
        spec = getattr(env, "spec", None)
        env_state_keys = tuple(getattr(spec, "state_keys", obs_mapping.FRANKA_EEF_STATE_KEYS))
        if tuple(k for k, _ in env_state_keys) != layout.state_keys:
            raise ValueError(f"{step_dir} was trained on the state keys {list(layout.state_keys)} but the env's task "
                             f"provides {[k for k, _ in env_state_keys]}")
        b, head = model_config.backbone, model_config.action_head
        proc_cfg = dataclasses.replace(
            RLINF_ISAACLAB_CONFIG, embodiment_tag=tag, layout=layout, pad_to_length=h.padding_value,
            pixel_layout="NHWC",
            image_size=b.vision.image_size, tokens_per_image=b.tokens_per_image, max_state_dim=head.max_state_dim,
            max_action_dim=head.action_dim, action_horizon=head.action_horizon)
        processor = GR00TProcessor(proc_cfg, metadata, load_tokenizer(None, checkpoint_dir=model_path))
        if not task:
            raise ValueError(f"no instruction for GR00T: set env.{split}.init_params.task_description")
        _check_padding(h.padding_value, len(processor.prompt_ids(task, len(layout.video_keys))))
        return cls(rl, model_config, processor, quat_order=env.quat_order, task_description=task,
                   state_fn=getattr(spec, "state_fn", None), checkpoint=step_dir)

    def _check_consistency(self) -> None:
        rl, head, b, p = self.rl, self.model_config.action_head, self.model_config.backbone, self.processor.config
        checks = [
            (p.pad_to_length is not None, "processor pad_to_length must be set (token ids need a fixed length "
                                          "at the jit boundary; RLinf pads to 570)"),
            (p.pixel_layout == "NHWC", f"processor pixel_layout must be 'NHWC', got {p.pixel_layout!r}"),
            (len(p.layout.video_keys) == 2, f"the processor layout must have 2 cameras (table, wrist), got "
                                            f"{p.layout.video_keys}"),
            (self.processor.valid_action_dim == rl.action_dim,
             f"actor.model.action_dim={rl.action_dim} but the checkpoint metadata has "
             f"{self.processor.valid_action_dim} action dims"),
            (rl.action_dim <= head.action_dim, f"action_dim={rl.action_dim} exceeds the model's {head.action_dim}"),
            (1 <= rl.num_action_chunks <= head.action_horizon,
             f"num_action_chunks={rl.num_action_chunks} must be in [1, action_horizon={head.action_horizon}]"),
            ((p.max_state_dim, p.max_action_dim, p.action_horizon)
             == (head.max_state_dim, head.action_dim, head.action_horizon),
             f"processor (max_state_dim, max_action_dim, action_horizon)="
             f"{(p.max_state_dim, p.max_action_dim, p.action_horizon)} != the model's "
             f"{(head.max_state_dim, head.action_dim, head.action_horizon)}"),
            ((p.image_size, p.tokens_per_image) == (b.vision.image_size, b.tokens_per_image),
             f"processor (image_size, tokens_per_image)={(p.image_size, p.tokens_per_image)} != the backbone's "
             f"{(b.vision.image_size, b.tokens_per_image)}"),
            (self.quat_order in ("wxyz", "xyzw"), f"quat_order must be 'wxyz' or 'xyzw', got {self.quat_order!r}"),
            (isinstance(self.task_description, str) and bool(self.task_description),
             f"task_description must be a non-empty str, got {self.task_description!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"GR00TRLPolicy: {message}")

    def _build_action_decoders(self) -> list[tuple[int, int, str, dict[str, np.ndarray]]]:
        """(start, dim, mode, float32 stats) per action key: the processor's unnormalization, done in JAX."""
        decoders = []
        for c in self.processor.codec.action_codecs:
            if c.mode not in ("min_max", "q99", "mean_std", "binary", "none"):
                raise ValueError(f"action key {c.key!r}: normalization mode {c.mode!r} has no JAX inverse")
            decoders.append((c.start, c.dim, c.mode, {k: np.asarray(v, np.float32) for k, v in c.stats.items()}))
        return decoders

    # -------------------------------------------------------------------------------------------- torch side

    def read_obs(self, policy_group: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Env ``policy`` group -> model inputs as fresh torch tensors on the cameras' device.

        Returns (B = num_envs, L = processor pad_to_length, V = 2 cameras, S = image_size):
          eagle_input_ids (B, L) int32, eagle_attention_mask (B, L) int32,
          eagle_images (B, V, S, S, 3) uint8 (cropped + resized frames; Eagle's (x - 127.5) / 127.5 runs in JAX,
            so the rollout stores 1 byte per pixel instead of 4), state (B, 1, max_state_dim) float32 (normalized,
            bf16-rounded first as RLinf, zero-padded), embodiment_id (B,) int32.

        Host cost per call (it runs on the CPU, like RLinf's transforms): one device->host copy of both cameras
        (B x 2 x H x W x 3 bytes), centre crop + antialiased bilinear resize in torch, the uint8 truncation, one
        float pass of the processor's pixel normalization and its exact inverse, the (cached) prompt tokens,
        and one host->device copy of B x 2 x S x S x 3 bytes + 2 x B x L int32.
        """
        inputs = obs_mapping.to_model_inputs(policy_group, self.quat_order, self.task_description,
                                             state_fn=self.state_fn, state_dim=self.processor.codec.state_dim)
        device = inputs["table_image"].device
        keys = self.processor.config.layout.video_keys
        images = {keys[0]: inputs["table_image"], keys[1]: inputs["wrist_image"]}
        batch = self.processor(images, inputs["state"], inputs["task_description"])
        pixels = batch["eagle_pixel_values"]  # (B*V, S, S, 3) float32, exactly (u8 - 127.5) / 127.5
        frames = np.rint(pixels * _PIXEL_SCALE + _PIXEL_SCALE).astype(np.uint8)  # exact inverse (checked in tests)
        n = inputs["state"].shape[0]
        out = {
            "eagle_input_ids": batch["eagle_input_ids"].astype(np.int32),
            "eagle_attention_mask": batch["eagle_attention_mask"].astype(np.int32),
            "eagle_images": frames.reshape(n, len(keys), *frames.shape[1:]),
            "state": np.ascontiguousarray(batch["state"], np.float32),
            "embodiment_id": batch["embodiment_id"].astype(np.int32),
        }
        return {k: torch.from_numpy(v).to(device) for k, v in out.items()}

    # ---------------------------------------------------------------------------------------------- JAX side

    def init(self, rng: Array, obs: Mapping[str, Array] | None = None) -> dict:
        """Params {"backbone", "action_head" (with "value_head"), ["explore_noise_net"]} in the param dtype:
        the converted checkpoint if one was given, else ``base_params``, else random; heads the source lacks
        (the value head of an SFT checkpoint, the noise net) are created with RLinf's init."""
        model_rng, value_rng, noise_rng = jax.random.split(rng, 3)
        expected = self.model.param_shapes()
        if self.checkpoint is not None:
            from gr00t_port.convert import load_converted
            base, _, _ = load_converted(self.checkpoint)
            where = str(self.checkpoint)
        elif self.base_params is not None:
            base, where = self.base_params, "base_params"
        else:
            base, where = jax.jit(self.model.init)(model_rng), "random init"  # jitted: op by op takes minutes
        base = {"backbone": base["backbone"], "action_head": dict(base["action_head"])}
        head_cfg = self.model_config.action_head
        if not head_cfg.value_head_hidden_dims:
            base["action_head"].pop(VALUE_HEAD, None)  # a stored critic that is not wanted (add_value_head=False)
        _check_tree(base, expected, where, optional=(("action_head", VALUE_HEAD),))
        if head_cfg.value_head_hidden_dims and VALUE_HEAD not in base["action_head"]:
            value_head = ValueHead(head_cfg.value_head_hidden_dims, param_dtype=head_cfg.jnp_param_dtype)
            dummy = jnp.zeros((1, head_cfg.value_head_input_dim), jnp.float32)
            base["action_head"][VALUE_HEAD] = jax.jit(value_head.init)(value_rng, dummy)["params"]
        if self.rl.learned_noise:
            dummy = jnp.zeros((1, head_cfg.action_horizon, head_cfg.hidden_size), jnp.float32)
            base[NOISE_NET] = jax.jit(self._noise_net().init)(noise_rng, dummy)["params"]
        dtype = head_cfg.jnp_param_dtype
        return jax.tree.map(lambda x: jnp.asarray(x, dtype), base)

    def is_value_param(self, path: tuple[str, ...]) -> bool:
        """The value head's params (trained with ``optim.value_lr``, RLinf's "value_head" param group)."""
        return VALUE_HEAD in path

    def is_trainable_param(self, path: tuple[str, ...]) -> bool:
        """False for frozen backbone params: SigLIP + mlp1 unless tune_visual, Qwen3 unless tune_llm."""
        if not path or path[0] != "backbone":
            return True
        switch = _BACKBONE_SWITCHES.get(path[1] if len(path) > 1 else "")
        return bool(switch and getattr(self.rl, switch))

    def sample(self, params: Mapping, obs: Mapping[str, Array], rng: Array) -> PolicySample:
        """Rollout call: env actions (B, C, A), the Flow-SDE log-prob ((B,) or (B, C, A)), value (B,) and
        train_inputs {"chain" (B, K+1, H, D), "denoise_step" (B,)} (see the module docstring), plus
        "backbone_features" (B, L, backbone_dim) when ``rl.caches_backbone_features``."""
        rl, head_cfg = self.rl, self.model_config.action_head
        K = rl.denoising_steps
        features = self.backbone_features(params, obs)
        ctx = self.encode(params, obs, features)
        batch = ctx.vl_tokens.shape[0]
        k_rng, x0_rng, eps_rng = jax.random.split(rng, 3)
        shape = (batch, head_cfg.action_horizon, head_cfg.action_dim)
        x0 = jax.random.normal(x0_rng, shape, jnp.float32)
        if rl.joint_logprob:
            denoise_step = jnp.full((batch,), -1, jnp.int32)  # every step is stochastic
        else:
            denoise_step = flow_sde.sample_denoise_steps(k_rng, batch, K, rl.ignore_last)
        eps = jax.random.normal(eps_rng, (K, *shape), jnp.float32)

        def step(x, inputs):
            i, bucket, noise = inputs
            steps = jnp.full((batch,), i, jnp.int32)
            v, std_learned = self._velocity(params, ctx, x, jnp.full((batch,), bucket, jnp.int32))
            mean, std = self._transition(x, v, steps, std_learned)
            stochastic = jnp.full((batch,), True) if rl.joint_logprob else denoise_step == i
            x_next = jnp.where(stochastic[:, None, None], mean + std * noise, flow_sde.euler_step(x, v, K))
            logp = self._executed(flow_sde.gaussian_logprob(x_next, mean, std))
            logp = jnp.where(stochastic[:, None, None], logp, 0.0)
            return x_next, (x_next, logp)

        xs = (jnp.arange(K, dtype=jnp.int32), jnp.asarray(self._buckets), eps)
        x_final, (states, logps) = jax.lax.scan(step, x0, xs)
        chain = jnp.concatenate([x0[:, None], jnp.moveaxis(states, 0, 1)], axis=1)  # (B, K+1, H, D)
        return PolicySample(actions=self._env_actions(x_final), logprob=self._reduce(logps.sum(axis=0)),
                            value=self._value(params, ctx),
                            train_inputs={"chain": chain, "denoise_step": denoise_step,
                                          **({BACKBONE_FEATURES: features} if rl.caches_backbone_features else {})})

    def evaluate(self, params: Mapping, obs: Mapping[str, Array], train_inputs: Mapping[str, Array]) -> PolicyEval:
        """Learner call: the log-prob of the stored transition(s) under ``params`` (teacher-forced on the chain),
        the value, and the Gaussian entropy at the stochastic step(s) summed over the C x A elements (B,)."""
        rl = self.rl
        params = self._stop_frozen_gradients(params)
        ctx = self.encode(params, obs, train_inputs.get(BACKBONE_FEATURES))
        chain = train_inputs["chain"].astype(jnp.float32)
        batch = chain.shape[0]
        buckets = jnp.asarray(self._buckets)
        if rl.joint_logprob:
            def step(_, inputs):
                i, x, x_next = inputs
                steps = jnp.full((batch,), i, jnp.int32)
                logp, ent = self._score(params, ctx, x, x_next, steps, buckets[steps])
                return None, (logp, ent)

            xs = (jnp.arange(rl.denoising_steps, dtype=jnp.int32), jnp.moveaxis(chain[:, :-1], 1, 0),
                  jnp.moveaxis(chain[:, 1:], 1, 0))
            _, (logps, ents) = jax.lax.scan(step, None, xs)
            logp, ent = logps.sum(axis=0), ents.sum(axis=0)
        else:
            k = train_inputs["denoise_step"].astype(jnp.int32)
            gather = lambda j: jnp.take_along_axis(chain, j[:, None, None, None], axis=1)[:, 0]  # noqa: E731
            logp, ent = self._score(params, ctx, gather(k), gather(k + 1), k, buckets[k])
        return PolicyEval(logprob=self._reduce(logp), value=self._value(params, ctx),
                          entropy=ent.sum(axis=(-2, -1)))

    def act(self, params: Mapping, obs: Mapping[str, Array], rng: Array | None = None) -> Array:
        """Deterministic Euler integration (eval mode, no SDE) -> env actions (B, C, A). x_0 = 0 unless ``rng``."""
        head_cfg = self.model_config.action_head
        ctx = self.encode(params, obs)
        batch = ctx.vl_tokens.shape[0]
        shape = (batch, head_cfg.action_horizon, head_cfg.action_dim)
        x0 = jnp.zeros(shape, jnp.float32) if rng is None else jax.random.normal(rng, shape, jnp.float32)
        return self._env_actions(self.denoise_deterministic(params, ctx, x0))

    def value(self, params: Mapping, obs: Mapping[str, Array]) -> Array:
        """Critic value (B,) float32 (zeros without a value head, e.g. GRPO)."""
        return self._value(params, self.encode(params, obs))

    # ------------------------------------------------------------------------------------------------ pieces

    def denoise_deterministic(self, params: Mapping, ctx: HeadContext, x0: Array) -> Array:
        """K plain Euler steps from x0 (B, H, D): the normalized action chunk (B, H, D) float32."""
        batch = x0.shape[0]

        def step(x, bucket):
            v, _ = self._velocity(params, ctx, x, jnp.full((batch,), bucket, jnp.int32), features=False)
            return flow_sde.euler_step(x, v, self.rl.denoising_steps), None

        x, _ = jax.lax.scan(step, x0.astype(jnp.float32), jnp.asarray(self._buckets))
        return x

    def backbone_features(self, params: Mapping, obs: Mapping[str, Array]) -> Array:
        """The Eagle backbone on one observation batch: (B, L, backbone_dim) in the compute dtype."""
        missing = [k for k in OBS_KEYS if k not in obs]
        if missing:
            raise KeyError(f"GR00T policy obs lack {missing} (read_obs produces {list(OBS_KEYS)})")
        pixels = eagle_pixel_values(obs["eagle_images"])
        return self.model.backbone_features(params, {"eagle_input_ids": obs["eagle_input_ids"],
                                                     "eagle_attention_mask": obs["eagle_attention_mask"],
                                                     "eagle_pixel_values": pixels})

    def encode(self, params: Mapping, obs: Mapping[str, Array], features: Array | None = None) -> HeadContext:
        """Backbone (unless its ``features`` are given) + the action head's step-independent part
        (``HeadContext``) for one observation batch."""
        if features is None:
            features = self.backbone_features(params, obs)
        state = obs["state"].astype(self.model_config.action_head.jnp_dtype)
        return self.head.encode_context(params["action_head"], features, state, obs["embodiment_id"])

    def _velocity(self, params: Mapping, ctx: HeadContext, x: Array, buckets: Array,
                  features: bool | None = None) -> tuple[Array, Array | None]:
        """Velocity (B, H, D) float32 and, for learned noise, the noise net's std from the DiT action features."""
        features = self.rl.learned_noise if features is None else features
        if not features:
            return self.head.velocity_from_context(params["action_head"], ctx, x, buckets).astype(jnp.float32), None
        v, state = self.head.module().apply({"params": params["action_head"]}, ctx, x, buckets,
                                            method=ActionHeadModule.velocity, mutable=["intermediates"],
                                            capture_intermediates=lambda mdl, name: isinstance(mdl, DiT)
                                            and name == "__call__")
        dit_out = state["intermediates"]["dit"]["__call__"][0][:, -x.shape[1]:]  # the action tokens
        std = self._noise_net().apply({"params": params[NOISE_NET]}, dit_out)
        return v.astype(jnp.float32), std

    def _transition(self, x: Array, v: Array, steps: Array, learned_std: Array | None) -> tuple[Array, Array]:
        return flow_sde.stochastic_transition(x, v, steps, num_steps=self.rl.denoising_steps,
                                              noise_method=self.rl.noise_method, noise_level=self.rl.noise_level,
                                              learned_std=learned_std)

    def _score(self, params, ctx, x, x_next, steps, buckets) -> tuple[Array, Array]:
        """log N(x_next; mean, std) and the entropy at the given steps, on the executed elements (B, C, A)."""
        v, learned_std = self._velocity(params, ctx, x, buckets)
        mean, std = self._transition(x, v, steps, learned_std)
        return (self._executed(flow_sde.gaussian_logprob(x_next, mean, std)),
                self._executed(flow_sde.gaussian_entropy(std)))

    def _executed(self, x: Array) -> Array:
        return flow_sde.executed_elements(x, self.rl.num_action_chunks, self.rl.action_dim)

    def _reduce(self, logp: Array) -> Array:
        return logp.sum(axis=(-2, -1)) if self.rl.logprob_type == "chunk_level" else logp

    def _value(self, params: Mapping, ctx: HeadContext) -> Array:
        if not self.rl.add_value_head:
            return jnp.zeros((ctx.vl_tokens.shape[0],), jnp.float32)
        if self.rl.detach_critic_input:
            ctx = jax.tree.map(jax.lax.stop_gradient, ctx)
        return self.head.value(params["action_head"], ctx).astype(jnp.float32)

    def _noise_net(self) -> ExploreNoiseNet:
        head_cfg = self.model_config.action_head
        return ExploreNoiseNet(tuple(self.rl.noise_net_hidden_dims), head_cfg.action_dim,
                               tuple(self.rl.noise_std_range), param_dtype=head_cfg.jnp_param_dtype)

    def _stop_frozen_gradients(self, params: Mapping) -> Any:
        return jax.tree_util.tree_map_with_path(
            lambda path, x: x if self.is_trainable_param(_path_names(path)) else jax.lax.stop_gradient(x), params)

    def _env_actions(self, x: Array) -> Array:
        """Normalized model actions (B, H, D) -> env actions (B, C, A) float32: the processor's unnormalization
        (``env_actions``) on the real dims, the first C steps, then the gripper rule (RLinf simulation_io)."""
        x = x[:, :self.rl.num_action_chunks].astype(jnp.float32)
        parts = [_unnormalize(x[..., start:start + dim], mode, stats)
                 for start, dim, mode, stats in self._action_decoders]
        actions = jnp.concatenate(parts, axis=-1)
        gripper = actions[..., -1]
        gripper = jnp.sign(gripper) if self.rl.action_converter == "isaaclab_stack_cube" else jnp.sign(1 - 2 * gripper)
        return actions.at[..., -1].set(gripper)


# ---------------------------------------------------------------------------------------------------- helpers

def eagle_pixel_values(images: Array) -> Array:
    """(B, V, S, S, 3) uint8 frames -> Eagle's pixel values (B*V, S, S, 3) float32, (u8 - 127.5) / 127.5 exactly as
    the processor computes them; sample-major, then view (the order of the images in the prompt)."""
    pixels = jnp.take(jnp.asarray(_PIXEL_LUT), images.astype(jnp.int32), axis=0)
    return pixels.reshape(-1, *images.shape[2:])


def _unnormalize(x: Array, mode: str, stats: Mapping[str, np.ndarray]) -> Array:
    """``gr00t_port.normalization.unnormalize`` in JAX (float32, same operation order)."""
    if mode == "none":
        return x
    if mode == "binary":
        return (x > 0.5).astype(x.dtype)
    if mode in ("min_max", "q99"):
        lo, hi = (stats["min"], stats["max"]) if mode == "min_max" else (stats["q01"], stats["q99"])
        return (x + 1) / 2 * jnp.asarray(hi - lo) + jnp.asarray(lo)
    return x * jnp.asarray(stats["std"]) + jnp.asarray(stats["mean"])


def _path_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)


def _flat_shapes(tree: Any) -> dict[tuple[str, ...], tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_names(path): tuple(np.shape(leaf)) for path, leaf in leaves}


def _check_tree(got: Any, expected: Any, where: str, optional: tuple[tuple[str, ...], ...] = ()) -> None:
    """Same parameter paths and shapes as the model (sub-trees under an ``optional`` prefix may be absent)."""
    have, want = _flat_shapes(got), _flat_shapes(expected)
    is_optional = lambda p: any(p[:len(o)] == o for o in optional)  # noqa: E731
    missing = sorted("/".join(p) for p in want if p not in have and not is_optional(p))
    extra = sorted("/".join(p) for p in have if p not in want)
    wrong = sorted(f"{'/'.join(p)} {have[p]} (model: {want[p]})" for p in have if p in want and have[p] != want[p])
    if missing or extra or wrong:
        problems = "; ".join(f"{name}: {items[:3]}{' ...' if len(items) > 3 else ''} ({len(items)})"
                             for name, items in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
                             if items)
        raise ValueError(f"GR00T params from {where} do not fit the configured model: {problems}")


def _check_padding(padding_value: int, prompt_len: int) -> None:
    if prompt_len > padding_value:
        raise ValueError(f"rl_head_config.padding_value={padding_value} is shorter than the prompt "
                         f"({prompt_len} tokens with this tokenizer and instruction); raise it to >= {prompt_len}")


def bootstrap_checkpoint_for(cfg: Any, split: str = "train") -> Path:
    """``actor.model.bootstrap``: the starting checkpoint in ``<log_path>/bootstrap`` for the configured embedded
    task and camera size: a random GR00T, then ``sft_steps`` of SFT on scripted-expert demos (built once, then
    reused; ``sft.bootstrap_checkpoint``)."""
    from jaxrl_isaac import sft

    m, env_cfg = cfg.actor.model, getattr(cfg.env, split)
    boot = m.bootstrap
    if env_cfg.env_type != "embedded":
        raise ValueError(f"actor.model.bootstrap needs an embedded env, env.{split}.env_type={env_cfg.env_type!r}")
    table, wrist = env_cfg.init_params.table_cam, env_cfg.init_params.wrist_cam
    if (table.height, table.width) != (wrist.height, wrist.width) or table.height != table.width:
        raise ValueError(f"actor.model.bootstrap needs equal square cameras, env.{split}.init_params has table_cam "
                         f"{table.height}x{table.width} and wrist_cam {wrist.height}x{wrist.width}")
    # A run started from (or continuing) another run's checkpoint can reuse that run's bootstrap, read only: eval of
    # logs/RUN/checkpoints with another log_path then skips minutes of SFT that would give the same weights.
    reuse_from = [run / "bootstrap" for run in map(_run_dir_of, (cfg.runner.ckpt_path, cfg.runner.resume_dir))
                  if run is not None]
    return sft.bootstrap_checkpoint(env_cfg.init_params.id, Path(cfg.runner.logger.log_path) / "bootstrap",
                                    architecture=boot.architecture, steps=boot.sft_steps, episodes=boot.sft_episodes,
                                    batch_size=boot.sft_batch_size, lr=boot.sft_lr, cam=table.height,
                                    seed=cfg.actor.seed, embodiment_tag=m.embodiment_tag,
                                    augment=boot.sft_augment, tokenizer=boot.tokenizer,
                                    tiled_rendering=env_cfg.init_params.tiled_rendering,
                                    log=logging.getLogger(__name__).info, reuse_from=reuse_from)


def _run_dir_of(checkpoint: str | None) -> Path | None:
    """The run's log dir of ``<log_path>/checkpoints[/global_step_N]``; None for other paths."""
    from jaxrl_isaac.checkpoints import STEP_PREFIX

    if not checkpoint:
        return None
    path = Path(checkpoint)
    if path.name.startswith(f"{STEP_PREFIX}_"):
        path = path.parent
    return path.parent if path.name == "checkpoints" else None


def read_converted_assets(path: str | os.PathLike) -> tuple[Path, dict]:
    """(step dir, assets) of a converted checkpoint (``.../global_step_N`` or its parent: the latest step),
    without reading the params."""
    import orbax.checkpoint as ocp

    from jaxrl_isaac.checkpoints import STEP_PREFIX, resolve_step_dir

    root, step = resolve_step_dir(path, items=("params", "assets"))
    options = ocp.CheckpointManagerOptions(step_prefix=STEP_PREFIX, create=False, enable_async_checkpointing=False)
    mngr = ocp.CheckpointManager(root.absolute(), options=options, item_names=("assets",))
    try:
        assets = mngr.restore(step, args=ocp.args.Composite(assets=ocp.args.JsonRestore()))["assets"]
    finally:
        mngr.close()
    return root / f"{STEP_PREFIX}_{step}", dict(assets)

