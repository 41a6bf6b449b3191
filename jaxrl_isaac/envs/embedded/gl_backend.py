"""Pick MuJoCo's offscreen OpenGL backend before ``mujoco`` is imported (it reads MUJOCO_GL once, at import).

Kept free of any mujoco import on purpose: the package ``__init__`` calls ``configure_gl_backend`` first.
"""

from __future__ import annotations

import os
import sys
import warnings


def _cuda_gpu_visible() -> bool:
    """True when an NVIDIA driver exposes a GPU and CUDA_VISIBLE_DEVICES does not hide all of them.

    Reads /proc instead of asking torch, so that choosing a GL backend never initialises CUDA.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    gpus = "/proc/driver/nvidia/gpus"
    return os.path.isdir(gpus) and len(os.listdir(gpus)) > 0


def configure_gl_backend() -> str:
    """Set MUJOCO_GL (and PYOPENGL_PLATFORM to match) unless the user already chose; returns the backend.

    "egl" when a CUDA GPU is visible (NVIDIA's EGL renders on the GPU), else "osmesa" (software, needs libosmesa6).
    """
    if "MUJOCO_GL" not in os.environ:
        if "mujoco" in sys.modules:
            warnings.warn("mujoco was imported before jaxrl_isaac.envs.embedded and MUJOCO_GL is unset; set "
                          "MUJOCO_GL=osmesa (CPU) or MUJOCO_GL=egl (NVIDIA GPU) before importing mujoco",
                          stacklevel=2)
        os.environ["MUJOCO_GL"] = "egl" if _cuda_gpu_visible() else "osmesa"
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    return os.environ["MUJOCO_GL"]
