"""SFT of GR00T N1.5 on scripted-expert demos (``jaxrl_isaac.sft``): tiny model, tiny word tokenizer, 32 px cameras, CPU."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import jax
import numpy as np
import pytest

from jaxrl_isaac import sft

TASK = sft.SFT_TASK
HORIZON = 4
CAM = 32
TAG = sft.DEFAULT_EMBODIMENT_TAG
FAST_JIT = {"xla_backend_optimization_level": 0}  # half the CPU compile time of these tiny graphs


@pytest.fixture(scope="module")
def demos():
    demos, report = sft.collect_demos(TASK, 2, 2, action_horizon=HORIZON, cam=CAM, seed=0, log=lambda _: None)
    assert report.episodes_kept == 2
    return demos


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from gr00t_port.processor import IMAGE_CONTEXT_TOKEN, load_tokenizer

    tokenizer = load_tokenizer(sft.write_tiny_tokenizer(tmp_path_factory.mktemp("tok")))
    cfg = sft.tiny_model_config(len(tokenizer), tokenizer.convert_tokens_to_ids(IMAGE_CONTEXT_TOKEN), HORIZON)
    return cfg, tokenizer


def test_collect_demos_keeps_successful_episodes_with_consistent_shapes(demos):
    n = demos.num_frames
    assert demos.num_episodes == 2 and demos.instruction
    assert demos.table_images.shape == demos.wrist_images.shape == (n, CAM, CAM, 3)
    assert demos.table_images.dtype == np.uint8
    assert demos.states.shape == (n, sft.STATE_DIM) and demos.actions.shape == (n, sft.ACTION_DIM)
    assert demos.action_chunks.shape == (n, HORIZON, sft.ACTION_DIM) and demos.chunk_valid.shape == (n, HORIZON)
    for e in range(2):
        rows = np.flatnonzero(demos.episode_index == e)
        assert rows.size > HORIZON and np.all(np.diff(rows) == 1)
        acts = demos.actions[rows]
        # chunk t holds actions t..t+H-1, edge-padded with the episode's last action past its end
        np.testing.assert_array_equal(demos.action_chunks[rows[0]], acts[:HORIZON])
        np.testing.assert_array_equal(demos.action_chunks[rows[-1]], np.repeat(acts[-1:], HORIZON, 0))
        assert demos.chunk_valid[rows[-1]].tolist() == [True] + [False] * (HORIZON - 1)
        assert demos.chunk_valid[rows[:-HORIZON]].all()
    # The expert closes the gripper (sign -1) while carrying and opens it (+1) again: a real stacking episode.
    assert set(np.unique(demos.actions[:, -1])) == {-1.0, 1.0}


def test_collect_demos_with_worker_processes_matches_the_in_process_shapes():
    # Two simulator processes of 1 sub-env each: the same successful-episode contract as in-process collection.
    demos, report = sft.collect_demos(TASK, 2, 2, num_workers=2, action_horizon=HORIZON, cam=CAM, seed=0,
                                      log=lambda _: None)
    assert report.episodes_kept == 2 and report.episodes_failed == 0
    assert demos.table_images.shape == (demos.num_frames, CAM, CAM, 3) and demos.table_images.any()
    assert demos.action_chunks.shape == (demos.num_frames, HORIZON, sft.ACTION_DIM)
    assert set(np.unique(demos.actions[:, -1])) == {-1.0, 1.0}


def test_failed_episodes_are_dropped():
    # 15 steps are too few to stack a cube: every episode times out, none may be kept.
    with pytest.raises(RuntimeError, match=r"failed 3 episodes before 1 succeeded \(0 did\)"):
        sft.collect_demos(TASK, 1, 1, cam=CAM, max_episode_steps=15, max_failed=2, log=lambda _: None)


def test_metadata_statistics_match_numpy(demos):
    from gr00t_port.normalization import EmbodimentMetadata

    entry = sft.build_metadata(demos, TAG)[TAG]
    stats = entry["statistics"]
    gripper_state = demos.states[:, 6:8].astype(np.float64)
    np.testing.assert_allclose(stats["state"]["gripper"]["q99"], np.quantile(gripper_state, 0.99, axis=0))
    np.testing.assert_allclose(stats["state"]["gripper"]["std"], gripper_state.std(axis=0))
    for j, key in enumerate(("x", "y", "z", "roll", "pitch", "yaw")):
        for name, fn in (("min", np.min), ("max", np.max), ("mean", np.mean), ("std", np.std)):
            np.testing.assert_allclose(stats["state"][key][name], [fn(demos.states[:, j].astype(np.float64))])
            np.testing.assert_allclose(stats["action"][key][name], [fn(demos.actions[:, j].astype(np.float64))])
        np.testing.assert_allclose(stats["action"][key]["q01"], [np.quantile(demos.actions[:, j], 0.01)], rtol=1e-6)
    assert entry["modalities"]["video"]["image"]["resolution"] == [CAM, CAM]
    assert entry["modalities"]["state"]["gripper"]["shape"] == [2]
    assert entry["modalities"]["action"]["gripper"]["shape"] == [1]
    assert json.loads(json.dumps(entry)) == entry  # JSON-clean (metadata.json)
    parsed = EmbodimentMetadata.from_json_entry(entry, TAG)
    assert parsed.state["gripper"].dim == 2 and parsed.video["wrist_image"].resolution == (CAM, CAM)


def test_preprocessed_frames_equal_the_processor_batch_of_any_index(demos, tiny):
    # SFT without augmentation indexes frames processed once; every batch must equal the processor's own.
    cfg, tokenizer = tiny
    processor = sft.make_processor(cfg, sft.build_metadata(demos, TAG), tokenizer, TAG)
    frames = sft.preprocess_frames(processor, demos, chunk=7)  # several chunks, the last one short
    index = np.random.default_rng(0).permutation(demos.num_frames)[:9]
    batch = sft.make_batch(processor, demos, index, augment=False, rng=None)
    assert all(value.shape[0] == demos.num_frames for value in frames.values())
    indexed = sft.index_frames(frames, index)
    assert set(indexed) == set(batch)
    for key, value in batch.items():
        np.testing.assert_array_equal(indexed[key], value, err_msg=key)


def test_sft_steps_reduce_flow_matching_loss_on_a_fixed_batch(demos, tiny):
    cfg, tokenizer = tiny
    batch_size = 8
    rows = np.arange(0, demos.num_frames, demos.num_frames // batch_size)[:batch_size]
    fixed = dataclasses.replace(demos, **{f.name: getattr(demos, f.name)[rows] for f in dataclasses.fields(demos)
                                          if isinstance(getattr(demos, f.name), np.ndarray)})
    processor = sft.make_processor(cfg, sft.build_metadata(demos, TAG), tokenizer, TAG)
    batch = sft.make_batch(processor, fixed, np.arange(batch_size), augment=False, rng=None)
    assert batch["action"].shape == (batch_size, HORIZON, cfg.action_head.action_dim)
    assert np.abs(batch["action"][..., :7]).max() <= 1.0 + 1e-6  # min_max-normalised with the demos' own stats
    params = sft.random_params(cfg, seed=0)
    loss_fn = jax.jit(sft.make_loss_fn(cfg, dropout=False), compiler_options=FAST_JIT)
    noise = jax.random.normal(jax.random.key(1), batch["action"].shape)
    t = jax.numpy.linspace(0.05, 0.95, batch_size)
    before = float(loss_fn(params["action_head"], params["backbone"], batch, None, noise, t))
    settings = sft.SFTSettings(steps=40, batch_size=batch_size, lr=3e-3, warmup_ratio=0.0, augment=False,
                               dropout=False, log_interval=5)
    trained, history = sft.train(cfg, params, processor, fixed, settings, compiler_options=FAST_JIT,
                                 log=lambda _: None)
    after = float(loss_fn(trained["action_head"], trained["backbone"], batch, None, noise, t))
    assert np.isfinite(before) and after < 0.75 * before, (before, after)
    assert [row["step"] for row in history] == [1, 5, 10, 15, 20, 25, 30, 35, 40]
    assert trained["backbone"] is params["backbone"]  # frozen: tune_visual=False, tune_llm=False


def test_cli_end_to_end_checkpoint_loads_into_the_same_tree(tmp_path, monkeypatch):
    from gr00t_port.config import GR00TConfig
    from gr00t_port.convert import load_converted
    from gr00t_port.model import GR00TN15
    from gr00t_port.processor import load_tokenizer
    from jaxrl_isaac.models.gr00t_policy import read_converted_assets

    out = tmp_path / "sft"
    rc = sft.main(["--task", TASK, "--episodes", "1", "--num-envs", "1", "--out", str(out), "--steps", "2",
                   "--batch-size", "2", "--action-horizon", str(HORIZON), "--cam", str(CAM), "--log-interval", "1"])
    assert rc == 0
    params, assets, dropped = load_converted(out)
    assert dropped == {} and (out / "global_step_2" / "params").is_dir()
    cfg = GR00TConfig.from_dict(assets["gr00t_config"])
    shapes = GR00TN15(cfg).param_shapes()
    assert jax.tree.structure(shapes) == jax.tree.structure(params)
    assert jax.tree.leaves(jax.tree.map(lambda s, p: s.shape == p.shape, shapes, params)) == [True] * len(
        jax.tree.leaves(params))
    assert set(assets["metadata"]) == {TAG}
    # What RL's GR00TRLPolicy.from_config reads: assets, and the tokenizer found in the step dir.
    step_dir, rl_assets = read_converted_assets(out)
    assert step_dir.name == "global_step_2" and rl_assets["metadata"] == assets["metadata"]
    assert load_tokenizer(None, checkpoint_dir=step_dir).convert_tokens_to_ids("<IMG_CONTEXT>") == \
        cfg.backbone.image_token_index
    assert json.loads((step_dir / "experiment_cfg" / "metadata.json").read_text()) == assets["metadata"]
    log_rows = [json.loads(line) for line in (out / "sft_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in log_rows)


@pytest.mark.parametrize("extra, message", [
    (["--task", "Embedded-Nope-v0"], "error: unknown task 'Embedded-Nope-v0'; the embedded tasks"),
    (["--tokenizer", "/nonexistent/tok"], "error: no tokenizer at /nonexistent/tok: expected tokenizer_config.json"),
    (["--action-horizon", "8", "--model-config", "n15", "--tokenizer", "TOKDIR"],
     "error: --action-horizon 8 differs from the model's action_horizon=16"),
])
def test_bad_input_gives_one_line(tmp_path, capsys, extra, message):
    tok = sft.write_tiny_tokenizer(tmp_path / "tok")
    extra = [str(tok) if a == "TOKDIR" else a for a in extra]
    assert sft.main(["--out", str(tmp_path / "o"), "--episodes", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


@pytest.mark.parametrize("flag, value", [("--num-workers", "0"), ("--num-envs", "-2"), ("--batch-size", "x")])
def test_bad_counts_fail_in_argument_parsing_before_anything_is_built(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        sft.main(["--out", str(tmp_path / "o"), flag, value])
    assert exit_info.value.code == 2 and not (tmp_path / "o").exists()
    err = capsys.readouterr().err
    assert f"argument {flag}: must be a positive int, got " in err.splitlines()[-1]


@pytest.mark.parametrize("kind, reach_tokens", [("words", 47), ("bytes", 125)])
def test_tiny_tokenizer_merges_prompt_words_and_still_round_trips_any_text(tmp_path, kind, reach_tokens):
    from gr00t_port.processor import load_tokenizer, prompt_token_ids
    from jaxrl_isaac.envs.embedded.tasks import REACH_ID, task_description

    tokenizer = load_tokenizer(sft.write_tiny_tokenizer(tmp_path / kind, kind))
    ids = prompt_token_ids(tokenizer, task_description(REACH_ID), 2, 4)
    assert len(ids) == reach_tokens == sft.bootstrap_prompt_length(task_description(REACH_ID), tokenizer_kind=kind)
    tokens = tokenizer.convert_ids_to_tokens(list(ids))
    assert ("Ġgripper" in tokens) == (kind == "words") and tokens.count("<IMG_CONTEXT>") == 8
    # Specials keep their own ids after the (merged) vocabulary; text outside the corpus falls back to bytes.
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == len(tokenizer) - 6 == tokenizer.pad_token_id
    text = "Move the gripper 12 mm to the crimson widget, s'il vous plaît."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    # Deterministic: the same files every time.
    again = sft.write_tiny_tokenizer(tmp_path / f"{kind}_again", kind)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (again / name).read_text() == (tmp_path / kind / name).read_text()


def test_tiny_tokenizer_rejects_an_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="tiny tokenizer kind must be one of"):
        sft.write_tiny_tokenizer(tmp_path, "sentencepiece")


@pytest.mark.parametrize("extra, deterministic", [([], True), (["--nondeterministic-gpu-ops"], False)])
def test_the_cli_asks_xla_for_deterministic_gpu_ops_before_jax_starts(tmp_path, monkeypatch, capsys, extra,
                                                                      deterministic):
    from jaxrl_isaac import jax_setup

    monkeypatch.setattr(jax_setup, "jax_backends_initialized", lambda: False)  # as in a fresh process
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/nowhere")
    assert sft.main(["--task", "Embedded-Nope-v0", "--out", str(tmp_path / "o"), *extra]) == 2
    flags = os.environ["XLA_FLAGS"]
    assert flags.startswith("--xla_dump_to=/tmp/nowhere")
    assert ("--xla_gpu_deterministic_ops=true" in flags) == deterministic


def test_bootstrap_reuses_a_matching_dir_and_skips_unreadable_recipes(tmp_path, monkeypatch):
    """Which dir ``bootstrap_checkpoint`` reuses: its own ``out`` first, then ``reuse_from`` in order, each only with
    the same recipe; a corrupt recipe is skipped with one line, never a traceback. (SFT itself is faked here.)"""
    built, tiled = [], []

    def fake_run(args, log):
        step_dir = pathlib.Path(args.out) / f"global_step_{args.steps}"
        step_dir.mkdir(parents=True)
        built.append(args.out)
        tiled.append(args.tiled_rendering)
        return step_dir

    monkeypatch.setattr(sft, "run", fake_run)
    kw = dict(steps=3, episodes=2, batch_size=4, lr=1e-3, cam=32)
    task = "Embedded-Reach-Franka-IK-Rel-v0"
    made = sft.bootstrap_checkpoint(task, tmp_path / "a", **kw, log=lambda m: None)
    assert made == tmp_path / "a" / "global_step_3" and len(built) == 1
    corrupt = tmp_path / "corrupt"
    (corrupt / "global_step_3").mkdir(parents=True)
    (corrupt / "bootstrap.json").write_text('["--task", ')
    lines = []
    got = sft.bootstrap_checkpoint(task, tmp_path / "b", **kw, log=lines.append, reuse_from=[corrupt, tmp_path / "a"])
    assert got == made and len(built) == 1 and not (tmp_path / "b").exists()
    assert any(f"ignoring the unreadable bootstrap recipe {corrupt / 'bootstrap.json'}" in line for line in lines)
    # Another recipe (more steps) does not match: it is built in out.
    other = sft.bootstrap_checkpoint(task, tmp_path / "b", **{**kw, "steps": 4}, log=lambda m: None,
                                     reuse_from=[tmp_path / "a"])
    assert other == tmp_path / "b" / "global_step_4" and len(built) == 2
    # Tiled rendering is part of the recipe (the demos' images differ in a few pixels): built anew, and tiled.
    sft.bootstrap_checkpoint(task, tmp_path / "c", **kw, tiled_rendering=True, log=lambda m: None,
                             reuse_from=[tmp_path / "a"])
    assert len(built) == 3 and tiled == [False, False, True]
    assert "--tiled-rendering" in json.loads((tmp_path / "c" / "bootstrap.json").read_text())

