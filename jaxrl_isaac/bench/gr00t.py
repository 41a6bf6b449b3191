"""GR00T N1.5 ``get_action`` latency: the Flax port against the PyTorch reference, in one run on one device.

    python -m jaxrl_isaac.bench gr00t [--batch-sizes 1 16 64] [--iters 20] [--no-torch] [--tiny] [--json-out F]

Workload (perf_notes.md): the full-size N1.5 with random weights, bf16, per sample 2 camera images at 224 px
(2 x 256 <IMG_CONTEXT> tokens) + 38 text tokens = 550 tokens, state (1, 64), 4 denoising steps.

Flax: ``GR00TN15.get_action`` under ``jax.jit`` with the params as an argument (nothing closed over, nothing
donated), compiled ahead of time per batch size; median of ``--iters`` calls after ``--warmup``, each ending
with ``block_until_ready``. Breakdown, each jitted on its own: backbone, action head (4 steps), one DiT step.
Memory: the compiled executable's footprint (arguments + outputs + temporaries, from XLA's memory analysis).

PyTorch: lerobot 0.4.4's ``GR00TN15`` built offline (``gr00t_port.reference_torch``), sdpa attention, random
weights cast to bf16, eager, ``torch.inference_mode``; same inputs; median after ``--warmup``; also its backbone
vs action head split; peak memory = ``torch.cuda.max_memory_allocated`` (weights included) per batch size.
If the reference cannot be built or run, the Flax numbers are still printed, with the error on one line.

Also measured in the same run: the bf16 matmul rate (a jitted n x n x n matmul, n = 8192 on GPU) as the peak to
which achieved TFLOP/s are compared, using the FLOP count of ``gr00t_flops`` (useful work only: the cross-
attention K/V of the VL tokens counted once per call, no ``lm_head`` logits).

``--tiny`` runs the toy config (CPU seconds) to exercise the script; on a machine without a GPU the torch peak
memory is n/a (the reference runs on the CPU) and the matmul probe uses n = 1024. The last line printed is one
JSON object.

JAX is imported only after ``configure_jax_memory`` has capped its GPU pool (growing on demand), so the torch
reference has room on the same GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

PROMPT_TEXT_TOKENS = 38  # perf_notes.md: 2 images x 256 + 38 text tokens = 550 tokens per sample
NUM_IMAGES = 2
EMBODIMENT_ID = 31  # new_embodiment's projector slot
GPU_MATMUL_SIZE, CPU_MATMUL_SIZE = 8192, 1024


# ------------------------------------------------------------------------------------------------ FLOP count

def gr00t_flops(cfg: Any, seq_len: int, num_images: int, denoising_steps: int) -> dict[str, float]:
    """Matmul FLOPs (2 per multiply-add) of one ``get_action`` for ONE sample, by part, from the config dims.

    Counted: every Linear / conv / attention product the port computes (attention as QK^T + PV over all key
    positions, causal or not). Not counted: norms, activations, softmax, embedding lookups. The DiT cross-attention
    K/V of the VL tokens are counted once per call (they do not depend on the step; the reference recomputes them
    every step, see ``reference_extra_flops``). ``lm_head`` logits and SigLIP's MAP head are unused, not counted.

    cfg: a ``GR00TConfig``; seq_len: prompt length L (image + text tokens); num_images per sample.
    """
    def linear(tokens: int, d_in: int, d_out: int) -> float:
        return 2.0 * tokens * d_in * d_out

    def attention(q_tokens: int, k_tokens: int, width: int) -> float:
        return 2.0 * 2.0 * q_tokens * k_tokens * width  # QK^T and PV

    v, t, h = cfg.backbone.vision, cfg.backbone.text, cfg.action_head
    n = v.num_patches
    siglip_layer = (linear(n, v.hidden_size, 3 * v.hidden_size) + attention(n, n, v.hidden_size)
                    + linear(n, v.hidden_size, v.hidden_size) + linear(n, v.hidden_size, v.intermediate_size)
                    + linear(n, v.intermediate_size, v.hidden_size))
    siglip = num_images * (linear(n, v.patch_size ** 2 * v.num_channels, v.hidden_size)
                           + v.num_hidden_layers * siglip_layer)
    mlp1 = num_images * linear(n, v.hidden_size, t.hidden_size)

    q_width, kv_width = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    qwen_layer = (linear(seq_len, t.hidden_size, q_width) + linear(seq_len, t.hidden_size, 2 * kv_width)
                  + attention(seq_len, seq_len, q_width) + linear(seq_len, q_width, t.hidden_size)
                  + linear(seq_len, t.hidden_size, 2 * t.intermediate_size)
                  + linear(seq_len, t.intermediate_size, t.hidden_size))
    qwen3 = cfg.backbone.select_layer * qwen_layer

    c, s = h.backbone_embedding_dim, h.vl_self_attention
    vlsa = 0.0
    if h.use_vlln:
        vlsa = s.num_layers * (linear(seq_len, c, 3 * s.inner_dim) + attention(seq_len, seq_len, s.inner_dim)
                               + linear(seq_len, s.inner_dim, c) + linear(seq_len, c, s.ff_mult * c)
                               + linear(seq_len, s.ff_mult * c, c))
    d = h.dit
    width, horizon = d.inner_dim, h.action_horizon
    tokens = 1 + h.num_target_vision_tokens + horizon  # state token, future tokens, action tokens
    head_once = (linear(1, h.max_state_dim, h.hidden_size) + linear(1, h.hidden_size, h.input_embedding_dim)
                 + d.num_pairs * linear(seq_len, d.cross_attention_dim, 2 * width))
    ada_norm = linear(1, width, 2 * width)
    feed_forward = linear(tokens, width, d.ff_mult * width) + linear(tokens, d.ff_mult * width, width)
    cross_block = (ada_norm + linear(tokens, width, width) + attention(tokens, seq_len, width)
                   + linear(tokens, width, width) + feed_forward)
    self_block = (ada_norm + linear(tokens, width, 3 * width) + attention(tokens, tokens, width)
                  + linear(tokens, width, width) + feed_forward)
    dit_step = (linear(1, d.timestep_channels, width) + linear(1, width, width)
                + linear(horizon, h.action_dim, h.input_embedding_dim)
                + linear(horizon, 2 * h.input_embedding_dim, h.input_embedding_dim)
                + linear(horizon, h.input_embedding_dim, h.input_embedding_dim)
                + d.num_pairs * (cross_block + self_block)
                + linear(1, width, 2 * width) + linear(tokens, width, d.output_dim)
                + linear(horizon, h.hidden_size, h.hidden_size) + linear(horizon, h.hidden_size, h.action_dim))
    parts = {"siglip": siglip + mlp1, "qwen3": qwen3, "vl_self_attention": vlsa, "head_once": head_once,
             "dit_steps": denoising_steps * dit_step}
    parts["backbone"] = parts["siglip"] + parts["qwen3"]
    parts["action_head"] = vlsa + head_once + parts["dit_steps"]
    parts["total"] = parts["backbone"] + parts["action_head"]
    parts["dit_step"] = dit_step
    return parts


def reference_extra_flops(cfg: Any, seq_len: int, denoising_steps: int) -> float:
    """FLOPs per sample the PyTorch reference spends beyond ``gr00t_flops``: the unused ``lm_head`` logits
    (L x hidden x vocab) and the cross-attention K/V recomputed at every step after the first."""
    t, h = cfg.backbone.text, cfg.action_head
    lm_head = 2.0 * seq_len * t.hidden_size * t.vocab_size
    kv = h.dit.num_pairs * 2.0 * seq_len * h.dit.cross_attention_dim * 2 * h.dit.inner_dim
    return lm_head + (denoising_steps - 1) * kv


# ------------------------------------------------------------------------------------------------ inputs

def synthetic_inputs(cfg: Any, batch: int, text_tokens: int, num_images: int, embodiment_id: int,
                     seed: int) -> dict[str, np.ndarray]:
    """A processor-shaped batch of equal-length prompts (no padding): per sample, text, then per image a run of
    ``tokens_per_image`` <IMG_CONTEXT> ids (separated by 2 text tokens), then the rest of the text; NHWC pixels
    uniform in [-1, 1]; state N(0, 1); one embodiment id for all samples."""
    b = cfg.backbone
    rng = np.random.default_rng(seed)
    # Ordinary text ids lie below the image token (151669) in the released vocabulary and in the tiny one.
    high = b.image_token_index if b.image_token_index > 2 else b.text.vocab_size
    between = min(2, text_tokens // max(num_images, 1))
    before = (text_tokens - between * (num_images - 1)) // 3
    rows = []
    for _ in range(batch):
        text = list(rng.integers(2, high, text_tokens))
        row, pos = text[:before], before
        for i in range(num_images):
            row += [b.image_token_index] * b.tokens_per_image
            if i < num_images - 1:
                row += text[pos:pos + between]
                pos += between
        rows.append(row + text[pos:])
    ids = np.asarray(rows, np.int64)
    size = b.vision.image_size
    return {
        "eagle_input_ids": ids,
        "eagle_attention_mask": np.ones_like(ids),
        "eagle_pixel_values": rng.uniform(-1, 1, (batch * num_images, size, size, b.vision.num_channels)
                                          ).astype(np.float32),
        "state": rng.standard_normal((batch, 1, cfg.action_head.max_state_dim)).astype(np.float32),
        "embodiment_id": np.full((batch,), embodiment_id, np.int64),
    }


# ------------------------------------------------------------------------------------------------ timing

def median_ms(call: Callable[[], Any], warmup: int, iters: int, sync: Callable[[Any], Any]) -> float:
    """Median wall time of ``sync(call())`` in ms over ``iters`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        sync(call())
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        sync(call())
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _footprint_gb(compiled: Any) -> float | None:
    try:
        m = compiled.memory_analysis()
        return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                - m.alias_size_in_bytes) / 1e9
    except Exception:  # not every backend reports it
        return None


def matmul_peak_tflops(n: int, warmup: int, iters: int) -> float:
    """bf16 (n, n) @ (n, n) under jit with JAX's default precision: 2 n^3 FLOP / median time."""
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.bfloat16)
    b = jax.random.normal(kb, (n, n), jnp.bfloat16)
    matmul = jax.jit(jnp.matmul).lower(a, b).compile()
    ms = median_ms(lambda: matmul(a, b), warmup, iters, jax.block_until_ready)
    del a, b
    return 2.0 * n ** 3 / (ms * 1e-3) / 1e12


@dataclasses.dataclass
class BatchResult:
    batch: int
    flax_ms: float | None = None
    flax_compile_s: float | None = None
    flax_backbone_ms: float | None = None
    flax_head_ms: float | None = None
    flax_dit_step_ms: float | None = None
    flax_peak_gb: float | None = None
    flax_error: str | None = None
    torch_ms: float | None = None
    torch_backbone_ms: float | None = None
    torch_head_ms: float | None = None
    torch_peak_gb: float | None = None
    torch_error: str | None = None


def _one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def run_flax(cfg: Any, batch_sizes: Sequence[int], args: argparse.Namespace, results: dict[int, BatchResult]
             ) -> dict[str, Any]:
    """Init (directly on the device, one jitted init) and time every entry point for every batch size."""
    import jax
    from jax.sharding import Mesh

    from gr00t_port.model import GR00TN15

    model = GR00TN15(cfg)
    mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))
    t0 = time.perf_counter()
    # An "rbg" key (XLA's RngBitGenerator): the weights are random anyway, and the init of its ~100 leaves compiles
    # several times faster than with threefry.
    init_key = jax.random.key(args.seed, impl="rbg")
    params = jax.block_until_ready(model.make_sharded_params(mesh, init_key))
    info = {"init_s": round(time.perf_counter() - t0, 1),
            "num_params": int(sum(x.size for x in jax.tree.leaves(params)))}
    steps = args.denoising_steps
    head = model.action_head

    def get_action(p, inputs, rng):
        return model.get_action(p, inputs, rng=rng, denoising_steps=steps)

    def backbone(p, inputs):
        return model.backbone_features(p, inputs)

    def action_head(p, features, state, embodiment_id, rng):
        return model.action_head_get_action(p, features, state, embodiment_id, rng=rng, denoising_steps=steps)

    def context(p, features, state, embodiment_id):
        return head.encode_context(p["action_head"], features, state, embodiment_id)

    def dit_step(p, ctx, x, t_bucket):
        return head.velocity_from_context(p["action_head"], ctx, x, t_bucket)

    rng = jax.random.key(args.seed + 1)
    sync = jax.block_until_ready
    for bs in batch_sizes:
        r = results[bs]
        try:
            inputs = jax.device_put(synthetic_inputs(cfg, bs, args.text_tokens, args.num_images,
                                                     args.embodiment_id, args.seed))
            t0 = time.perf_counter()
            compiled = jax.jit(get_action).lower(params, inputs, rng).compile()
            r.flax_compile_s = round(time.perf_counter() - t0, 1)
            r.flax_peak_gb = _footprint_gb(compiled)
            r.flax_ms = median_ms(lambda: compiled(params, inputs, rng), args.warmup, args.iters, sync)
            if not args.skip_breakdown:
                bb = jax.jit(backbone).lower(params, inputs).compile()
                r.flax_backbone_ms = median_ms(lambda: bb(params, inputs), args.warmup, args.iters, sync)
                features = sync(bb(params, inputs))
                state, emb = inputs["state"], inputs["embodiment_id"]
                ah = jax.jit(action_head).lower(params, features, state, emb, rng).compile()
                r.flax_head_ms = median_ms(lambda: ah(params, features, state, emb, rng), args.warmup, args.iters,
                                           sync)
                ctx = sync(jax.jit(context)(params, features, state, emb))
                h = cfg.action_head
                x = jax.numpy.zeros((bs, h.action_horizon, h.action_dim), h.jnp_dtype)
                t_bucket = jax.numpy.full((bs,), 500, jax.numpy.int32)
                step = jax.jit(dit_step).lower(params, ctx, x, t_bucket).compile()
                r.flax_dit_step_ms = median_ms(lambda: step(params, ctx, x, t_bucket), args.warmup, args.iters,
                                               sync)
                del features, ctx
            del inputs, compiled
        except Exception as err:  # e.g. out of memory at the largest batch: keep the other sizes
            r.flax_error = _one_line(err)
        print(f"  Flax B={bs}: get_action {_fmt(r.flax_ms)} ms (compile {_fmt(r.flax_compile_s)} s), backbone "
              f"{_fmt(r.flax_backbone_ms)} ms, head {_fmt(r.flax_head_ms)} ms, DiT step {_fmt(r.flax_dit_step_ms, 2)}"
              f" ms, footprint {_fmt(r.flax_peak_gb, 2)} GB" + (f"; FAILED ({r.flax_error})" if r.flax_error else ""),
              flush=True)
        gc.collect()
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        info["allocator_peak_gb"] = round(stats["peak_bytes_in_use"] / 1e9, 2)
    del params
    gc.collect()
    jax.clear_caches()
    return info


def run_torch(cfg: Any, batch_sizes: Sequence[int], args: argparse.Namespace, results: dict[int, BatchResult]
              ) -> dict[str, Any]:
    """Build the lerobot reference (bf16, sdpa) and time ``get_action`` and its two halves per batch size."""
    import torch
    import transformers

    from gr00t_port.reference_torch import build_reference_model, torch_inputs

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    t0 = time.perf_counter()
    model = build_reference_model(cfg, attn_implementation=args.attn, device=device, dtype=torch.bfloat16,
                                  seed=args.seed)
    if cuda:
        torch.cuda.synchronize()
    print(f"torch reference built on {device} in {time.perf_counter() - t0:.1f} s", flush=True)
    info = {"device": device, "build_s": round(time.perf_counter() - t0, 1), "torch": torch.__version__,
            "transformers": transformers.__version__, "attn": args.attn}

    def sync(out):
        if cuda:
            torch.cuda.synchronize()
        return out

    for bs in batch_sizes:
        r = results[bs]
        try:
            batch = torch_inputs(synthetic_inputs(cfg, bs, args.text_tokens, args.num_images, args.embodiment_id,
                                                  args.seed), device, torch.bfloat16)
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            with torch.inference_mode():
                r.torch_ms = median_ms(lambda: model.get_action(dict(batch)), args.warmup, args.iters, sync)
                if cuda:
                    r.torch_peak_gb = torch.cuda.max_memory_allocated() / 1e9
                if not args.skip_breakdown:
                    backbone_in, action_in = model.prepare_input(dict(batch))
                    r.torch_backbone_ms = median_ms(lambda: model.backbone(backbone_in), args.warmup, args.iters,
                                                    sync)
                    features = model.backbone(backbone_in)
                    r.torch_head_ms = median_ms(lambda: model.action_head.get_action(features, action_in),
                                                args.warmup, args.iters, sync)
                    del backbone_in, action_in, features
            del batch
        except Exception as err:
            r.torch_error = _one_line(err)
        print(f"  torch B={bs}: get_action {_fmt(r.torch_ms)} ms, backbone {_fmt(r.torch_backbone_ms)} ms, head "
              f"{_fmt(r.torch_head_ms)} ms, peak {_fmt(r.torch_peak_gb, 2)} GB"
              + (f"; FAILED ({r.torch_error})" if r.torch_error else ""), flush=True)
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    del model
    gc.collect()
    return info


def run_torch_or_error(cfg: Any, batch_sizes: Sequence[int], args: argparse.Namespace,
                       results: dict[int, BatchResult]) -> tuple[dict[str, Any], str | None]:
    """``run_torch``, or ({}, the error on one line) if the reference cannot be imported or built, so that the
    Flax numbers are reported anyway."""
    try:
        return run_torch(cfg, batch_sizes, args, results), None
    except Exception as err:
        return {}, _one_line(err)


# ------------------------------------------------------------------------------------------------ report

def _fmt(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def format_table(rows: Sequence[BatchResult]) -> str:
    lines = ["| batch | Flax get_action ms | Flax backbone ms | Flax head ms | Flax DiT step ms | Flax peak GB "
             "| torch get_action ms | torch backbone ms | torch head ms | torch peak GB | speed-up |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        speedup = r.torch_ms / r.flax_ms if r.torch_ms and r.flax_ms else None
        lines.append(f"| {r.batch} | {_fmt(r.flax_ms)} | {_fmt(r.flax_backbone_ms)} | {_fmt(r.flax_head_ms)} "
                     f"| {_fmt(r.flax_dit_step_ms, 2)} | {_fmt(r.flax_peak_gb, 2)} | {_fmt(r.torch_ms)} "
                     f"| {_fmt(r.torch_backbone_ms)} | {_fmt(r.torch_head_ms)} | {_fmt(r.torch_peak_gb, 2)} "
                     f"| {'n/a' if speedup is None else f'{speedup:.2f}x'} |")
    return "\n".join(lines)


def _tflops(flop: float, ms: float | None) -> float | None:
    return None if not ms else flop / (ms * 1e-3) / 1e12


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jaxrl_isaac.bench gr00t", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--iters", type=int, default=20, help="timed calls per measurement (median reported)")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls before each measurement")
    p.add_argument("--denoising-steps", type=int, default=4)
    p.add_argument("--text-tokens", type=int, default=PROMPT_TEXT_TOKENS, help="non-image tokens per prompt")
    p.add_argument("--num-images", type=int, default=NUM_IMAGES, help="camera images per sample")
    p.add_argument("--embodiment-id", type=int, default=EMBODIMENT_ID)
    p.add_argument("--tiny", action="store_true", help="toy config (CPU seconds), to exercise the script")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa", help="attention backend of the reference")
    p.add_argument("--skip-breakdown", action="store_true", help="time only the whole get_action")
    p.add_argument("--matmul-size", type=int, default=None,
                   help=f"n of the bf16 peak probe (default {GPU_MATMUL_SIZE} on GPU, {CPU_MATMUL_SIZE} otherwise)")
    p.add_argument("--jax-mem-fraction", type=float, default=0.5,
                   help="cap on JAX's GPU pool (share of total memory; grows on demand), the rest is torch's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scan-unroll", type=int, default=1,
                   help="unroll the scanned layer stacks by this many steps (e.g. 64 = fully) in the Flax model")
    p.add_argument("--json-out", default=None, help="also write the JSON result to this file")
    args = p.parse_args(argv)
    if any(b < 1 for b in args.batch_sizes) or args.iters < 1 or args.warmup < 0 or args.denoising_steps < 1:
        p.error("--batch-sizes and --iters must be >= 1, --warmup >= 0, --denoising-steps >= 1")
    if args.num_images < 1 or args.text_tokens < 0:
        p.error("--num-images must be >= 1 and --text-tokens >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    from jaxrl_isaac.jax_setup import configure_jax_memory

    try:
        configure_jax_memory(args.jax_mem_fraction, preallocate=False)
    except RuntimeError as err:  # JAX already running in this process (tests, notebooks)
        print(f"note: {err}; keeping JAX's current memory settings")
    import jax

    from gr00t_port.config import GR00TConfig

    device = jax.devices()[0]
    on_gpu = device.platform == "gpu"
    notes = []
    if not on_gpu:
        notes.append(f"not a GPU ({device.platform}): torch peak memory is n/a")
    cfg_name = "tiny" if args.tiny else "n15"
    base = GR00TConfig.tiny() if args.tiny else GR00TConfig.n15()
    cfg = base.with_numerics(dtype="bfloat16", param_dtype="bfloat16")
    batch_sizes = sorted(set(args.batch_sizes))
    seq_len = args.text_tokens + args.num_images * cfg.backbone.tokens_per_image
    print(f"GR00T N1.5 get_action bench: config={cfg_name} bf16, {args.num_images} images x "
          f"{cfg.backbone.tokens_per_image} tokens + {args.text_tokens} text = {seq_len} tokens, "
          f"{args.denoising_steps} denoising steps, batch sizes {batch_sizes}, median of {args.iters} after "
          f"{args.warmup} warm-ups; JAX {jax.__version__} on {device.device_kind}", flush=True)

    matmul_n = args.matmul_size or (GPU_MATMUL_SIZE if on_gpu else CPU_MATMUL_SIZE)
    if not on_gpu and args.matmul_size is None:
        notes.append(f"matmul peak probe at n={matmul_n} (not {GPU_MATMUL_SIZE}) off GPU")
    peak = matmul_peak_tflops(matmul_n, args.warmup, args.iters)
    print(f"bf16 matmul {matmul_n}^3: {peak:.3g} TFLOP/s", flush=True)

    results = {b: BatchResult(b) for b in batch_sizes}
    from gr00t_port.backbone_config import scan_unroll
    with scan_unroll(args.scan_unroll):  # modules are traced (and their loops unrolled) inside run_flax
        flax_info = run_flax(cfg, batch_sizes, args, results)
    print(f"Flax: {flax_info['num_params']:,} params, init {flax_info['init_s']} s; get_action compile "
          + ", ".join(f"B={b}: {_fmt(results[b].flax_compile_s)} s" for b in batch_sizes), flush=True)

    torch_info, torch_error = ({}, None) if args.no_torch else run_torch_or_error(cfg, batch_sizes, args, results)

    flops = gr00t_flops(cfg, seq_len, args.num_images, args.denoising_steps)
    extra = reference_extra_flops(cfg, seq_len, args.denoising_steps)
    largest = results[batch_sizes[-1]]
    bl = largest.batch
    achieved = {
        "flax_total": _tflops(flops["total"] * bl, largest.flax_ms),
        "flax_backbone": _tflops(flops["backbone"] * bl, largest.flax_backbone_ms),
        "flax_action_head": _tflops(flops["action_head"] * bl, largest.flax_head_ms),
        "torch_total_useful": _tflops(flops["total"] * bl, largest.torch_ms),
        "torch_backbone_useful": _tflops(flops["backbone"] * bl, largest.torch_backbone_ms),
    }

    print()
    print(format_table([results[b] for b in batch_sizes]))
    print()
    tf = lambda flop: f"{flop / 1e12:.3g}"
    print(f"FLOPs per sample (matmuls, K/V once): {tf(flops['total'])} TFLOP = SigLIP+mlp1 {tf(flops['siglip'])} "
          f"+ Qwen3 {tf(flops['qwen3'])} + VL self-attn {tf(flops['vl_self_attention'])} + head once "
          f"{tf(flops['head_once'])} + {args.denoising_steps} DiT steps {tf(flops['dit_steps'])}; the reference "
          f"also computes {tf(extra)} TFLOP of unused lm_head logits and repeated cross K/V")
    pct = lambda x: "n/a" if x is None else f"{x:.3g} TFLOP/s ({100 * x / peak:.0f}% of matmul peak)"
    print(f"batch {bl}: Flax get_action {pct(achieved['flax_total'])}; backbone {pct(achieved['flax_backbone'])}; "
          f"action head {pct(achieved['flax_action_head'])}; torch get_action (useful FLOPs) "
          f"{pct(achieved['torch_total_useful'])}")
    if torch_error:
        print(f"torch reference: FAILED ({torch_error})")
    elif args.no_torch:
        print("torch reference: skipped (--no-torch)")
    else:
        print(f"torch reference: lerobot GR00TN15 on {torch_info['device']}, torch {torch_info['torch']}, "
              f"transformers {torch_info['transformers']}, attn {torch_info['attn']}, built in "
              f"{torch_info['build_s']} s")
    for b in batch_sizes:
        for side, err in (("Flax", results[b].flax_error), ("torch", results[b].torch_error)):
            if err:
                print(f"{side} batch {b}: FAILED ({err})")
    for note in notes:
        print(f"note: {note}")

    record = {
        "suite": "gr00t", "config": cfg_name, "dtype": "bfloat16", "device": device.device_kind,
        "platform": device.platform, "jax": jax.__version__, "seq_len": seq_len, "num_images": args.num_images,
        "denoising_steps": args.denoising_steps, "iters": args.iters, "warmup": args.warmup,
        "matmul_n": matmul_n, "matmul_peak_tflops": float(f"{peak:.4g}"),
        "flops_per_sample": flops, "reference_extra_flops_per_sample": extra,
        "achieved_tflops_at_largest_batch": {k: (None if v is None else float(f"{v:.4g}"))
                                             for k, v in achieved.items()},
        "flax": flax_info, "torch": torch_info, "torch_error": torch_error,
        "results": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in dataclasses.asdict(results[b]).items()}
                    for b in batch_sizes],
        "notes": notes,
    }
    line = json.dumps(record)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(line + "\n")
    print(line)
    return 0
