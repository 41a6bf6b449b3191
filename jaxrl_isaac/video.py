"""Rollout videos: the table camera of the first envs, tiled into one mp4 per rollout epoch, written off-thread.

As RLinf's ``RecordVideo`` wrapper: one frame per env step (the observation the step returned), the envs tiled in a
grid of ``rows = int(sqrt(n))`` rows, per-tile reward and termination overlaid (``video_cfg.info_on_video``),
imageio + ffmpeg on a background thread, ``video_cfg.fps`` frames per second. Our choices:

* at most ``max_tiles`` envs (the first ones, default ``MAX_TILES`` = 16, RLinf's 4 x 4 at 16 envs per stage);
* with the overlay on, each camera image is upscaled (nearest, integer factor) to at least ``MIN_TILE_WIDTH``
  pixels so that the text stays legible; a caption strip under the image holds ``<env>: r=<step reward>``, the
  last episode end and any ``video_cfg.extra_info_on_video`` values; a border around the image marks an episode
  end in colour: green = success, red = terminated without success (a dropped cube), amber = truncated (time
  limit). The env resets on the same step, so the image already shows the next episode; the mark is therefore
  held for ``EVENT_HOLD_S`` seconds;
* files are ``<video_dir>/<name>.mp4`` (the runner names them ``global_step_<N>_epoch_<e>``), written as
  ``<name>.partial.mp4`` and renamed when complete, so an ``.mp4`` is never a half-written file.

Cost. The embedded simulator renders a camera only when it is read; recording reads ``table_cam`` after every env
step, so every sub-env's table camera is rendered every step instead of once per action chunk (or never, for a
state-only policy). That is why it happens only when ``video_cfg.save_video`` is true; the runner reports the
producer-side time (render + copy) as ``time/video``. The rollout thread only copies the first ``max_tiles`` images
and the step flags to numpy and enqueues them; tiling, text and H.264 encoding run on the writer thread. The queue
holds ``QUEUE_FRAMES`` frames: when the encoder falls behind, the rollout waits instead of memory growing.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

log = logging.getLogger("jaxrl_isaac")

MAX_TILES = 16           # envs shown per video (the first ones)
MIN_TILE_WIDTH = 128     # px; smaller camera images are upscaled to at least this when the overlay is on
EVENT_HOLD_S = 0.5       # seconds an episode-end mark stays on a tile
QUEUE_FRAMES = 64        # frames buffered between the rollout and the writer thread
BORDER = 4               # px of the episode-end border around each image (overlay on)
FONT_PX = 11
LINE_PX = FONT_PX + 3
MACRO_BLOCK = 16         # H.264 frames are padded to a multiple of this (no rescaling by ffmpeg)

# Episode-end marks: code -> (label, RGB).
NO_EVENT, SUCCESS, FAILURE, TRUNCATED = 0, 1, 2, 3
EVENT_STYLE = {SUCCESS: ("success", (0, 200, 0)), FAILURE: ("failure", (220, 0, 0)),
               TRUNCATED: ("truncated", (230, 170, 0))}
TEXT_RGB = (235, 235, 235)
BACKGROUND_RGB = (0, 0, 0)


class VideoError(RuntimeError):
    """The video directory cannot be created, or the recorded camera is not an (N, H, W, 3) uint8 image batch."""


@dataclasses.dataclass(frozen=True)
class VideoSettings:
    video_dir: Path
    fps: int = 20
    info_on_video: bool = True
    extra_info: tuple[str, ...] = ()   # dotted paths into the step's ``extras`` (e.g. "dropped"), shown per tile
    max_tiles: int = MAX_TILES

    @classmethod
    def from_config(cls, video_cfg: Any) -> VideoSettings | None:
        """The settings of an ``env.<split>.video_cfg``; None when ``save_video`` is false."""
        if not video_cfg.save_video:
            return None
        return cls(video_dir=Path(video_cfg.video_base_dir), fps=int(video_cfg.fps),
                   info_on_video=bool(video_cfg.info_on_video),
                   extra_info=tuple(video_cfg.extra_info_on_video))


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """What one env step reported for the shown tiles, as numpy copies (shapes [tiles])."""

    reward: np.ndarray        # float32
    terminated: np.ndarray    # bool, as the env reported it (before any ignore_terminations)
    truncated: np.ndarray     # bool
    success: np.ndarray       # bool
    extra: tuple[tuple[str, np.ndarray | None], ...] = ()  # (path, [tiles] values or None when absent)


@dataclasses.dataclass(frozen=True)
class GridLayout:
    """Where each tile goes in a video frame. Tile i is at row i // cols, column i % cols."""

    tiles: int
    rows: int
    cols: int
    image_hw: tuple[int, int]   # camera image (H, W)
    scale: int                  # integer upscale of each image
    border: int                 # px around each scaled image
    caption_h: int              # px of text below each image; 0 without the overlay

    @property
    def cell_hw(self) -> tuple[int, int]:
        h, w = self.image_hw
        return h * self.scale + 2 * self.border + self.caption_h, w * self.scale + 2 * self.border

    @property
    def frame_hw(self) -> tuple[int, int]:
        ch, cw = self.cell_hw
        return _round_up(self.rows * ch, MACRO_BLOCK), _round_up(self.cols * cw, MACRO_BLOCK)

    def cell_origin(self, i: int) -> tuple[int, int]:
        ch, cw = self.cell_hw
        return (i // self.cols) * ch, (i % self.cols) * cw

    def image_box(self, i: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of tile i's scaled image in the frame."""
        y, x = self.cell_origin(i)
        h, w = self.image_hw
        top, left = y + self.border, x + self.border
        return top, left, top + h * self.scale, left + w * self.scale


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def plan_grid(tiles: int, image_hw: tuple[int, int], info_on_video: bool, extra_lines: int = 0) -> GridLayout:
    """RLinf's grid (``rows = int(sqrt(tiles))``); with the overlay, upscaled images, a border and a caption."""
    rows = max(1, math.isqrt(tiles))
    cols = -(-tiles // rows)
    h, w = image_hw
    if not info_on_video:
        return GridLayout(tiles, rows, cols, (h, w), scale=1, border=0, caption_h=0)
    scale = max(1, -(-MIN_TILE_WIDTH // w))
    caption_h = (2 + extra_lines) * LINE_PX + 4
    return GridLayout(tiles, rows, cols, (h, w), scale=scale, border=BORDER, caption_h=caption_h)


class EpisodeEndMarks:
    """Per tile, the last episode end and how many more frames to show it."""

    def __init__(self, tiles: int, hold_frames: int):
        self.hold = max(1, hold_frames)
        self.kind = np.zeros(tiles, np.int8)
        self.left = np.zeros(tiles, np.int32)

    def update(self, info: StepInfo) -> np.ndarray:
        """Returns the mark to draw on each tile for this frame: [tiles] int8 of NO_EVENT/SUCCESS/FAILURE/TRUNCATED."""
        new = np.select([info.success, info.terminated, info.truncated], [SUCCESS, FAILURE, TRUNCATED], NO_EVENT)
        fired = new != NO_EVENT
        self.kind[fired] = new[fired]
        self.left[fired] = self.hold
        shown = np.where(self.left > 0, self.kind, NO_EVENT).astype(np.int8)
        self.left = np.maximum(self.left - 1, 0)
        return shown


def _font():
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=FONT_PX)   # Pillow >= 10.1 with FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()               # the built-in bitmap font


def _format(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.3g}"
    return str(value)


def compose_frame(images: np.ndarray, layout: GridLayout, info: StepInfo | None = None,
                  marks: np.ndarray | None = None, font: Any = None) -> np.ndarray:
    """Tiles ``images`` [tiles, H, W, 3] uint8 into one [frame_h, frame_w, 3] uint8 frame.

    With ``info`` (overlay on), each tile gets its caption and, where ``marks`` [tiles] is not NO_EVENT, a border in
    the mark's colour."""
    frame = np.empty((*layout.frame_hw, 3), np.uint8)
    frame[:] = BACKGROUND_RGB
    s = layout.scale
    for i in range(layout.tiles):
        top, left, bottom, right = layout.image_box(i)
        if marks is not None and marks[i] != NO_EVENT:
            b = layout.border
            frame[top - b:bottom + b, left - b:right + b] = EVENT_STYLE[int(marks[i])][1]
        img = images[i]
        if s > 1:
            img = img.repeat(s, axis=0).repeat(s, axis=1)
        frame[top:bottom, left:right] = img
    if info is None:
        return frame
    from PIL import Image, ImageDraw
    canvas = Image.fromarray(frame)
    draw = ImageDraw.Draw(canvas)
    font = font or _font()
    for i in range(layout.tiles):
        _, left, bottom, _ = layout.image_box(i)
        y, x = bottom + layout.border + 2, left
        draw.text((x, y), f"{i}: r={float(info.reward[i]):+.3f}", fill=TEXT_RGB, font=font)
        mark = int(marks[i]) if marks is not None else NO_EVENT
        if mark != NO_EVENT:
            label, colour = EVENT_STYLE[mark]
            draw.text((x, y + LINE_PX), label, fill=colour, font=font)
        for k, (path, values) in enumerate(info.extra):
            text = f"{path.rsplit('.', 1)[-1]}={_format(values[i]) if values is not None else 'n/a'}"
            draw.text((x, y + (2 + k) * LINE_PX), text, fill=TEXT_RGB, font=font)
    return np.asarray(canvas)


def _to_numpy(x: Any, n: int) -> np.ndarray:
    """The first ``n`` entries of a per-env tensor/array, as a numpy copy."""
    if isinstance(x, torch.Tensor):
        return x[:n].detach().to("cpu").numpy().copy()
    return np.array(np.asarray(x)[:n], copy=True)


def _lookup(extras: Mapping[str, Any], path: str) -> Any:
    node: Any = extras
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


class VideoRecorder:
    """Records rollout videos on a background thread. Producer calls (rollout thread):

        rec.begin("global_step_3_epoch_0")
        rec.add_frame(obs["policy"]["table_cam"], reward, terminated, truncated, success, extras)  # per env step
        rec.end()                 # returns at once; the writer finishes the file
        ...
        rec.close()               # waits until every file is complete

    A failure while encoding (e.g. a full disk) is logged once and stops recording; training goes on.
    """

    def __init__(self, settings: VideoSettings, num_envs: int):
        self.settings = settings
        self.num_tiles = max(1, min(num_envs, settings.max_tiles))
        self.video_dir = Path(settings.video_dir)
        try:
            self.video_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VideoError(f"video_cfg.video_base_dir={str(self.video_dir)!r} cannot be created: "
                             f"{e.strerror or e}") from None
        self.written: list[Path] = []      # complete files, in order (appended by the writer thread)
        self.error: str | None = None       # the writer's failure, if any
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self._recording = False
        self._closed = False
        self._missing_warned: set[str] = set()
        self._thread = threading.Thread(target=self._write_loop, name="video-writer", daemon=True)
        self._thread.start()

    # ---- producer side ----
    def begin(self, name: str) -> Path:
        """Starts the video ``<video_dir>/<name>.mp4`` (ending any open one)."""
        if self._recording:
            self.end()
        path = self.video_dir / f"{name}.mp4"
        if self.error is None and not self._closed:
            self._queue.put(("begin", path))
            self._recording = True
        return path

    def add_frame(self, table_cam: Any, reward: Any, terminated: Any, truncated: Any, success: Any,
                  extras: Mapping[str, Any] | None = None) -> None:
        """One env step: ``table_cam`` (N, H, W, 3) uint8, the step's (N,) reward/terminated/truncated/success."""
        if not self._recording or self.error is not None:
            return
        n = self.num_tiles
        shape, dtype = tuple(table_cam.shape), table_cam.dtype
        is_uint8 = dtype == torch.uint8 if isinstance(table_cam, torch.Tensor) else np.dtype(dtype) == np.uint8
        if len(shape) != 4 or shape[-1] != 3 or not is_uint8 or shape[0] < n:
            raise VideoError(f"video: table_cam has shape {shape} and dtype {dtype}, expected (N, H, W, 3) uint8 "
                             f"with N >= {n}")
        extra = tuple((path, self._extra_values(extras or {}, path)) for path in self.settings.extra_info) \
            if self.settings.info_on_video else ()
        info = StepInfo(reward=_to_numpy(reward, n).astype(np.float32),
                        terminated=_to_numpy(terminated, n).astype(bool),
                        truncated=_to_numpy(truncated, n).astype(bool), success=_to_numpy(success, n).astype(bool),
                        extra=extra)
        self._queue.put(("frame", _to_numpy(table_cam, n), info))

    def end(self) -> None:
        """Ends the current video; the writer completes the file without blocking the caller."""
        if self._recording:
            self._queue.put(("end",))
            self._recording = False

    def close(self) -> None:
        """Ends any open video and waits for the writer thread to finish every file."""
        if self._closed:
            return
        self.end()
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    def _extra_values(self, extras: Mapping[str, Any], path: str) -> np.ndarray | None:
        value = _lookup(extras, path)
        if value is None:
            if path not in self._missing_warned:
                self._missing_warned.add(path)
                log.warning("video_cfg.extra_info_on_video: %r is not in the env's step extras (keys: %s); shown "
                            "as n/a", path, ", ".join(sorted(map(str, extras))))
            return None
        arr = value.detach().to("cpu").numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if arr.ndim >= 1 and arr.shape[0] >= self.num_tiles:
            return np.array(arr[:self.num_tiles], copy=True)
        return np.full(self.num_tiles, arr.reshape(-1)[0] if arr.size == 1 else str(arr.tolist()), dtype=object)

    # ---- writer thread ----
    def _write_loop(self) -> None:
        writer = layout = marks = font = None
        path = partial = None
        while True:
            item = self._queue.get()
            if item is None:
                break
            if self.error is not None:
                continue  # drain, so that the producer never blocks on a full queue
            try:
                if item[0] == "begin":
                    path = item[1]
                    partial = path.with_name(path.stem + ".partial.mp4")
                    writer = layout = None
                    marks = None
                elif item[0] == "frame":
                    _, images, info = item
                    if writer is None:
                        layout = plan_grid(self.num_tiles, images.shape[1:3], self.settings.info_on_video,
                                           extra_lines=len(info.extra))
                        marks = EpisodeEndMarks(self.num_tiles, round(EVENT_HOLD_S * self.settings.fps))
                        font = font or (_font() if self.settings.info_on_video else None)
                        writer = _open_writer(partial, self.settings.fps)
                    if self.settings.info_on_video:
                        frame = compose_frame(images, layout, info, marks.update(info), font)
                    else:
                        frame = compose_frame(images, layout)
                    writer.append_data(frame)
                elif item[0] == "end" and writer is not None:
                    writer.close()
                    writer = None
                    partial.replace(path)
                    self.written.append(path)
            except Exception as e:  # keep training alive; say once why there are no more videos
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                self.error = f"writing {path}: {first}"
                log.error("video recording stopped: %s", self.error)
                if writer is not None:
                    try:
                        writer.close()
                    except Exception:
                        pass
                    writer = None


def _open_writer(path: Path, fps: int):
    import os
    import imageio
    # imageio-ffmpeg starts ffmpeg with preexec_fn=os.setpgrp (so Ctrl-C reaches only Python), which forces a real
    # fork() of this multithreaded (JAX) process, runs Python in the child, and makes JAX warn about deadlocks.
    # Without it, subprocess uses vfork + exec. Ctrl-C then also stops ffmpeg; the file being written stays a
    # .partial.mp4 either way.
    os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")
    return imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8,
                              macro_block_size=MACRO_BLOCK, ffmpeg_log_level="error")


def read_video(path: str | Path) -> np.ndarray:
    """All frames of an mp4 as [T, H, W, 3] uint8 (for tests and inspection)."""
    import imageio
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return np.stack([frame for frame in reader])  # not list(reader): its len() is inf

