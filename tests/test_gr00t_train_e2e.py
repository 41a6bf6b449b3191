"""`python -m jaxrl_isaac.train` with `actor.model.model_type=gr00t`: a tiny GR00T N1.5 from a converted-layout
checkpoint runs PPO (Flow-SDE log-probs, value head, frozen backbone) on the embedded stack-cube task, saves, and
resumes exactly."""

import json

import numpy as np
import orbax.checkpoint as ocp
import pytest

from gr00t_port import processor as P
from jaxrl_isaac import train
from test_gr00t_policy import CAM, PAD_TO, TAG, _metadata_entry, _model_config, _random_params
from tiny_tokenizer import write_tiny_qwen_tokenizer


@pytest.fixture(scope="module")
def converted_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_gr00t")
    assets = {"gr00t_config": _model_config().to_dict(), "metadata": {TAG: _metadata_entry()}}
    options = ocp.CheckpointManagerOptions(step_prefix="global_step", create=True, enable_async_checkpointing=False)
    mngr = ocp.CheckpointManager(root.absolute(), options=options, item_names=("params", "assets"))
    mngr.save(0, args=ocp.args.Composite(params=ocp.args.PyTreeSave(_random_params(3)),
                                         assets=ocp.args.JsonSave(assets)))
    mngr.wait_until_finished()
    mngr.close()
    return root / "global_step_0", write_tiny_qwen_tokenizer(tmp_path_factory.mktemp("tok"))


def _run(tmp, name, ckpt, *extra):
    log = tmp / name
    rc = train.main([
        "--config-name", "embedded_stack_cube_ppo_baseline",
        "actor.model.model_type=gr00t", f"actor.model.model_path={ckpt}", "actor.model.precision=fp32",
        f"actor.model.embodiment_tag={TAG}", "actor.model.num_action_chunks=4", "actor.model.denoising_steps=4",
        f"actor.model.rl_head_config.padding_value={PAD_TO}",
        f"env.train.init_params.table_cam={{height: {CAM}, width: {CAM}}}",
        f"env.train.init_params.wrist_cam={{height: {CAM}, width: {CAM}}}",
        "env.train.total_num_envs=4", "env.train.rollout_epoch=1", "env.train.max_episode_steps=8",
        "env.train.max_steps_per_rollout_epoch=8", "actor.global_batch_size=8", "actor.micro_batch_size=2",
        "algorithm.update_epoch=1", "runner.save_interval=-1", f"runner.logger.log_path={log}", *extra])
    assert rc == 0
    return [json.loads(line) for line in (log / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_gr00t_ppo_trains_and_resumes_exactly(tmp_path, converted_checkpoint, monkeypatch):
    ckpt, tokenizer = converted_checkpoint
    monkeypatch.setenv(P.TOKENIZER_ENV_VAR, str(tokenizer))
    full = _run(tmp_path, "full", ckpt, "runner.max_epochs=3")
    first = full[0]
    # First PPO ratio is exactly 1: evaluate() recomputes the rollout's Flow-SDE log-prob on the stored chain.
    assert first["actor/ratio"] == pytest.approx(1.0, abs=1e-5)
    assert np.isfinite(first["actor/loss"]) and first["actor/grad_norm"] > 0
    assert "actor/value_loss" in first and "env/success_once" in first

    _run(tmp_path, "resumed", ckpt, "runner.max_epochs=1")
    resumed = _run(tmp_path, "resumed", ckpt, "runner.max_epochs=3",
                   f"runner.resume_dir={tmp_path / 'resumed' / 'checkpoints'}")
    for step in (1, 2):  # the second step after the resume also checks the first update after it
        for key in ("actor/loss", "actor/value_loss", "actor/approx_kl", "rollout/returns_mean", "env/return"):
            assert resumed[step][key] == pytest.approx(full[step][key], rel=1e-5, abs=1e-6), (step + 1, key)
