"""`python -m jaxrl_isaac.train` end to end on the embedded simulator: a 2-step run with tensorboard scalars and a
checkpoint, and a resumed run whose next step equals the uninterrupted run's (openpi's train_test style)."""

import json
from pathlib import Path

import pytest

from jaxrl_isaac import train

TINY = [
    "env.train.total_num_envs=4", "env.train.max_episode_steps=16", "env.train.max_steps_per_rollout_epoch=16",
    "actor.model.num_action_chunks=4", "actor.global_batch_size=8", "actor.micro_batch_size=2",
    "algorithm.update_epoch=2", "runner.save_interval=-1",
]


def _run(tmp: Path, name: str, *extra: str) -> list[dict]:
    log = tmp / name
    rc = train.main(["--config-name", "embedded_reach_ppo_baseline", *TINY, f"runner.logger.log_path={log}", *extra])
    assert rc == 0
    return [json.loads(line) for line in (log / "metrics.jsonl").read_text().splitlines()]


SEED_METRICS = ["actor/loss", "actor/value_loss", "actor/grad_norm", "actor/approx_kl", "actor/pg_clipfrac",
                "actor/value_clip_ratio", "rollout/returns_mean", "rollout/advantages_mean", "env/episode_len",
                "env/success_once"]


def test_two_steps_then_resume_matches_uninterrupted_run(tmp_path):
    full = _run(tmp_path, "full", "runner.max_epochs=4")
    assert [r["step"] for r in full] == [1, 2, 3, 4]

    first = _run(tmp_path, "resumed", "runner.max_epochs=2")
    ckpt = tmp_path / "resumed" / "checkpoints" / "global_step_2"
    assert (ckpt / "params").is_dir() and (ckpt / "train_state").is_dir() and (ckpt / "assets").is_dir()
    assert not list((tmp_path / "resumed" / "checkpoints").glob("*tmp*")), "a temporary checkpoint dir was left"
    for key in SEED_METRICS + ["throughput/env_steps_per_s", "time/generate_rollouts", "time/actor_training"]:
        assert key in first[0], key

    resumed = _run(tmp_path, "resumed", "runner.max_epochs=4",
                   f"runner.resume_dir={tmp_path / 'resumed' / 'checkpoints'}")
    # The resumed invocation ran only steps 3 and 4, and they are the uninterrupted run's: the second step after
    # the resume checks the first update after it too (optimizer state, step counter, RNG).
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for step in (2, 3):
        for key in SEED_METRICS + ["env/return", "actor/entropy"]:
            assert resumed[step][key] == pytest.approx(full[step][key], rel=1e-6, abs=1e-7), (step + 1, key)

    # tensorboard event files carry the seed's metric names.
    tags = _tensorboard_scalar_tags(tmp_path / "full" / "tensorboard")
    assert set(SEED_METRICS) <= tags, set(SEED_METRICS) - tags
    # The resolved config is saved next to the logs.
    saved = json.loads((tmp_path / "full" / "config.json").read_text())
    assert saved["env"]["train"]["total_num_envs"] == 4


def _tensorboard_scalar_tags(logdir: Path) -> set[str]:
    """Reads the TFRecord event files directly (length, crc, payload, crc) with tensorboardX's protobufs."""
    import struct
    from tensorboardX.proto import event_pb2
    tags = set()
    for path in logdir.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
            tags.update(v.tag for v in event.summary.value)
            i += 12 + length + 4
    return tags


def test_bad_config_is_one_line_and_starts_nothing(tmp_path, capsys):
    rc = train.main(["--config-name", "embedded_reach_ppo_baseline", "algorithm.clip_ratio_hgh=0.3",
                     f"runner.logger.log_path={tmp_path / 'x'}"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "clip_ratio_high" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("override, message", [
    ("runner.resume_dir={tmp}/nope", "does not exist"),
    ("runner.ckpt_path={tmp}/nope", "does not exist"),
    ("actor.model.model_type=gr00t actor.model.model_path={tmp}", "holds no complete 'global_step_<N>' checkpoint"),
    ("env.train.env_type=isaaclab env.train.init_params.id=Isaac-Stack-Cube-Franka-IK-Rel-Visuomotor-v0 "
     "env.train.init_params.reward_type=sparse", "needs IsaacLab"),
    ("env.train.env_type=isaaclab", "unknown IsaacLab task id 'Embedded-Reach-Franka-IK-Rel-v0'"),
    ("env.train.init_params.id=Embedded-Nope-v0", "known ids: Embedded-Reach-Franka-IK-Rel-v0"),
])
def test_bad_run_inputs_are_one_line(tmp_path, capsys, override, message):
    rc = train.main(["--config-name", "embedded_reach_ppo_baseline", *TINY, "runner.max_epochs=1",
                     f"runner.logger.log_path={tmp_path / 'r'}", *override.format(tmp=tmp_path).split()])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_interrupt_says_where_to_resume(tmp_path, monkeypatch, capsys):
    """Ctrl-C (or `timeout --signal=INT`) after a checkpoint: exit code 130 and one line naming the resume dir."""
    from jaxrl_isaac.runner import EmbodiedRunner
    original = EmbodiedRunner.train_step

    def interrupt_at_third_step(self, step):
        if step == 2:
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(EmbodiedRunner, "train_step", interrupt_at_third_step)
    log = tmp_path / "run"
    rc = train.main(["--config-name", "embedded_reach_ppo_baseline", *TINY, "runner.save_interval=1",
                     "runner.max_epochs=4", f"runner.logger.log_path={log}"])
    assert rc == 130
    assert f"interrupted; continue from global step 2 with runner.resume_dir={log / 'checkpoints'}" in \
        capsys.readouterr().err
    assert len((log / "metrics.jsonl").read_text().splitlines()) == 2


def test_wall_time_limit_stops_with_a_checkpoint_and_the_run_continues(tmp_path, monkeypatch, capsys):
    """runner.max_wall_time_s: each step here takes 100 s of a fake clock; with 250 s the run stops after step 2
    (a third would end at ~305 s), writes that step's checkpoint although save_interval is off, and says how to go
    on; the resumed invocation runs steps 3 and 4."""
    import time
    import types

    from jaxrl_isaac import runner as runner_mod
    clock = {"now": time.monotonic()}
    monkeypatch.setattr(runner_mod, "time", types.SimpleNamespace(monotonic=lambda: clock["now"],
                                                                  perf_counter=time.perf_counter))
    original = runner_mod.EmbodiedRunner.train_step

    def hundred_seconds(self, step):
        metrics = original(self, step)
        clock["now"] += 100.0
        return {**metrics, "time/step": 100.0}

    monkeypatch.setattr(runner_mod.EmbodiedRunner, "train_step", hundred_seconds)
    rows = _run(tmp_path, "run", "runner.max_epochs=4", "runner.max_wall_time_s=250")
    assert [r["step"] for r in rows] == [1, 2]
    assert (tmp_path / "run" / "checkpoints" / "global_step_2" / "train_state").is_dir()
    assert f"stopped after global step 2 (runner.max_wall_time_s=250.0); continue with runner.resume_dir=" \
           f"{tmp_path / 'run' / 'checkpoints'}" in capsys.readouterr().out
    rows = _run(tmp_path, "run", "runner.max_epochs=4", f"runner.resume_dir={tmp_path / 'run' / 'checkpoints'}")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_next_step_estimate_adds_the_eval_and_the_checkpoint():
    import types

    from jaxrl_isaac.config import load_config
    from jaxrl_isaac.runner import EmbodiedRunner
    cfg = load_config("embedded_reach_ppo_baseline", overrides=[
        "runner.max_epochs=10", "runner.val_check_interval=2", "runner.save_interval=4"])
    fake = types.SimpleNamespace(cfg=cfg)
    fake._eval_due = lambda step, last: EmbodiedRunner._eval_due(types.SimpleNamespace(
        cfg=cfg, evaluator=object()), step, last)
    history = [{"time/step": t, "throughput/rollout_env_steps_per_s": 1000.0} for t in (50.0, 10.0, 12.0, 11.0)]
    e = cfg.env.eval
    first_eval = e.total_num_envs * e.rollout_epoch * e.max_steps_per_rollout_epoch / 1000.0
    estimate = EmbodiedRunner._next_step_seconds
    assert estimate(fake, 2, history, None) == pytest.approx(1.05 * 11.0)  # step 3: median of the last 3 steps
    assert estimate(fake, 1, history, None) == pytest.approx(1.05 * (11.0 + first_eval))  # step 2: eval
    history[-1]["time/eval"] = 7.0
    assert estimate(fake, 3, history, 2.0) == pytest.approx(1.05 * (11.0 + 7.0 + 2.0))  # step 4: eval + save
    assert estimate(fake, 9, history, None) == pytest.approx(1.05 * (11.0 + 7.0 + 10.0))  # the last step


def test_the_console_summary_averages_the_first_and_last_steps_and_lists_the_evals():
    from jaxrl_isaac.train import summary_lines

    history = [{"env/success_once": 0.1 * (i % 2), "actor/loss": 1.0} for i in range(25)]
    history[9]["eval/success_once"], history[24]["eval/success_once"] = 0.25, 0.5
    lines = summary_lines(history, start_step=5)
    assert lines[0].split() == ["metric", "(mean)", "steps", "6-15", "steps", "21-30"]
    assert lines[1].split() == ["env/success_once", "0.0500", "0.0500"]  # 5 of 10 steps at 0.1, both windows
    assert lines[2].split() == ["actor/loss", "1.0000", "1.0000"]
    assert lines[3] == "eval/success_once".ljust(30) + "0.2500 (step 15) 0.5000 (step 30)"
    assert summary_lines([]) == [] and summary_lines([{"actor/loss": 1.0}]) == []
    assert summary_lines(history[:3])[0].split()[-1] == "1-3"
