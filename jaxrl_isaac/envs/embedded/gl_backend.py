"""Pick MuJoCo's offscreen OpenGL backend before ``mujoco`` is imported (it reads MUJOCO_GL once, at import).

Kept free of any mujoco import on purpose: the package ``__init__`` calls ``configure_gl_backend`` first.
"""

from __future__ import annotations

import os
import sys
import warnings

# mujoco reads MUJOCO_GL once, when its GL-context module is imported (``import mujoco`` does that); the module
# moved in mujoco 4.
_MUJOCO_GL_MODULES = ("mujoco.rendering.classic.gl_context", "mujoco.gl_context")
# Set by configure_gl_backend: mujoco had picked its backend before MUJOCO_GL was set (rendering then likely fails).
GL_CHOSEN_BEFORE_CONFIG = False


def _cuda_gpu_visible() -> bool:
    """True when an NVIDIA driver exposes a GPU and CUDA_VISIBLE_DEVICES does not hide all of them.

    Reads /proc instead of asking torch, so that choosing a GL backend never initialises CUDA.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    gpus = "/proc/driver/nvidia/gpus"
    return os.path.isdir(gpus) and len(os.listdir(gpus)) > 0


def mujoco_gl_already_read() -> bool:
    """True when mujoco has already chosen its GL backend (later changes to MUJOCO_GL have no effect)."""
    return any(name in sys.modules for name in _MUJOCO_GL_MODULES)


def configure_gl_backend() -> str:
    """Set MUJOCO_GL (and PYOPENGL_PLATFORM to match) unless the user already chose; returns the backend.

    "egl" when a CUDA GPU is visible (NVIDIA's EGL renders on the GPU), else "osmesa" (software, needs libosmesa6).
    """
    global GL_CHOSEN_BEFORE_CONFIG
    if "MUJOCO_GL" not in os.environ:
        GL_CHOSEN_BEFORE_CONFIG = mujoco_gl_already_read()
        if GL_CHOSEN_BEFORE_CONFIG:
            warnings.warn("mujoco was imported before jaxrl_isaac.envs.embedded with MUJOCO_GL unset, so camera "
                          "rendering will try a windowed (GLFW) context; set MUJOCO_GL=osmesa (CPU) or "
                          "MUJOCO_GL=egl (NVIDIA GPU) before importing mujoco", stacklevel=3)
        os.environ["MUJOCO_GL"] = "egl" if _cuda_gpu_visible() else "osmesa"
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    if os.environ["MUJOCO_GL"] == "osmesa":
        preload_triton()
    return os.environ["MUJOCO_GL"]


def preload_triton() -> None:
    """Import triton (if installed) before OSMesa creates its first context.

    Debian's OSMesa links its own LLVM; once an OSMesa context exists, importing triton (which torch._dynamo and
    hence transformers import) loads triton's LLVM into the same process and segfaults. Loading triton first is
    safe in both orders, so the embedded simulator does it whenever it renders with OSMesa.
    """
    import importlib.util
    if "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        try:
            import triton  # noqa: F401
        except Exception:  # a broken triton install is torch's problem, not a rendering one
            pass
