"""Seeds x variants of the CPU default run (`python -m jaxrl_isaac.train`), side by side on one GPU host.

The CPU default run is one draw of a noisy process (BENCHMARKS.md, "Learning: the default run"); judging a recipe
takes several seeds, which 2 CPU cores cannot give in a session. This runs them in parallel processes on the device
host (16 cores, one GPU shared with small JAX memory fractions) with the same config, so the statistics transfer
(not the float-level trajectories). Per seed: the bootstrap SFT (the exact recipe `train` would run, made once and
copied into every variant's log dir, where `train` reuses it), its eval; per variant and seed: `train`, then an eval of
the last checkpoint. Every eval is `python -m jaxrl_isaac.eval` over EVAL_ENVS episodes.

    python benchmarks/default_run_sweep.py --seeds 1 2 3 --variant base: \
        --variant env64:env.train.total_num_envs=64,actor.global_batch_size=640 --budget 540 --out $OUT

Prints, and writes to OUT/sweep.json, one row per (variant, seed): eval success of the start and the end, mean rollout
env/success_once over the first and the last 10 steps, and seconds per step.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

CONFIG = "embedded_reach_ppo_gr00t_tiny"
ROOT = pathlib.Path(__file__).resolve().parents[1]


# The bootstrap exactly as `train` makes it (gr00t_policy.bootstrap_checkpoint_for: recipe, reuse file and all) into
# <log_path>/bootstrap, with the deterministic GPU ops `train` would ask for; argv: the config overrides.
_MAKE_BOOTSTRAP = (
    "import sys\n"
    "from jaxrl_isaac.config.loader import load_config\n"
    "from jaxrl_isaac.jax_setup import configure_jax_determinism\n"
    f"cfg = load_config({CONFIG!r}, overrides=sys.argv[1:])\n"
    "configure_jax_determinism(cfg.cluster.deterministic_gpu_ops)\n"
    "from jaxrl_isaac.models.gr00t_policy import bootstrap_checkpoint_for\n"
    "print(bootstrap_checkpoint_for(cfg))\n")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--variant", action="append", required=True, help="NAME:override,override,...")
    p.add_argument("--budget", type=float, default=540.0, help="seconds; unfinished runs are stopped and reported")
    p.add_argument("--parallel", type=int, default=8)
    p.add_argument("--eval-envs", type=int, default=128)
    p.add_argument("--work", default="results/sweep")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    t0 = time.monotonic()
    work, out = pathlib.Path(args.work), pathlib.Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    common = ["cluster.jax_mem_fraction=0.08"]
    logs = open(out / "sweep_log.txt", "a")

    def launch(cmd: list[str], name: str) -> subprocess.Popen:
        logs.write(f"{time.monotonic() - t0:7.1f}s start {name}: {' '.join(cmd)}\n")
        logs.flush()
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(work / f"{name}.log", "w"), stderr=subprocess.STDOUT)

    # 1. Bootstraps (one per seed, in work/boot_<seed>/bootstrap), in parallel; a finished one is reused.
    boots = {seed: launch([sys.executable, "-c", _MAKE_BOOTSTRAP, f"actor.seed={seed}",
                           f"runner.logger.log_path={work / f'boot_{seed}'}"], f"boot_{seed}") for seed in args.seeds}
    for seed, proc in boots.items():
        if proc.wait() != 0:
            print(f"bootstrap {seed} failed; see {work}/boot_{seed}.log")
            return 1
    logs.write(f"{time.monotonic() - t0:7.1f}s bootstraps done\n")

    # 2. Runs and evals, at most --parallel at a time.
    queue: list[tuple[str, list[str]]] = []
    for seed in args.seeds:
        step_dirs = sorted((work / f"boot_{seed}" / "bootstrap").glob("global_step_*"))
        ev_dir = work / f"eval_boot_{seed}"
        if not (ev_dir / "metrics.jsonl").is_file():
            queue.append((f"eval_boot_{seed}", [
                sys.executable, "-m", "jaxrl_isaac.eval", "--config-name", CONFIG, "actor.model.bootstrap=null",
                f"actor.model.model_path={step_dirs[-1]}", f"env.eval.total_num_envs={args.eval_envs}",
                f"runner.logger.log_path={ev_dir}", f"actor.seed={seed}", *common]))
    for variant in args.variant:
        name, _, overrides = variant.partition(":")
        extra = [o for o in overrides.split(",") if o]
        for seed in args.seeds:
            run_dir = work / f"{name}_{seed}"
            if not (run_dir / "bootstrap").exists():
                run_dir.mkdir(parents=True, exist_ok=True)
                shutil.copytree(work / f"boot_{seed}" / "bootstrap", run_dir / "bootstrap")
            queue.append((f"{name}_{seed}", [
                sys.executable, "-m", "jaxrl_isaac.train", "--config-name", CONFIG, f"actor.seed={seed}",
                f"runner.logger.log_path={run_dir}", "runner.save_interval=-1", *common, *extra]))
    running: dict[str, subprocess.Popen] = {}
    deadline = t0 + args.budget
    while queue or running:
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                logs.write(f"{time.monotonic() - t0:7.1f}s done {name} rc={proc.returncode}\n")
                logs.flush()
                if not name.startswith("eval_") and proc.returncode == 0:
                    run_dir = work / name
                    ckpts = sorted((run_dir / "checkpoints").glob("global_step_*"),
                                   key=lambda d: int(d.name.rsplit("_", 1)[1]))
                    variant = next(v for v in args.variant if v.partition(":")[0] == name.rsplit("_", 1)[0])
                    extra = [o for o in variant.partition(":")[2].split(",") if o]
                    if ckpts:  # logs into the run dir, where the bootstrap is found and reused
                        queue.insert(0, (f"eval_{name}", [
                            sys.executable, "-m", "jaxrl_isaac.eval", "--config-name", CONFIG, f"actor.seed={seed_of(name)}",
                            f"runner.ckpt_path={ckpts[-1]}", f"env.eval.total_num_envs={args.eval_envs}",
                            f"runner.logger.log_path={run_dir}", *common, *extra]))
        while queue and len(running) < args.parallel:
            name, cmd = queue.pop(0)
            running[name] = launch(cmd, name)
        if time.monotonic() > deadline:
            for name, proc in running.items():
                proc.kill()
                logs.write(f"{time.monotonic() - t0:7.1f}s killed {name} at the budget\n")
            break
        time.sleep(2)
    logs.close()

    rows = []
    for variant in args.variant:
        name = variant.partition(":")[0]
        for seed in args.seeds:
            rows.append(summarize(work, name, seed))
    (out / "sweep.json").write_text(json.dumps(rows, indent=1))
    for row in rows:
        print(json.dumps(row))
    subprocess.run(["tar", "czf", str((out / "sweep_metrics.tgz").resolve()), *[str(p.relative_to(work)) for p in
                                                                    work.glob("*/metrics.jsonl")]], cwd=work)
    return 0


def seed_of(run_name: str) -> int:
    return int(run_name.rsplit("_", 1)[1])


def _read(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in open(path)] if path.is_file() else []


def _eval_success(path: pathlib.Path) -> float | None:
    rows = [r for r in _read(path / "metrics.jsonl") if "eval/success_once" in r]
    return rows[-1]["eval/success_once"] if rows else None


def summarize(work: pathlib.Path, name: str, seed: int) -> dict:
    train = [r for r in _read(work / f"{name}_{seed}" / "metrics.jsonl") if "env/success_once" in r]
    succ = [r["env/success_once"] for r in train]
    mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None  # noqa: E731
    step_times = sorted(r["time/step"] for r in train if "time/step" in r)
    return {"variant": name, "seed": seed, "steps": len(train),
            "eval_start": _eval_success(work / f"eval_boot_{seed}"),
            "eval_end": _eval_success(work / f"{name}_{seed}"),
            "rollout_first10": mean(succ[:10]), "rollout_last10": mean(succ[-10:]),
            "rollout_blocks": [mean(succ[i:i + 10]) for i in range(0, len(succ), 10)],
            "median_step_s": step_times[len(step_times) // 2] if step_times else None}


if __name__ == "__main__":
    sys.exit(main())
