"""Process-level JAX settings that must be in place before JAX creates its GPU client.

JAX reads its allocator settings from the environment once, when it initialises its backends (the
first ``jax.devices()``, array op or ``jit`` call; a bare ``import jax`` does not). By default it
reserves 75% of the GPU for its own pool, which starves a simulator (IsaacLab, torch) that shares
the GPU. ``configure_jax_memory`` caps that pool; ``configure_jax_determinism`` asks XLA for deterministic GPU
kernels (exact resume); call both at the top of an entry point.

This module never imports jax.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import MutableMapping

# The pool size as a fraction of the GPU's total memory. jaxlib (0.10.2 and newer) reads the new name
# and still accepts the deprecated one, but *raises* when both are set; the CUDA plugin then fails to
# load and JAX silently falls back to the CPU. So exactly one of them may be set.
MEM_FRACTION_VAR = "XLA_CLIENT_MEM_FRACTION"
DEPRECATED_MEM_FRACTION_VAR = "XLA_PYTHON_CLIENT_MEM_FRACTION"
# "false" makes the pool grow on demand (up to the fraction) instead of reserving it at start-up.
PREALLOCATE_VAR = "XLA_PYTHON_CLIENT_PREALLOCATE"

JAX_MEMORY_VARS = (MEM_FRACTION_VAR, DEPRECATED_MEM_FRACTION_VAR, PREALLOCATE_VAR)


def jax_backends_initialized() -> bool:
    """True once JAX has created its backends (so allocator settings no longer take effect).

    Looks only at modules that are already imported; never imports jax.
    """
    xla_bridge = sys.modules.get("jax._src.xla_bridge")
    is_initialized = getattr(xla_bridge, "backends_are_initialized", None)
    return bool(is_initialized()) if is_initialized is not None else False


def configure_jax_memory(fraction: float | None = 0.5, preallocate: bool = True, *,
                         environ: MutableMapping[str, str] | None = None) -> dict[str, str | None]:
    """Caps JAX's GPU memory pool so that a simulator on the same GPU keeps the rest.

    Args:
      fraction: share of the GPU's *total* memory that JAX's pool may use, in (0, 1]; written to
        ``XLA_CLIENT_MEM_FRACTION``. None leaves the fraction alone (JAX's default is 0.75).
      preallocate: False sets ``XLA_PYTHON_CLIENT_PREALLOCATE=false``: the pool then grows on demand
        up to ``fraction`` (less memory held early, more fragmentation). True keeps JAX's default
        (reserve the whole pool at start-up).
      environ: the environment to edit (tests); defaults to ``os.environ``.

    A value the user already exported wins over the arguments (with a one-line warning when they
    differ), so ``XLA_CLIENT_MEM_FRACTION=.3 python -m ...`` keeps working.

    Returns:
      The three allocator variables as they are now set (None where unset), for the run log.
    Raises:
      ValueError: ``fraction`` outside (0, 1], or both fraction variables exported.
      RuntimeError: JAX has already initialised its backends, so the settings would be ignored.
    """
    env = os.environ if environ is None else environ
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                 or not 0.0 < fraction <= 1.0):
        raise ValueError(f"jax memory fraction must be a number in (0, 1], got {fraction!r}")
    if env is os.environ and jax_backends_initialized():
        raise RuntimeError("configure_jax_memory was called after JAX initialised its backends; "
                           "call it before the first jax.devices()/array op/jit of the process")
    if env.get(MEM_FRACTION_VAR) and env.get(DEPRECATED_MEM_FRACTION_VAR):
        raise ValueError(f"both {MEM_FRACTION_VAR} and {DEPRECATED_MEM_FRACTION_VAR} are set; jaxlib refuses "
                         f"that and falls back to the CPU: unset {DEPRECATED_MEM_FRACTION_VAR}")

    if fraction is not None:
        exported = next((name for name in (MEM_FRACTION_VAR, DEPRECATED_MEM_FRACTION_VAR) if env.get(name)), None)
        if exported is None:
            env[MEM_FRACTION_VAR] = f"{float(fraction):g}"
        elif _as_float(env[exported]) != float(fraction):
            warnings.warn(f"{exported}={env[exported]} from the environment overrides the configured "
                          f"JAX memory fraction {fraction:g}", stacklevel=2)
    if not preallocate:
        exported = env.get(PREALLOCATE_VAR)
        if exported is None:
            env[PREALLOCATE_VAR] = "false"
        elif exported not in ("false", "False", "0"):
            warnings.warn(f"{PREALLOCATE_VAR}={exported} from the environment overrides preallocate=False",
                          stacklevel=2)
    return {name: env.get(name) for name in JAX_MEMORY_VARS}


DETERMINISTIC_OPS_FLAG = "--xla_gpu_deterministic_ops"


def configure_jax_determinism(enabled: bool, *, environ: MutableMapping[str, str] | None = None) -> str | None:
    """Adds ``--xla_gpu_deterministic_ops=true`` to ``XLA_FLAGS`` when ``enabled`` (GPU kernels that give the same
    bits on every run, at some speed; CPU kernels already do). A setting of that flag the user exported in
    ``XLA_FLAGS`` wins. Returns ``XLA_FLAGS`` as it is now set.

    Raises:
      RuntimeError: JAX has already initialised its backends, so the flag would be ignored.
    """
    env = os.environ if environ is None else environ
    flags = env.get("XLA_FLAGS", "")
    if not enabled or DETERMINISTIC_OPS_FLAG in flags:
        return flags or None
    if env is os.environ and jax_backends_initialized():
        raise RuntimeError("configure_jax_determinism was called after JAX initialised its backends; "
                           "call it before the first jax.devices()/array op/jit of the process")
    env["XLA_FLAGS"] = f"{flags} {DETERMINISTIC_OPS_FLAG}=true".strip()
    return env["XLA_FLAGS"]


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
