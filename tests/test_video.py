"""Rollout videos: grid layout, overlay pixels, mp4 files read back with imageio, the writer thread, and one video
per rollout epoch from the real rollout collector."""

import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxrl_isaac import video
from jaxrl_isaac.models.baseline import BaselineConfig, BaselinePolicy
from jaxrl_isaac.rollout import RolloutCollector, RolloutSettings
from jaxrl_isaac.video import (EVENT_STYLE, FAILURE, NO_EVENT, SUCCESS, TRUNCATED, StepInfo, VideoError,
                               VideoRecorder, VideoSettings, compose_frame, plan_grid, read_video)
from point_env import PointEnv

GREEN, RED, AMBER = (EVENT_STYLE[k][1] for k in (SUCCESS, FAILURE, TRUNCATED))


def _tile_images(n, hw=(64, 64)):
    """Tile i is a flat colour unique to i."""
    colours = np.stack([(40 + 10 * i, 200 - 10 * i, 60 + 5 * i) for i in range(n)]).astype(np.uint8)
    return np.broadcast_to(colours[:, None, None, :], (n, *hw, 3)).copy(), colours


def _info(n, success=(), failure=(), truncated=()):
    flags = lambda idx: np.isin(np.arange(n), idx)  # noqa: E731
    return StepInfo(reward=np.linspace(-1, 1, n).astype(np.float32), terminated=flags([*success, *failure]),
                    truncated=flags(truncated), success=flags(success))


def test_grid_follows_rlinf_rows_and_pads_to_macro_blocks():
    g = plan_grid(16, (64, 64), info_on_video=False)
    assert (g.rows, g.cols, g.scale, g.frame_hw) == (4, 4, 1, (256, 256))
    g = plan_grid(6, (50, 30), info_on_video=False)  # rows = int(sqrt(6)) = 2
    assert (g.rows, g.cols) == (2, 3) and g.frame_hw == (112, 96)  # 100 x 90 padded to multiples of 16
    g = plan_grid(4, (64, 64), info_on_video=True)  # small images are upscaled so the text fits
    assert g.scale == 2 and g.cell_hw[1] == 128 + 2 * video.BORDER and g.caption_h > 0
    assert g.frame_hw[0] % 16 == 0 and g.frame_hw[1] % 16 == 0


def test_compose_frame_tiles_and_overlays():
    n = 6
    images, colours = _tile_images(n)
    plain = plan_grid(n, (64, 64), info_on_video=False)
    frame = compose_frame(images, plain)
    for i in range(n):
        top, left, bottom, right = plain.image_box(i)
        assert (frame[top:bottom, left:right] == colours[i]).all()

    layout = plan_grid(n, (64, 64), info_on_video=True)
    marks = np.array([SUCCESS, FAILURE, TRUNCATED, NO_EVENT, NO_EVENT, NO_EVENT], np.int8)
    frame = compose_frame(images, layout, _info(n, success=[0], failure=[1], truncated=[2]), marks)
    b = layout.border
    for i, colour in enumerate([GREEN, RED, AMBER, video.BACKGROUND_RGB]):
        top, left, bottom, right = layout.image_box(i)
        assert tuple(frame[top - b, left + 5]) == colour, i  # the border above the image
        assert tuple(frame[(top + bottom) // 2, left - 1]) == colour, i
        assert (frame[top:bottom, left:right] == colours[i]).all()  # the image itself is untouched
        caption = frame[bottom + b:bottom + b + layout.caption_h, left:right]
        assert (caption != video.BACKGROUND_RGB).any(axis=-1).sum() > 50, f"no caption text on tile {i}"
    # The event label is drawn in the event's colour.
    top, left, bottom, right = layout.image_box(0)
    label_row = frame[bottom + b + video.LINE_PX:bottom + b + 2 * video.LINE_PX, left:right]
    assert (np.abs(label_row.astype(int) - GREEN).sum(-1) < 60).sum() > 5


def test_episode_end_marks_are_held():
    marks = video.EpisodeEndMarks(2, hold_frames=3)
    shown = [marks.update(_info(2, success=[0] if t == 1 else [], truncated=[1] if t == 2 else [])).tolist()
             for t in range(7)]
    assert shown == [[0, 0], [SUCCESS, 0], [SUCCESS, TRUNCATED], [SUCCESS, TRUNCATED], [0, TRUNCATED], [0, 0],
                     [0, 0]]


def test_recorder_writes_readable_mp4_with_overlay(tmp_path):
    n_envs, steps, fps = 20, 16, 20
    rec = VideoRecorder(VideoSettings(video_dir=tmp_path / "v", fps=fps, info_on_video=True), num_envs=n_envs)
    assert rec.num_tiles == video.MAX_TILES == 16
    images, colours = _tile_images(n_envs)
    path = rec.begin("global_step_7_epoch_0")
    for t in range(steps):
        success = torch.zeros(n_envs, dtype=torch.bool)
        success[5] = t == 3
        rec.add_frame(torch.from_numpy(images), torch.zeros(n_envs), success.clone(), torch.zeros_like(success),
                      success)
    rec.end()
    rec.close()
    assert rec.written == [path] and path.name == "global_step_7_epoch_0.mp4" and rec.error is None
    assert not list(path.parent.glob("*.partial.mp4"))
    frames = read_video(path)
    layout = plan_grid(16, (64, 64), info_on_video=True)
    assert frames.shape == (steps, *layout.frame_hw, 3)
    for i in (0, 9, 15):  # tile colours survive H.264 (4 x 4 grid of the first 16 envs)
        top, left, bottom, right = layout.image_box(i)
        centre = frames[0, (top + bottom) // 2, (left + right) // 2].astype(int)
        assert np.abs(centre - colours[i]).max() < 12, (i, centre, colours[i])
    top, left, bottom, right = layout.image_box(5)
    border = lambda t: frames[t, top - layout.border:top, left + 8:right - 8].reshape(-1, 3).mean(0)  # noqa: E731
    hold = round(video.EVENT_HOLD_S * fps)
    assert border(3)[1] > 150 and border(3)[0] < 80, border(3)          # green from the success step ...
    assert border(3 + hold - 1)[1] > 150                                 # ... for EVENT_HOLD_S
    assert border(3 + hold + 1).max() < 40, border(3 + hold + 1)         # then background again
    assert border(2).max() < 40


def test_recorder_without_overlay_is_the_bare_grid(tmp_path):
    rec = VideoRecorder(VideoSettings(video_dir=tmp_path, info_on_video=False), num_envs=4)
    images, _ = _tile_images(4, hw=(48, 64))
    rec.begin("a")
    for _ in range(3):
        rec.add_frame(images, np.zeros(4), np.zeros(4, bool), np.zeros(4, bool), np.zeros(4, bool))
    rec.close()  # ends the open video too
    assert read_video(tmp_path / "a.mp4").shape == (3, 96, 128, 3)


class _SlowWriter:
    def __init__(self, inner):
        self.inner, self.thread_names = inner, set()

    def append_data(self, frame):
        self.thread_names.add(threading.current_thread().name)
        time.sleep(0.05)
        self.inner.append_data(frame)

    def close(self):
        self.inner.close()


def test_writer_thread_does_not_block_the_rollout_and_close_joins(tmp_path, monkeypatch):
    writers = []
    real_open = video._open_writer
    monkeypatch.setattr(video, "_open_writer", lambda p, fps: writers.append(_SlowWriter(real_open(p, fps)))
                        or writers[-1])
    rec = VideoRecorder(VideoSettings(video_dir=tmp_path, info_on_video=True), num_envs=2)
    images, _ = _tile_images(2)
    t0 = time.perf_counter()
    path = rec.begin("slow")
    for _ in range(20):
        rec.add_frame(images, np.zeros(2), np.zeros(2, bool), np.zeros(2, bool), np.zeros(2, bool))
    rec.end()
    produced = time.perf_counter() - t0
    assert produced < 0.5, f"the producer waited for the encoder ({produced:.2f} s for 20 frames x 50 ms)"
    assert not path.exists(), "the final file appeared before the writer finished"
    rec.close()
    assert time.perf_counter() - t0 >= 1.0  # close() waited for the 20 slow frames
    assert not rec._thread.is_alive()
    assert writers[0].thread_names == {"video-writer"}
    assert read_video(path).shape[0] == 20


def test_bad_inputs_are_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(VideoError, match="video_base_dir=.*cannot be created"):
        VideoRecorder(VideoSettings(video_dir=tmp_path / "file" / "v"), num_envs=2)
    rec = VideoRecorder(VideoSettings(video_dir=tmp_path / "ok"), num_envs=2)
    rec.begin("x")
    with pytest.raises(VideoError, match=r"table_cam has shape \(2, 8, 8, 3\) and dtype torch.float32"):
        rec.add_frame(torch.zeros(2, 8, 8, 3), np.zeros(2), np.zeros(2, bool), np.zeros(2, bool), np.zeros(2, bool))
    rec.close()


def test_rollout_writes_one_video_per_epoch(tmp_path):
    env = PointEnv(num_envs=3, max_episode_steps=6, cam=8)
    policy = BaselinePolicy(BaselineConfig(num_action_chunks=2, image_keys=(), state_keys=("eef_pos", "target_pos"),
                                           mlp_hidden=(16,)))
    rec = VideoRecorder(VideoSettings(video_dir=tmp_path, fps=10, extra_info=("success", "log.missing")), num_envs=3)
    collector = RolloutCollector(env, policy, RolloutSettings(num_action_chunks=2, chunk_steps=4, rollout_epoch=2),
                                 rec)
    params = policy.init(jax.random.PRNGKey(0), {"state": jnp.zeros((1, 6))})
    _, metrics = collector.collect(params, jax.random.PRNGKey(0), global_step=4)
    rec.close()
    assert [p.name for p in rec.written] == ["global_step_5_epoch_0.mp4", "global_step_5_epoch_1.mp4"]
    assert metrics["time/video"] > 0
    layout = plan_grid(3, (8, 8), info_on_video=True, extra_lines=2)
    for p in rec.written:
        assert read_video(p).shape == (8, *layout.frame_hw, 3)  # 4 chunk steps x 2 actions


def test_a_failing_encoder_stops_recording_without_stopping_the_rollout(tmp_path, monkeypatch, caplog):
    def broken(path, fps):
        raise OSError("No space left on device")
    monkeypatch.setattr(video, "_open_writer", broken)
    rec = VideoRecorder(VideoSettings(video_dir=tmp_path), num_envs=2)
    images, _ = _tile_images(2)
    for name in ("a", "b"):
        rec.begin(name)
        for _ in range(2 * video.QUEUE_FRAMES):  # more than the queue holds: the producer must never block
            rec.add_frame(images, np.zeros(2), np.zeros(2, bool), np.zeros(2, bool), np.zeros(2, bool))
        rec.end()
    rec.close()
    assert rec.written == [] and "No space left on device" in rec.error
    assert [r.levelname for r in caplog.records if "video recording stopped" in r.message] == ["ERROR"]
