"""Embedded-simulator throughput: env-steps/s (one 20 Hz control step of one sub-env) for several batch sizes,
without cameras, with both cameras read every step, and with both read once per action chunk.

    python -m jaxrl_isaac.bench env --num-envs 1 8 64 --steps 200 --cam-size 200 --device cpu
    python -m jaxrl_isaac.bench env --num-envs 64 --modes no_cameras --num-workers 1 8  # processes side by side
    python -m jaxrl_isaac.bench env --num-envs 64 --modes cameras_every_step --env-process  # + the env in its own
                                                                                             # process (EnvProcess)
    python -m jaxrl_isaac.bench env --num-envs 64 --modes cameras_every_chunk --rendering per_frame tiled

With ``--env-process`` every configuration also runs behind ``EnvProcess`` (the env in a spawned process, outputs
through shared buffers: how an IsaacLab eval env runs beside the train env), which reads every obs term, cameras
included, on every step; compare it in the ``cameras_every_step`` mode.

Actions are a fixed-seed random walk of small relative-pose deltas with a random gripper sign, so the arm moves
and the fingers open and close (a still arm would flatter the physics).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import platform
import time

import numpy as np
import torch

from jaxrl_isaac.envs import embedded
from jaxrl_isaac.envs.env_process import EnvProcess

MODES = ("no_cameras", "cameras_every_step", "cameras_every_chunk")


@dataclasses.dataclass(frozen=True)
class BenchResult:
    num_envs: int
    mode: str
    steps: int
    seconds: float
    num_workers: int = 1
    env_process: bool = False
    tiled: bool = False  # cameras rendered as tiles of one buffer (init_params.tiled_rendering)

    @property
    def variant(self) -> tuple[int, bool, bool]:
        return self.num_workers, self.env_process, self.tiled

    @property
    def env_steps_per_s(self) -> float:
        return self.num_envs * self.steps / self.seconds


def _actions(num_envs: int, steps: int, seed: int) -> torch.Tensor:
    """(steps, N, 7) random actions: deltas ~ N(0, 0.1) (0.05 m / 0.05 rad after the env's 0.5 scale)."""
    rng = np.random.default_rng(seed)
    pose = rng.normal(0.0, 0.1, size=(steps, num_envs, 6))
    gripper = np.repeat(rng.choice([-1.0, 1.0], size=(steps // 20 + 1, num_envs, 1)), 20, axis=0)[:steps]
    return torch.from_numpy(np.concatenate([pose, gripper], axis=-1).astype(np.float32))


def run_one(task_id: str, num_envs: int, mode: str, steps: int, cam_size: int, device: str, chunk: int,
            warmup: int = 5, num_workers: int = 1, env_process: bool = False, tiled: bool = False) -> BenchResult:
    """Time ``steps`` env steps of one configuration (after ``warmup`` untimed steps; worker start-up untimed)."""
    make = functools.partial(embedded.make, task_id, num_envs=num_envs, device=device, seed=0,
                             table_cam=(cam_size, cam_size), wrist_cam=(cam_size, cam_size),
                             max_episode_steps=10 ** 6, num_workers=num_workers,
                             **({"tiled_rendering": True} if tiled else {}))
    env = EnvProcess(make, name="bench env") if env_process else make()
    try:
        actions = _actions(num_envs, steps + warmup, seed=0).to(device)
        obs, _ = env.reset(seed=0)
        start = 0.0
        for t in range(steps + warmup):
            if t == warmup:
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
            read = mode == "cameras_every_step" or (mode == "cameras_every_chunk" and t % chunk == 0)
            if read:
                _ = obs["policy"]["table_cam"], obs["policy"]["wrist_cam"]
            obs, *_ = env.step(actions[t])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return BenchResult(num_envs, mode, steps, time.perf_counter() - start, num_workers, env_process, tiled)
    finally:
        env.close()


def format_table(results: list[BenchResult], cam_size: int, chunk: int) -> str:
    """Rows: num_envs; columns: modes, each split by (num_workers, own process, tiled) variant (with its speed-up
    over the first variant) when several were run."""
    headers = {"no_cameras": "no cameras", "cameras_every_step": f"2 cams {cam_size}² every step",
               "cameras_every_chunk": f"2 cams {cam_size}² every {chunk} steps"}
    modes = [m for m in MODES if any(r.mode == m for r in results)]
    workers = sorted({r.variant for r in results})
    columns = [(m, w) for m in modes for w in workers]

    def variant(w: tuple[int, bool, bool]) -> str:
        return f"{w[0]} worker{'s' * (w[0] > 1)}" + (", own process" if w[1] else "") + (", tiled" if w[2] else "")

    if len(workers) == 1:
        titles = [headers[m] for m in modes]
    else:
        titles = [f"{headers[m]}, {variant(w)}" for m, w in columns]
    lines = ["| num_envs | " + " | ".join(titles) + " |", "|---:|" + "---:|" * len(columns)]
    for n in sorted({r.num_envs for r in results}):
        rate = {(r.mode, r.variant): r.env_steps_per_s for r in results if r.num_envs == n}
        cells = []
        for m, w in columns:
            cell = f"{rate[(m, w)]:,.0f}" if (m, w) in rate else "–"
            if w != workers[0] and (m, w) in rate and (m, workers[0]) in rate:
                cell += f" ({rate[(m, w)] / rate[(m, workers[0])]:.1f}x)"
            cells.append(cell)
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jaxrl_isaac.bench env", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default=embedded.TASK_IDS[-1], choices=embedded.TASK_IDS)
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--steps", type=int, default=200, help="timed control steps per configuration")
    parser.add_argument("--camera-steps", type=int, default=None,
                        help="timed steps when cameras are read every step (default: --steps // 10, at least 5)")
    parser.add_argument("--cam-size", type=int, default=200, help="square camera images of this side")
    parser.add_argument("--chunk", type=int, default=16, help="action-chunk length for the every-chunk mode")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--device", default="cpu", help="where the env returns tensors (cpu, cuda, cuda:0)")
    parser.add_argument("--num-workers", type=int, nargs="+", default=[1],
                        help="worker processes stepping the sub-envs (1: in-process); several give side-by-side "
                             "columns with the speed-up over the first")
    parser.add_argument("--env-process", action="store_true",
                        help="also run every configuration with the env in a process of its own (EnvProcess)")
    parser.add_argument("--rendering", nargs="+", default=["per_frame"], choices=("per_frame", "tiled"),
                        help="camera rendering: one read-back per image, or tiles of one buffer "
                             "(init_params.tiled_rendering); several give side-by-side columns")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.num_envs) or args.steps < 1 or any(w < 1 for w in args.num_workers):
        parser.error("--num-envs, --steps and --num-workers must be positive")
    camera_steps = args.camera_steps or max(5, args.steps // 10)
    results = []
    for n in args.num_envs:
        for mode in args.modes:
            variants = [(w, p, r == "tiled") for w in args.num_workers for p in (False, True)[:1 + args.env_process]
                        for r in dict.fromkeys(args.rendering)]
            for workers, own_process, tiled in variants:
                if workers > n or (tiled and mode == "no_cameras" and len(args.rendering) > 1):
                    continue  # a worker needs at least one sub-env; no cameras: nothing to tile
                steps = camera_steps if mode == "cameras_every_step" else args.steps
                results.append(run_one(args.task, n, mode, steps, args.cam_size, args.device, args.chunk,
                                       num_workers=workers, env_process=own_process, tiled=tiled))
                label = ("own process, " if own_process else "") + ("tiled, " if tiled else "") + mode
                print(f"  {args.task} N={n:<4} workers={workers:<3} {label:<40} "
                      f"{results[-1].env_steps_per_s:>10,.0f} env-steps/s ({steps} steps, "
                      f"{results[-1].seconds:.2f} s)", flush=True)
    print(f"\nEmbedded env throughput, env-steps/s ({args.task}, device={args.device}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads={torch.get_num_threads()}):\n")
    print(format_table(results, args.cam_size, args.chunk))


if __name__ == "__main__":
    main()
