"""Offscreen camera rendering of sub-envs with ``mujoco.Renderer`` (one renderer per image size, reused).

The OpenGL context lives in the thread that created it, so all rendering happens on the env's calling thread.
"""

from __future__ import annotations

import os

import mujoco
import numpy as np

from jaxrl_isaac.envs.embedded import gl_backend

_LATE_IMPORT_HINT = ("mujoco was imported before MUJOCO_GL was set, so it kept its default backend: set MUJOCO_GL "
                     "in the environment or import jaxrl_isaac.envs.embedded before mujoco; ")
_INSTALL_HINT = ("install libosmesa6 and set MUJOCO_GL=osmesa (CPU), or install the NVIDIA EGL libraries "
                 "(libEGL_nvidia via the driver, libglvnd) and set MUJOCO_GL=egl (GPU)")


class CameraRenderer:
    """Renders named cameras of many MjData that share one MjModel.

    Args:
      model: the shared model.
      camera_hw: camera name -> (height, width) of its images.
    """

    def __init__(self, model: mujoco.MjModel, camera_hw: dict[str, tuple[int, int]]):
        self._model = model
        self._camera_hw = dict(camera_hw)
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self.frames_rendered = 0  # total camera images rendered (one per sub-env per camera read)
        self._gl_chosen_before_config = gl_backend.GL_CHOSEN_BEFORE_CONFIG

    def _renderer(self, hw: tuple[int, int]) -> mujoco.Renderer:
        if hw not in self._renderers:
            try:
                self._renderers[hw] = mujoco.Renderer(self._model, height=hw[0], width=hw[1])
            except Exception as err:  # noqa: BLE001 - any GL failure gets the same actionable message
                late = _LATE_IMPORT_HINT if self._gl_chosen_before_config else ""
                raise RuntimeError(f"MuJoCo offscreen rendering failed with MUJOCO_GL="
                                   f"{os.environ.get('MUJOCO_GL', '<unset>')} ({type(err).__name__}: "
                                   f"{str(err).splitlines()[0] if str(err) else ''}); {late}{_INSTALL_HINT}"
                                   ) from None
        return self._renderers[hw]

    def render(self, camera: str, datas: list[mujoco.MjData]) -> np.ndarray:
        """Images of ``camera`` for every MjData (their kinematics must be current); (N, H, W, 3) uint8."""
        if camera not in self._camera_hw:
            raise KeyError(f"unknown camera {camera!r}; cameras: {', '.join(self._camera_hw)}")
        hw = self._camera_hw[camera]
        renderer = self._renderer(hw)
        images = np.empty((len(datas), hw[0], hw[1], 3), dtype=np.uint8)
        for i, data in enumerate(datas):
            renderer.update_scene(data, camera=camera)
            renderer.render(out=images[i])
        self.frames_rendered += len(datas)
        return images

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
