"""Where a camera frame's time goes: MuJoCo's scene update, the GL render and the pixel read-back, per frame, and
the same frames rendered as tiles of one offscreen buffer with a single read-back (compared pixel by pixel).

    python -m jaxrl_isaac.bench render --task Embedded-Stack-Cube-Franka-IK-Rel-v0 --num-envs 64 --cam-size 32

By default the embedded env renders one ``mujoco.Renderer`` frame per sub-env and camera
(``envs/embedded/rendering.py``): ``update_scene`` + ``mjr_render`` + ``mjr_readPixels``; with
``init_params.tiled_rendering`` it draws all sub-envs into tiles of one buffer and reads it once (``tiled_total``
here, the env's own tiled renderer). If the read-back (a GL sync per frame) dominated, tiling would pay most; if
the render call does, less. OSMesa (CPU) and EGL (GPU) can differ, hence this suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from jaxrl_isaac.envs import embedded
from jaxrl_isaac.envs.embedded.rendering import CameraRenderer


def _timed(fn, repeats: int) -> float:
    """Seconds per call of ``fn`` (mean over ``repeats`` after one untimed call)."""
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def measure(task_id: str, num_envs: int, cam_size: int, camera: str, repeats: int) -> dict[str, float]:
    """Milliseconds per frame of each part, and of the tiled variant; ``tiled_*_abs_diff``: its pixels against the
    per-frame ones, in 0-255 levels (a lone pixel can differ: the rasterizer rounds differently at another
    viewport offset)."""
    import mujoco

    env = embedded.make(task_id, num_envs=num_envs, device="cpu", seed=0, table_cam=(cam_size, cam_size),
                        wrist_cam=(cam_size, cam_size))
    try:
        model, datas = env.model, env._datas  # noqa: SLF001 - the env's own model and sub-env states
        one = mujoco.Renderer(model, height=cam_size, width=cam_size)
        frame = np.empty((cam_size, cam_size, 3), np.uint8)

        def update_all():
            for d in datas:
                one.update_scene(d, camera=camera)

        def render_all():  # the last updated scene, rendered N times: the render call alone
            for _ in datas:
                mujoco.mjr_render(one._rect, one._scene, one._mjr_context)  # noqa: SLF001

        def read_all():
            for _ in datas:
                mujoco.mjr_readPixels(frame, None, one._rect, one._mjr_context)  # noqa: SLF001

        def per_frame_all():  # the env's own renderer, as a camera read in a rollout
            return env._renderer.render(camera, datas)  # noqa: SLF001

        tiled = CameraRenderer(model, {camera: (cam_size, cam_size)}, tiled=True)  # init_params.tiled_rendering

        def tiled_all():
            return tiled.render(camera, datas)

        def current(fn):
            def run():
                one._gl_context.make_current()  # noqa: SLF001
                return fn()
            return run

        n = float(num_envs)
        result = {
            "update_scene": _timed(current(update_all), repeats) / n * 1e3,
            "mjr_render": _timed(current(render_all), repeats) / n * 1e3,
            "mjr_readPixels": _timed(current(read_all), repeats) / n * 1e3,
            "per_frame_total": _timed(per_frame_all, repeats) / n * 1e3,
            "tiled_total": _timed(tiled_all, repeats) / n * 1e3,
        }
        reference = per_frame_all()
        diff = np.abs(tiled_all().astype(int) - reference.astype(int))
        result["tiled_max_abs_diff"], result["tiled_mean_abs_diff"] = float(diff.max()), float(diff.mean())
        one.close()
        tiled.close()
        return result
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxrl_isaac.bench render", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="Embedded-Stack-Cube-Franka-IK-Rel-v0")
    p.add_argument("--num-envs", type=int, nargs="+", default=[64])
    p.add_argument("--cam-size", type=int, nargs="+", default=[32])
    p.add_argument("--camera", default="table_cam", choices=["table_cam", "wrist_cam"])
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    print(f"# {platform.node()} MUJOCO_GL={os.environ.get('MUJOCO_GL', '<unset>')} task={args.task} "
          f"camera={args.camera}; ms per frame")
    keys = ("update_scene", "mjr_render", "mjr_readPixels", "per_frame_total", "tiled_total", "tiled_max_abs_diff",
            "tiled_mean_abs_diff")
    print("| N | px | " + " | ".join(keys) + " |")
    print("|---:|---:|" + "---:|" * len(keys))
    for n in args.num_envs:
        for px in args.cam_size:
            r = measure(args.task, n, px, args.camera, args.repeats)
            print(f"| {n} | {px} | " + " | ".join(f"{r[k]:.4g}" for k in keys) + " |")
    return 0
