"""Scripted-expert success rates on the embedded tasks (the proof each task is solvable, and SFT data quality).

``python -m jaxrl_isaac.bench experts [--tasks ...] [--episodes 500] [--num-envs 50] [--seed 1000]``: the first
episode of every sub-env in rounds of ``--num-envs`` seeded resets; prints success and mean episode length.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from jaxrl_isaac.envs import embedded


def first_episode_results(task_id: str, episodes: int, num_envs: int, seed: int, max_episode_steps: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(success, length) of the first episode of ``episodes`` sub-envs."""
    env = embedded.make(task_id, num_envs=num_envs, seed=seed, table_cam=(16, 16), wrist_cam=(16, 16),
                        max_episode_steps=max_episode_steps)
    expert = embedded.make_expert(task_id, env)
    successes, lengths = [], []
    for r in range((episodes + num_envs - 1) // num_envs):
        obs, _ = env.reset(seed=seed + r)
        done = np.zeros(num_envs, bool)
        success = np.zeros(num_envs, bool)
        length = np.zeros(num_envs, np.int64)
        while not done.all():
            obs, _, terminated, truncated, extras = env.step(expert(obs))
            ended = (terminated | truncated).cpu().numpy() & ~done
            success |= ended & extras["success"].cpu().numpy()
            length[~done] += 1
            done |= ended
        successes.append(success)
        lengths.append(length)
    env.close()
    return np.concatenate(successes)[:episodes], np.concatenate(lengths)[:episodes]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxrl_isaac.bench experts", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(embedded.TASK_IDS), choices=list(embedded.TASK_IDS))
    p.add_argument("--episodes", type=int, default=500)
    p.add_argument("--num-envs", type=int, default=50)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--max-episode-steps", type=int, default=600, help="IsaacLab's 30 s at 20 Hz")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    rows = []
    for task in args.tasks:
        t0 = time.perf_counter()
        success, length = first_episode_results(task, args.episodes, args.num_envs, args.seed,
                                                args.max_episode_steps)
        rows.append((task, int(success.sum()), len(success), float(length[success].mean()) if success.any() else 0.0,
                     time.perf_counter() - t0))
        print(f"  {task}: {rows[-1][1]}/{rows[-1][2]} ({rows[-1][4]:.0f} s)", flush=True)
    print("\n| task | expert success | mean length of successful episodes (steps) |\n|---|---:|---:|")
    for task, ok, n, mean_len, _ in rows:
        print(f"| {task} | {ok}/{n} | {mean_len:.1f} |")
    return 0
