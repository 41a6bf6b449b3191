"""Offscreen camera rendering of sub-envs: one ``mujoco.Renderer`` frame per sub-env, or tiled.

Per frame (the default): each sub-env's image is drawn at the buffer's origin and read back on its own, i.e. one GL
sync per image. Tiled (``tiled=True``, as IsaacLab's ``TiledCamera``): the images of all sub-envs are drawn into
tiles of one large offscreen buffer and read back with a single ``glReadPixels``. On the GPU (EGL) the per-image
sync is what makes several worker processes' rendering slower than one process's, so tiling pays most there.
Tiles are placed by the sub-env's index in this env, so a given (seed, num_workers) renders the same pixels every
time; they can differ from the per-frame images in a lone pixel where the rasterizer rounds an edge differently at
the tile's offset (``tests/test_embedded_env.py`` bounds that).

The OpenGL context lives in the thread that created it, so all rendering happens on the env's calling thread.
"""

from __future__ import annotations

import copy
import os

import mujoco
import numpy as np

from jaxrl_isaac.envs.embedded import gl_backend

_LATE_IMPORT_HINT = ("mujoco was imported before MUJOCO_GL was set, so it kept its default backend: set MUJOCO_GL "
                     "in the environment or import jaxrl_isaac.envs.embedded before mujoco; ")
_INSTALL_HINT = ("install libosmesa6 and set MUJOCO_GL=osmesa (CPU), or install the NVIDIA EGL libraries "
                 "(libEGL_nvidia via the driver, libglvnd) and set MUJOCO_GL=egl (GPU)")


MAX_TILED_BUFFER = 2048  # pixels per side of a tiled buffer; more sub-envs than fit are drawn in several passes


def _gl_failure(err: Exception, chosen_before_config: bool) -> RuntimeError:
    late = _LATE_IMPORT_HINT if chosen_before_config else ""
    return RuntimeError(f"MuJoCo offscreen rendering failed with MUJOCO_GL={os.environ.get('MUJOCO_GL', '<unset>')} "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); {late}"
                        f"{_INSTALL_HINT}")


def tile_grid(num_images: int, hw: tuple[int, int], max_side: int | None = None) -> tuple[int, int]:
    """(rows, cols) of the tiled buffer for ``num_images`` images of ``hw`` = (height, width): as wide as the images
    need up to ``max_side`` pixels, then as many rows as they need up to ``max_side`` (further images: more passes)."""
    h, w = hw
    max_side = MAX_TILED_BUFFER if max_side is None else max_side
    if h > max_side or w > max_side:
        raise ValueError(f"a camera of {h}x{w} px does not fit a tiled buffer of at most {max_side} px per side")
    cols = max(1, min(num_images, max_side // w))
    rows = max(1, min(-(-num_images // cols), max_side // h))
    return rows, cols


class _TiledTarget:
    """An offscreen buffer of rows x cols tiles of (h, w) with its own GL context and scene."""

    def __init__(self, model: mujoco.MjModel, hw: tuple[int, int], num_images: int):
        self.hw = hw
        self.rows, self.cols = tile_grid(num_images, hw)
        h, w = hw
        self._model = copy.copy(model)  # only the offscreen buffer size differs; the env's model stays untouched
        self._model.vis.global_.offwidth = max(self._model.vis.global_.offwidth, self.cols * w)
        self._model.vis.global_.offheight = max(self._model.vis.global_.offheight, self.rows * h)
        self._gl = mujoco.GLContext(self.cols * w, self.rows * h)
        self._gl.make_current()
        self._context = mujoco.MjrContext(self._model, mujoco.mjtFontScale.mjFONTSCALE_150.value)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN.value, self._context)
        self._scene = mujoco.MjvScene(self._model, maxgeom=10000)
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._buffer = np.empty((self.rows * h, self.cols * w, 3), np.uint8)

    def render(self, camera_id: int, datas: list[mujoco.MjData], out: np.ndarray) -> None:
        """Draws image i of ``datas`` into tile i (row-major from the buffer's bottom-left, per pass) and reads each
        pass back at once into ``out`` (N, h, w, 3)."""
        h, w = self.hw
        per_pass = self.rows * self.cols
        self._gl.make_current()
        self._camera.fixedcamid = camera_id
        for start in range(0, len(datas), per_pass):
            batch = datas[start:start + per_pass]
            for j, data in enumerate(batch):
                mujoco.mjv_updateScene(self._model, data, self._option, None, self._camera,
                                       mujoco.mjtCatBit.mjCAT_ALL.value, self._scene)
                row, col = divmod(j, self.cols)
                mujoco.mjr_render(mujoco.MjrRect(col * w, row * h, w, h), self._scene, self._context)
            used_rows = -(-len(batch) // self.cols)
            pixels = self._buffer[:used_rows * h]
            mujoco.mjr_readPixels(pixels, None, mujoco.MjrRect(0, 0, self.cols * w, used_rows * h), self._context)
            # GL rows run bottom-up: tile (row, col) is pixels[row*h:(row+1)*h, col*w:(col+1)*w] upside down.
            tiles = pixels.reshape(used_rows, h, self.cols, w, 3).transpose(0, 2, 1, 3, 4).reshape(-1, h, w, 3)
            out[start:start + len(batch)] = tiles[:len(batch), ::-1]

    def close(self) -> None:
        if self._context is not None:
            self._gl.make_current()
            self._context.free()
            self._context = None
            self._gl.free()


class CameraRenderer:
    """Renders named cameras of many MjData that share one MjModel.

    Args:
      model: the shared model.
      camera_hw: camera name -> (height, width) of its images.
      tiled: draw all sub-envs' images into one buffer and read it back once per camera (see the module doc).
    """

    def __init__(self, model: mujoco.MjModel, camera_hw: dict[str, tuple[int, int]], tiled: bool = False):
        self._model = model
        self._camera_hw = dict(camera_hw)
        self.tiled = bool(tiled)
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._tiled_targets: dict[tuple[tuple[int, int], int], _TiledTarget] = {}
        self._camera_ids = {name: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name) for name in camera_hw}
        self.frames_rendered = 0  # total camera images rendered (one per sub-env per camera read)
        self._gl_chosen_before_config = gl_backend.GL_CHOSEN_BEFORE_CONFIG

    def _renderer(self, hw: tuple[int, int]) -> mujoco.Renderer:
        if hw not in self._renderers:
            try:
                self._renderers[hw] = mujoco.Renderer(self._model, height=hw[0], width=hw[1])
            except Exception as err:  # noqa: BLE001 - any GL failure gets the same actionable message
                raise _gl_failure(err, self._gl_chosen_before_config) from None
        return self._renderers[hw]

    def _tiled_target(self, hw: tuple[int, int], num_images: int) -> _TiledTarget:
        key = (hw, num_images)
        if key not in self._tiled_targets:
            tile_grid(num_images, hw)  # a camera too large to tile is a config error, not a GL failure
            try:
                self._tiled_targets[key] = _TiledTarget(self._model, hw, num_images)
            except Exception as err:  # noqa: BLE001 - any GL failure gets the same actionable message
                raise _gl_failure(err, self._gl_chosen_before_config) from None
        return self._tiled_targets[key]

    def render(self, camera: str, datas: list[mujoco.MjData]) -> np.ndarray:
        """Images of ``camera`` for every MjData (their kinematics must be current); (N, H, W, 3) uint8."""
        if camera not in self._camera_hw:
            raise KeyError(f"unknown camera {camera!r}; cameras: {', '.join(self._camera_hw)}")
        hw = self._camera_hw[camera]
        images = np.empty((len(datas), hw[0], hw[1], 3), dtype=np.uint8)
        if self.tiled and datas:
            self._tiled_target(hw, len(datas)).render(self._camera_ids[camera], datas, images)
        else:
            renderer = self._renderer(hw)
            for i, data in enumerate(datas):
                renderer.update_scene(data, camera=camera)
                renderer.render(out=images[i])
        self.frames_rendered += len(datas)
        return images

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        for target in self._tiled_targets.values():
            target.close()
        self._tiled_targets.clear()
