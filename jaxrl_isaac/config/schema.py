"""Typed training config: frozen dataclasses that mirror RLinf's embodied key tree.

Attribute names are the YAML keys, so ``cfg.env.train.total_num_envs`` here is ``env.train.total_num_envs`` in a
RLinf ``examples/embodiment/config/*.yaml``. Defaults are RLinf's values at HEAD (``a3816b59``) for the GR00T N1.5
IsaacLab stack-cube recipe where RLinf has one; keys marked "ours" do not exist in RLinf.

Some sections exist only so that RLinf configs keep their shape (``actor.fsdp_config``, ``weight_syncer``,
``reward``, ``critic``, backend names): they are parsed and type-checked, and their docstrings say which of them
the JAX trainer ignores.

Units: an "env step" is one simulator control step (20 Hz for the IsaacLab Franka tasks); a "chunk step" is one
policy call, which executes ``actor.model.num_action_chunks`` env steps open loop. The ``(shape)`` notes below use
N for envs, C for ``num_action_chunks`` and A for ``action_dim``.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config problem, reported as one line that names the file (or "command line") and the dotted key."""


# Closed sets that validation checks; a value outside one is a config error with a did-you-mean hint.
LoggerBackend = Literal["tensorboard", "wandb", "swanlab"]
LOGGER_BACKENDS: tuple[str, ...] = typing.get_args(LoggerBackend)
COMPONENTS = ("env", "rollout", "actor")
# Camera terms of the "policy" obs group; equal to envs.contract.CAMERA_KEYS, repeated here so that loading a
# config does not import torch.
CAMERA_KEYS = ("table_cam", "wrist_cam")

# ----------------------------------------------------------------------------------------------------------------
# cluster
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeGroupPlacement:
    """The dict form of a placement entry: ``rollout: {node_group: rollout, placement: 0-3}``."""

    node_group: str = "cluster"  # a label from cluster.node_groups, or RLinf's reserved "cluster" / "node"
    placement: str | int  # device ranks inside the node group, same syntax as the short form ("0-3", "all", 2)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeEnvConfig:
    """Software environment for some nodes of a node group (RLinf ``NodeGroupEnvConfig``)."""

    node_ranks: str | int | tuple[int, ...] = "all"
    env_vars: tuple[dict[str, str], ...] = ()  # one-key dicts, e.g. ({"OMP_NUM_THREADS": "32"},)
    python_interpreter_path: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeGroupConfig:
    """A labelled group of nodes (RLinf ``NodeGroupConfig``); placements refer to it by ``label``.

    RLinf applies ``env_configs`` to the processes it launches in the group (the GR00T recipe sets
    ``OMP_NUM_THREADS=32`` for its rollout processes). Here one process drives every device, so the runner decides
    whether such variables can be applied without affecting the other components.
    """

    label: str
    node_ranks: str | int | tuple[int, ...] = "all"
    env_configs: tuple[NodeEnvConfig, ...] = ()
    hardware: dict[str, Any] | None = None  # RLinf hardware description (robots etc.); unused here
    hardware_type: str | None = None
    ignore_hardware: bool = False


PlacementValue = int | str | NodeGroupPlacement


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """Devices and which component runs where.

    ``component_placement`` maps a component name, or several joined by commas ("env,rollout,actor"), to a placement:
    an int, a range string ("0-3", "0,2,5", "0-1,4", "all", RLinf's "resources:processes" form "0-1:0-3"), or the
    dict form. ``placement.parse_component_placement`` turns it into device ids and world sizes.
    """

    num_nodes: int = 1
    component_placement: dict[str, PlacementValue | None]  # None only to report YAML's {env,rollout: 0} clearly
    node_groups: tuple[NodeGroupConfig, ...] = ()
    # Ours: share of each GPU's memory JAX's pool may take, applied before JAX starts by
    # jaxrl_isaac.jax_setup.configure_jax_memory. 0.5 leaves room for a simulator on the same GPU; None keeps
    # JAX's default (0.75).
    jax_mem_fraction: float | None = 0.5
    # Ours: XLA's deterministic GPU kernels (--xla_gpu_deterministic_ops), so that a run resumed from a checkpoint
    # repeats the uninterrupted run's steps bit for bit. Without it, GPU scatter-adds (gradients of gathers, e.g.
    # GR00T's per-embodiment projectors) sum in a varying order and a resumed run drifts from its second step on.
    # On the H100 stack-cube PPO it doubled time/actor_training (2.1 -> 4.1 s of a 21 s step). No effect on CPU.
    deterministic_gpu_ops: bool = True


# ----------------------------------------------------------------------------------------------------------------
# runner
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoggerConfig:
    """Where metrics go. Backends write under ``<log_path>/{tensorboard,wandb,swanlab}`` as in RLinf."""

    log_path: str = "../results"  # RLinf's run_embodiment.sh replaces it with logs/<date>-<config>
    project_name: str = "rlinf"
    experiment_name: str = "isaaclab_ppo_gr00t_demo"
    logger_backends: tuple[LoggerBackend, ...] = ("tensorboard",)  # any subset of LOGGER_BACKENDS; may be empty
    wandb_entity: str | None = None
    wandb_proxy: str | None = None
    swanlab_mode: str = "cloud"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunnerConfig:
    """Outer loop. One "epoch" is one global step: rollout, advantages, PPO update."""

    task_type: Literal["embodied", "embodied_eval"] = "embodied"
    logger: LoggerConfig = dataclasses.field(default_factory=LoggerConfig)
    max_epochs: int = 1000  # global steps to run
    max_steps: int = -1  # if >= 0, caps the number of global steps below max_epochs
    only_eval: bool = False  # run env.eval with the loaded policy and exit
    val_check_interval: int = -1  # > 0: evaluate every N global steps and at the last step
    save_interval: int = 20  # > 0: checkpoint every N global steps and at the last step; <= 0: never
    resume_dir: str | None = None  # a checkpoint directory (.../checkpoints/global_step_N): restores state and step
    ckpt_path: str | None = None  # policy weights loaded into actor and rollout after construction
    # Ours: stop cleanly, with a checkpoint of the last finished global step, before a step (with its eval and
    # checkpoint) would end past this many seconds since the train command started; for cluster time limits and
    # runs done in pieces (continue with runner.resume_dir). None: no limit.
    max_wall_time_s: float | None = None
    weight_sync_interval: int = 1  # copy actor weights to the rollout policy every N global steps
    overlap_env_bootstrap: bool = False  # RLinf: reset the next rollout's envs while the actor trains
    use_training_pipeline: bool = False  # RLinf: stream micro-batches to the actor during rollout (GAE only)
    enable_decoupled_mode: bool = False  # RLinf: env workers feed a shared queue (needs pipeline_stage_num=1)
    per_worker_log: bool = False
    seq_length: int = 4096  # LLM leftover in RLinf's embodied configs; unused for action policies
    max_prompt_length: int = 30  # LLM leftover; unused

    @property
    def num_global_steps(self) -> int:
        """Global steps the runner executes: ``max_epochs``, capped by ``max_steps`` when that is >= 0."""
        return self.max_epochs if self.max_steps < 0 else min(self.max_epochs, self.max_steps)


# ----------------------------------------------------------------------------------------------------------------
# algorithm
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlgorithmConfig:
    """Advantage estimation and loss. With ``reward_type: chunk_level`` one sample is one chunk step."""

    adv_type: Literal["gae", "grpo"] = "gae"
    loss_type: Literal["actor_critic", "actor"] = "actor_critic"  # "actor" (no critic) goes with GRPO
    normalize_advantages: bool = True  # RLinf's non-pipeline actor normalizes GAE advantages whatever this says
    kl_penalty: Literal["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3"] = "kl"  # estimator; inert when kl_beta=0
    kl_beta: float = 0.0
    group_size: int = 1  # GRPO group size (envs sharing a reset state); 1 for PPO
    reward_coef: float = 1.0  # RLinf scales env rewards by env.*.reward_coef; IsaacLab rewards are used as given
    reward_type: Literal["chunk_level", "action_level"] = "chunk_level"  # chunk_level: sum the C rewards of a chunk
    logprob_type: Literal["chunk_level", "action_level", "token_level"] = "chunk_level"  # chunk: sum over (C, A)
    entropy_type: Literal["chunk_level", "action_level"] = "chunk_level"
    update_epoch: int = 3  # passes over the rollout buffer per global step
    loss_agg_func: Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"] = "token-mean"  # LLM actors only
    # Ours (RLinf picks it implicitly): how the embodied losses average over samples. "masked_mean": over the valid
    # chunk steps. "masked_mean_ratio": RLinf's choice whenever a loss mask exists (auto_reset false): every
    # trajectory weighs the same whatever its length, so short (e.g. successful) episodes count more per step.
    embodied_loss_agg: Literal["masked_mean", "masked_mean_ratio"] = "masked_mean"
    entropy_bonus: float = 0.0
    clip_ratio_high: float = 0.2  # ratio clipped to [1 - clip_ratio_low, 1 + clip_ratio_high]
    clip_ratio_low: float = 0.2
    # Dual clip (loss capped at clip_ratio_c * |A| for A < 0); None = no dual clip. RLinf's yaml says 3.0 but its
    # actor passes the value only for GR00T N1.6/N1.7, so the effective setting for N1.5 is None.
    clip_ratio_c: float | None = None
    value_clip: float = 0.2  # value prediction clipped to V_old +- value_clip (absolute, in return units)
    huber_delta: float | None = 10.0  # Huber value loss with this delta; None = squared error
    gamma: float = 0.99  # discount per sample, i.e. per chunk step with reward_type chunk_level
    gae_lambda: float = 0.95
    filter_rewards: bool = False  # GRPO: drop groups whose mean reward lies outside the bounds below
    rewards_lower_bound: float = 0.1
    rewards_upper_bound: float = 0.9
    # auto_reset only: add gamma * V(final obs) to the last reward of a chunk that ended in a truncation
    # ("standard") or in any done ("always").
    bootstrap_type: Literal["standard", "always"] = "standard"


# ----------------------------------------------------------------------------------------------------------------
# env
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class CameraConfig:
    height: int  # pixels
    width: int  # pixels


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoConfig:
    """Rollout videos: every env tiled into one frame, one mp4 per rollout epoch."""

    save_video: bool = False
    info_on_video: bool = True  # overlay per-env reward and termination
    extra_info_on_video: tuple[str, ...] = ()  # dotted paths into the step info, e.g. "episode.success_once"
    fps: int = 20
    video_base_dir: str | None = None  # None: <runner.logger.log_path>/video/<train|eval>


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnvInitParams:
    """Arguments for building the simulator (RLinf ``env.*.init_params``)."""

    id: str  # task id: an IsaacLab gym id, or an embedded task id ("Embedded-Reach-Franka-IK-Rel-v0")
    num_envs: int | None = None  # envs per simulator instance; filled at runtime: total / (env ranks * stages)
    max_episode_steps: int | None = None  # env steps; None: the split's max_episode_steps
    task_description: str | None = None  # language instruction given to the policy; None: the task's own
    table_cam: CameraConfig = dataclasses.field(default_factory=lambda: CameraConfig(height=256, width=256))
    wrist_cam: CameraConfig = dataclasses.field(default_factory=lambda: CameraConfig(height=256, width=256))
    # Ours, embedded tasks only: "sparse" pays 1 on success; "shaped" adds dense progress terms.
    reward_type: Literal["sparse", "shaped"] = "sparse"
    # Ours, embedded only: draw each camera of all sub-envs as tiles of one buffer, read back once (as IsaacLab's
    # TiledCamera); faster, most on EGL. False: one image and one read-back per sub-env.
    tiled_rendering: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnvSplitConfig:
    """One env split (``env.train`` or ``env.eval``); RLinf mounts ``env/<task>.yaml`` at both."""

    env_type: Literal["embedded", "isaaclab"]
    total_num_envs: int  # parallel envs over all env ranks and pipeline stages
    max_episode_steps: int = 256  # env steps before RLinf-side truncation
    max_steps_per_rollout_epoch: int = 256  # env steps per rollout epoch; a multiple of num_action_chunks
    rollout_epoch: int = 1  # rollout passes per global step; every pass starts from a reset unless auto_reset
    auto_reset: bool = False  # False: reset only at the start of each rollout epoch, done steps are loss-masked
    ignore_terminations: bool = False  # True: episodes end only at max_episode_steps (adds success_at_end)
    use_rel_reward: bool = True  # RLinf: reward = difference of successive rewards; not applied for IsaacLab
    seed: int = 0  # base seed; each simulator instance adds rank * pipeline_stage_num + stage
    group_size: int = 1  # consecutive envs sharing a reset state (GRPO)
    reward_coef: float = 1.0
    use_fixed_reset_state_ids: bool = False
    enable_offload: bool = False  # RLinf: offload envs that implement offload(); IsaacLab does not
    device: Literal["cpu", "cuda"] = "cpu"  # ours: where the env's torch tensors live (IsaacLab: cuda)
    num_workers: int = 1  # ours, embedded only: processes that step the sub-envs in parallel (1: in-process)
    video_cfg: VideoConfig = dataclasses.field(default_factory=VideoConfig)
    init_params: EnvInitParams


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnvConfig:
    group_name: str = "EnvGroup"
    train: EnvSplitConfig
    eval: EnvSplitConfig | None = None  # required when runner.val_check_interval > 0 or runner.only_eval


# ----------------------------------------------------------------------------------------------------------------
# rollout
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class RolloutModelConfig:
    model_path: str | None = None  # None: actor.model.model_path
    precision: Literal["bf16", "fp32"] | None = None  # None: actor.model.precision


@dataclasses.dataclass(frozen=True, kw_only=True)
class RolloutConfig:
    """The policy that acts in the envs during rollout (a copy of the actor's weights)."""

    group_name: str = "RolloutGroup"
    backend: str = "huggingface"  # RLinf's inference engine; here rollout is always the JAX policy (ignored)
    enable_offload: bool = True  # move rollout weights off the accelerator between rollouts
    pipeline_stage_num: int = 1  # S: env batches per rank that alternate between env and rollout (overlap)
    model: RolloutModelConfig = dataclasses.field(default_factory=RolloutModelConfig)


# ----------------------------------------------------------------------------------------------------------------
# actor
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class RLHeadConfig:
    """How a flow-matching policy becomes a stochastic policy with log-probs (RLinf ``rl_head_config``)."""

    joint_logprob: bool = False  # False: log-prob of one randomly chosen denoise step per policy call
    noise_method: Literal["flow_sde", "flow_noise", "flow_cps", "reinflow"] = "flow_sde"
    ignore_last: bool = False  # never pick the last denoise step as the stochastic one
    safe_get_logprob: bool = False
    noise_anneal: bool = False
    noise_params: tuple[float, float, int] = (0.7, 0.3, 400)  # (start, end, steps) when noise_anneal
    noise_level: float = 0.5  # a in sigma_t = a * sqrt((1 - t) / t)
    add_value_head: bool | None = None  # None: actor.model.add_value_head
    chunk_critic_input: bool = False
    detach_critic_input: bool = True
    disable_dropout: bool = True
    use_vlm_value: bool = False  # False: value input = [mean VL token, state token]
    value_vlm_mode: str = "mean_token"
    padding_value: int = 570  # Eagle token sequences right-padded to this length


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaselineModelConfig:
    """Ours: a small from-scratch CNN + MLP Gaussian policy with a value head (``model_type: baseline``).

    Images (N, H, W, 3) uint8 from ``image_keys`` are resized to ``image_size`` squared and encoded by a CNN; the
    ``state_keys`` terms of the "policy" obs group are concatenated and fed with the image features to MLPs that
    output the mean of a (C, A) Gaussian action chunk and a value.
    """

    image_keys: tuple[str, ...] = ()  # subset of ("table_cam", "wrist_cam"); empty = state-only policy
    image_size: int = 64  # pixels (square) the CNN sees
    state_keys: tuple[str, ...] = ("eef_pos", "eef_quat", "gripper_pos")  # "policy"-group terms, concatenated
    cnn_channels: tuple[int, ...] = (32, 64, 64)  # conv layer widths
    mlp_hidden: tuple[int, ...] = (256, 256)  # hidden widths of the policy and value MLPs
    init_log_std: float = -0.5  # initial log std of the state-independent Gaussian, per action dim


@dataclasses.dataclass(frozen=True, kw_only=True)
class BootstrapConfig:
    """A starting GR00T checkpoint made on the spot (ours): RLinf starts RL from an SFT checkpoint; without one to
    download, this makes it the way ``python -m jaxrl_isaac.sft`` does: a random ``architecture``, then
    ``sft_steps`` of flow-matching SFT on ``sft_episodes`` scripted-expert episodes (0: RL from random init)."""

    architecture: Literal["tiny", "small"] = "tiny"
    sft_steps: int = 0
    sft_episodes: int = 32
    sft_batch_size: int = 32
    sft_lr: float = 1e-3
    sft_augment: bool = True  # Isaac-GR00T's train-mode image transforms; off = --no-augment (cheaper batches)
    tokenizer: Literal["words", "bytes"] = "words"  # sft --tiny-tokenizer: one token per prompt word, or raw bytes


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The trained policy (RLinf ``model/gr00t.yaml`` defaults, plus our baseline)."""

    model_type: Literal["baseline", "gr00t"] = "gr00t"  # gr00t = GR00T N1.5
    model_path: str | None = None  # checkpoint directory; required for gr00t unless bootstrap is set
    # Ours: with model_path null, build the starting checkpoint from nothing (embedded tasks only; no weights to
    # download): see BootstrapConfig. Written once to <log_path>/bootstrap and reused by resumed runs and eval.
    bootstrap: BootstrapConfig | None = None
    precision: Literal["bf16", "fp32"] = "bf16"  # parameter (and optimizer state) dtype
    action_dim: int = 7  # A: 6-D relative IK pose + gripper for the Franka tasks
    num_action_chunks: int = 5  # C: env steps executed open loop per policy call (RLinf's recipe uses 16)
    denoising_steps: int = 4  # flow-matching Euler steps
    embodiment_tag: str = "libero_franka"  # GR00T projector selection
    add_value_head: bool = True
    policy_setup: str = "widowx_bridge"  # RLinf ManiSkill leftover; unused for IsaacLab
    obs_converter_type: str = "libero"  # which obs -> model-input mapping to use
    trust_remote_code: bool = True
    is_lora: bool = False
    tune_visual: bool = False  # train the vision encoder (RLinf freezes it)
    tune_llm: bool = False  # train the language model (RLinf freezes it)
    # Ours: with the backbone frozen (tune_visual and tune_llm off), keep the backbone features each rollout call
    # computed in the trajectory, so the update runs only the action head instead of the backbone again for every
    # sample of every update epoch. Costs L x backbone_dim values per sample of device memory (the full N1.5:
    # 570 x 2048 bf16 = 2.3 MB, so off by default). For large frozen backbones: the tiny CPU model's is cheap and
    # caching it changed nothing measurable there (BENCHMARKS.md, "Learning: the default run").
    cache_backbone_features: bool = False
    rl_head_config: RLHeadConfig = dataclasses.field(default_factory=RLHeadConfig)
    baseline: BaselineModelConfig = dataclasses.field(default_factory=BaselineModelConfig)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW with two parameter groups (policy, value head) and global grad-norm clipping."""

    lr: float = 1.0e-5  # policy parameters
    value_lr: float = 2.0e-5  # value-head parameters
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1.0e-8
    clip_grad: float = 1.0  # max global grad norm over all parameters
    weight_decay: float = 0.01
    critic_warmup_steps: int = 0  # > 0: train only the value head for this many optimizer steps
    lr_scheduler: Literal["constant", "cosine"] = "constant"  # stepped once per global step
    lr_warmup_steps: int = -1  # linear warm-up steps; < 0: lr_warmup_steps_ratio * total_training_steps
    lr_warmup_steps_ratio: float = 0.0
    total_training_steps: int = 0  # horizon of the cosine schedule, in global steps
    min_lr: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class MixedPrecisionConfig:
    param_dtype: str | None = None
    reduce_dtype: str | None = None
    buffer_dtype: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class AmpConfig:
    enabled: bool = False
    precision: str = "bf16"
    use_grad_scaler: bool = False  # demo-era key


@dataclasses.dataclass(frozen=True, kw_only=True)
class GradScalerConfig:
    enabled: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class FSDPConfig:
    """RLinf's PyTorch FSDP settings (``hybrid_engines/fsdp.yaml``), accepted so RLinf configs load unchanged.

    Unused here: the JAX actor shards parameters with ``jax.jit`` and ``NamedSharding`` over a device mesh, and its
    dtype is ``actor.model.precision``.
    """

    strategy: Literal["fsdp", "fsdp2"] = "fsdp"
    sharding_strategy: str = "full_shard"
    gradient_checkpointing: bool = False
    cpu_offload: bool = False
    offload_pin_memory: bool = False
    reshard_after_forward: bool = True
    enable_gradient_accumulation: bool = True
    forward_prefetch: bool = False
    limit_all_gathers: bool = False
    backward_prefetch: str | None = None
    use_orig_params: bool = False
    use_liger_kernel: bool = False
    fsdp_size: int = -1  # demo-era key
    mixed_precision: MixedPrecisionConfig = dataclasses.field(default_factory=MixedPrecisionConfig)
    amp_autocast: AmpConfig = dataclasses.field(default_factory=AmpConfig)
    amp: AmpConfig | None = None  # demo-era name of amp_autocast
    grad_scaler: GradScalerConfig = dataclasses.field(default_factory=GradScalerConfig)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ActorConfig:
    """The learner. Batch sizes count samples (chunk steps with reward_type chunk_level)."""

    group_name: str = "ActorGroup"
    training_backend: str = "fsdp"  # RLinf's training engine; here training is always JAX (ignored)
    micro_batch_size: int = 32  # samples per actor rank per forward/backward
    global_batch_size: int = 512  # samples per optimizer step over all actor ranks (grad accumulation fills it)
    seed: int = 1234  # minibatch shuffle seed (RLinf: seed + rank)
    enable_offload: bool = False  # move actor parameters and optimizer state off the accelerator outside training
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    fsdp_config: FSDPConfig = dataclasses.field(default_factory=FSDPConfig)


# ----------------------------------------------------------------------------------------------------------------
# sections accepted from RLinf configs and ignored
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class PatchInitSyncConfig:
    enabled: bool = True
    prefixes: tuple[str, ...] | None = None
    bucket_size: int = 134217728  # bytes


@dataclasses.dataclass(frozen=True, kw_only=True)
class PatchSyncConfig:
    snapshot_device: str = "cpu"
    delta_encoding: bool = True
    compression: str = "none"
    init_sync: PatchInitSyncConfig = dataclasses.field(default_factory=PatchInitSyncConfig)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BucketSyncConfig:
    bucket_size: int = 536870912  # bytes
    bucket_dtype: str | None = None
    is_agent: bool = False
    load_instant: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class WeightSyncerConfig:
    """RLinf's actor -> rollout weight transport between Ray processes. Accepted and ignored: here actor and
    rollout share one process, and the sync is a device-to-device copy of the parameter tree."""

    type: Literal["patch", "bucket"] = "patch"
    patch: PatchSyncConfig = dataclasses.field(default_factory=PatchSyncConfig)
    bucket: BucketSyncConfig | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class RewardConfig:
    """RLinf's learned-reward worker. Accepted so configs load; only ``use_reward_model: False`` is supported
    (rewards come from the env)."""

    use_reward_model: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class CriticConfig:
    """RLinf's separate critic model. Accepted so configs load; only ``use_critic_model: False`` is supported
    (the value head lives inside the actor model)."""

    use_critic_model: bool = False


# ----------------------------------------------------------------------------------------------------------------
# top level
# ----------------------------------------------------------------------------------------------------------------


def _internal_field(**default: Any) -> Any:
    """A field that is not a YAML key: the loader never reads it from YAML and ``to_dict`` leaves it out."""
    return dataclasses.field(**default, compare=False, repr=False, metadata={"internal": True})


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """A whole run. Build it with ``loader.load_config``; construct it directly only in tests.

    ``__post_init__`` fills RLinf's derived defaults (the values RLinf writes as interpolations):
    ``env.*.video_cfg.video_base_dir`` = ``<runner.logger.log_path>/video/<split>``,
    ``env.*.init_params.max_episode_steps`` = the split's ``max_episode_steps``,
    ``rollout.model.{model_path, precision}`` = ``actor.model.{model_path, precision}`` and
    ``actor.model.rl_head_config.add_value_head`` = ``actor.model.add_value_head``.
    """

    cluster: ClusterConfig
    runner: RunnerConfig = dataclasses.field(default_factory=RunnerConfig)
    algorithm: AlgorithmConfig = dataclasses.field(default_factory=AlgorithmConfig)
    env: EnvConfig
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    actor: ActorConfig = dataclasses.field(default_factory=ActorConfig)
    weight_syncer: WeightSyncerConfig = dataclasses.field(default_factory=WeightSyncerConfig)
    reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)
    critic: CriticConfig = dataclasses.field(default_factory=CriticConfig)
    # Where the config came from: the top-level YAML file, and for each dotted key the file (or "command line")
    # that set it, so that validation errors can name the right source.
    source_path: str | None = _internal_field(default=None)
    key_sources: dict[str, str] = _internal_field(default_factory=dict)

    def __post_init__(self):
        env = dataclasses.replace(
            self.env,
            train=_fill_split(self.env.train, "train", self.runner.logger.log_path),
            eval=None if self.env.eval is None else _fill_split(self.env.eval, "eval", self.runner.logger.log_path))
        model = self.actor.model
        if model.rl_head_config.add_value_head is None:
            model = dataclasses.replace(
                model, rl_head_config=dataclasses.replace(model.rl_head_config, add_value_head=model.add_value_head))
        rollout_model = dataclasses.replace(
            self.rollout.model,
            model_path=model.model_path if self.rollout.model.model_path is None else self.rollout.model.model_path,
            precision=model.precision if self.rollout.model.precision is None else self.rollout.model.precision)
        # Frozen dataclass: derived values are written once, here, before anyone can observe the object.
        object.__setattr__(self, "env", env)
        object.__setattr__(self, "actor", dataclasses.replace(self.actor, model=model))
        object.__setattr__(self, "rollout", dataclasses.replace(self.rollout, model=rollout_model))

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain YAML-safe containers (tuples become lists), internal fields left out."""
        return _to_plain(self)

    def to_yaml(self) -> str:
        """``to_dict()`` as YAML, in RLinf's key order; loading it back gives an equal config."""
        return yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def _fill_split(split: EnvSplitConfig, name: str, log_path: str) -> EnvSplitConfig:
    video = split.video_cfg
    if video.video_base_dir is None:
        video = dataclasses.replace(video, video_base_dir=f"{log_path}/video/{name}")
    init = split.init_params
    if init.max_episode_steps is None:
        init = dataclasses.replace(init, max_episode_steps=split.max_episode_steps)
    return dataclasses.replace(split, video_cfg=video, init_params=init)


class _Dumper(yaml.SafeDumper):
    """Block-style YAML, except that lists of scalars stay on one line ([tensorboard, wandb])."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flat = all(not isinstance(item, (dict, list)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _represent_list)


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name))
                for f in dataclasses.fields(value) if not f.metadata.get("internal")}
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value
