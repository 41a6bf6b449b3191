"""Test-wide setup: fake CPU devices for mesh tests, CPU-only JAX, offscreen MuJoCo rendering.

Environment variables are set here, before any test module imports jax or mujoco.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Four fake CPU devices so that NamedSharding over a named mesh is exercised without GPUs (big_vision style).
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
