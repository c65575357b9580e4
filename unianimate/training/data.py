"""Training data: segments of F frames with their poses and a reference frame, addressed by index.

Every dataset here is a pure function of an integer index (and its seed), so a data position is one
integer: resuming continues exactly where a run stopped, and DataLoader workers need no shared state.

* :class:`ProceduralPeople` — the drawn-people generator (:mod:`unianimate.training.people`).
* :class:`ClipFolder` — a folder of the user's clips. Each clip is a video file (``.mp4``, ``.mov``,
  ``.webm``, ``.avi``, ``.mkv``) or a folder of frames (``.png``/``.jpg``), with its poses given as a
  pose JSON next to it (``<clip>.json``, or ``poses.json`` inside a frames folder) or extracted by a
  ``pose_extractor`` callable. The reference frame is drawn at random from the same clip (paper §4).
  Every clip is checked when the dataset is built; a bad one raises :class:`DataError` naming it.

A sample is a :class:`~unianimate.training.people.Clip`; :func:`collate` stacks samples into tensors.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unianimate.errors import InputError
from unianimate.imaging import fit_image, open_image, to_rgb_array

from .people import DEFAULT_FPS, Clip, pose_image, sample_clip

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".avi", ".mkv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
PoseExtractor = Callable[[np.ndarray], list]  # (N,H,W,3) uint8 -> one Pose per frame


class DataError(InputError):
    """A training clip that cannot be used; the message names the clip and what to do."""


class ProceduralPeople:
    """Drawn people dancing: item ``i`` is ``sample_clip(seed, i)`` (endless; ``len`` is nominal)."""

    def __init__(self, seed: int, frames: int, width: int, height: int, fps: float = DEFAULT_FPS) -> None:
        self.seed, self.frames, self.width, self.height, self.fps = int(seed), int(frames), int(width), int(height), fps

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, index: int) -> Clip:
        return sample_clip(self.seed, int(index), self.frames, self.width, self.height, self.fps)


@dataclass
class _ClipSource:
    name: str
    path: Path
    frames: np.ndarray  # (N,H,W,3) uint8 at the training size
    poses: np.ndarray   # (N,H,W,3) uint8 pose drawings


def _read_frames(path: Path, name: str) -> np.ndarray:
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"clip {name!r}: the folder holds no frames ({', '.join(IMAGE_SUFFIXES)}); "
                                "put its frames in as numbered images")
            return np.stack([to_rgb_array(open_image(p)) for p in files])
        from unianimate.video.reader import read_frames

        frames, _ = read_frames(path)
        if not frames:
            raise DataError(f"clip {name!r}: the video holds no frames; re-export it")
        return np.stack(frames)
    except DataError:
        raise
    except (OSError, ValueError, RuntimeError, InputError) as exc:
        detail = str(exc).replace(str(path), name)
        raise DataError(f"clip {name!r}: cannot read it ({detail}); re-export it as "
                        "an .mp4 video or a folder of PNG frames") from None


def _pose_file(path: Path) -> Path | None:
    cands = [path / "poses.json"] if path.is_dir() else [path.with_suffix(".json")]
    return next((c for c in cands if c.is_file()), None)


class ClipFolder:
    """Segments of ``frames`` consecutive frames from a folder of clips (see the module docstring).

    Item ``i`` picks a clip and a start from ``default_rng([seed, i])`` and a reference frame from
    anywhere in the same clip. Frames are fitted (cropped) to ``width`` x ``height``.
    """

    def __init__(self, folder: str | os.PathLike, seed: int, frames: int, width: int, height: int,
                 pose_extractor: PoseExtractor | None = None) -> None:
        from unianimate.pose import load_pose_sequence

        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"the clips folder {folder.name!r} does not exist; give a folder of videos or "
                            "frame folders")
        self.seed, self.frames, self.width, self.height = int(seed), int(frames), int(width), int(height)
        self.clips: list[_ClipSource] = []
        entries = sorted(p for p in folder.iterdir()
                         if p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES)
        if not entries:
            raise DataError(f"no clips in {folder.name!r}: add videos ({', '.join(VIDEO_SUFFIXES)}) or "
                            "folders of frames")
        for path in entries:
            name = path.name
            raw = _read_frames(path, name)
            if len(raw) < self.frames:
                raise DataError(f"clip {name!r} has {len(raw)} frames, shorter than a training segment of "
                                f"{self.frames}; drop it or train with fewer frames")
            pose_path = _pose_file(path)
            if pose_path is not None:
                try:
                    seq = load_pose_sequence(pose_path)
                except (OSError, ValueError, InputError) as exc:
                    raise DataError(f"clip {name!r}: cannot read its poses {pose_path.name!r}: {exc}") from None
                poses = list(seq)
            elif pose_extractor is not None:
                poses = list(pose_extractor(raw))
            else:
                raise DataError(f"clip {name!r} has no poses: add {pose_path or self._pose_name(path)!s} "
                                "(pose JSON) or enable pose extraction")
            if len(poses) != len(raw):
                raise DataError(f"clip {name!r}: {len(poses)} poses but {len(raw)} frames; give one pose "
                                "per frame")
            fitted = np.stack([fit_image(f, self.width, self.height) for f in raw])
            drawn = np.stack([pose_image(self._fit_pose(p, raw.shape[2], raw.shape[1]), self.width, self.height)
                              for p in poses])
            self.clips.append(_ClipSource(name, path, fitted, drawn))
        self._starts = [len(c.frames) - self.frames + 1 for c in self.clips]
        logger.info("clip folder: %d clips, %d segment starts", len(self.clips), sum(self._starts))

    @staticmethod
    def _pose_name(path: Path) -> str:
        return "poses.json inside it" if path.is_dir() else path.with_suffix(".json").name

    def _fit_pose(self, pose, src_w: int, src_h: int):
        """Map normalised keypoints through the same centre crop as :func:`fit_image` (mode crop)."""
        scale = max(self.width / src_w, self.height / src_h)
        cw, ch = self.width / (src_w * scale), self.height / (src_h * scale)  # visible fraction
        x0, y0 = (1 - cw) / 2, (1 - ch) / 2

        def fit(a: np.ndarray | None) -> np.ndarray | None:
            if a is None:
                return None
            out = a.astype(np.float64).copy()
            ok = (out >= 0).all(axis=-1)
            out[..., 0] = (out[..., 0] - x0) / cw
            out[..., 1] = (out[..., 1] - y0) / ch
            out[~ok] = a[~ok]
            return out

        return pose.replace(body=fit(pose.body), hands=fit(pose.hands), face=fit(pose.face))

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, index: int) -> Clip:
        rng = np.random.default_rng([self.seed, int(index)])
        k = int(rng.choice(len(self.clips), p=np.asarray(self._starts) / sum(self._starts)))
        src = self.clips[k]
        start = int(rng.integers(self._starts[k]))
        ref = int(rng.integers(len(src.frames)))
        sl = slice(start, start + self.frames)
        return Clip(name=src.name, reference=src.frames[ref], reference_pose=src.poses[ref],
                    poses=src.poses[sl], frames=src.frames[sl])


def collate(clips: Sequence[Clip]) -> dict[str, torch.Tensor]:
    """Clips -> uint8 tensors: reference/ref_pose (B,H,W,3), frames/poses (B,F,H,W,3)."""
    shapes = {c.frames.shape for c in clips}
    if len(shapes) != 1:
        raise DataError(f"clips {[c.name for c in clips]} differ in shape {sorted(shapes)}")
    return {"reference": torch.from_numpy(np.stack([c.reference for c in clips])),
            "ref_pose": torch.from_numpy(np.stack([c.reference_pose for c in clips])),
            "frames": torch.from_numpy(np.stack([c.frames for c in clips])),
            "poses": torch.from_numpy(np.stack([c.poses for c in clips]))}


class Batches(torch.utils.data.Dataset):
    """Batch ``m`` = items ``m*B .. m*B+B-1`` of ``dataset``, collated (for a DataLoader with
    ``batch_size=None`` and a sampler starting at the resume position)."""

    def __init__(self, dataset: object, batch_size: int) -> None:
        self.dataset, self.batch_size = dataset, int(batch_size)

    def __len__(self) -> int:
        return 2 ** 62 // self.batch_size

    def __getitem__(self, m: int) -> dict[str, torch.Tensor]:
        b = self.batch_size
        return collate([self.dataset[m * b + i] for i in range(b)])  # type: ignore[index]


def batch_stream(dataset: object, batch_size: int, start: int, workers: int = 0):
    """Batches ``start, start+1, ...`` of ``dataset`` (prefetched by ``workers`` processes)."""
    batches = Batches(dataset, batch_size)
    if workers <= 0:
        m = start
        while True:
            yield batches[m]
            m += 1
    sampler = range(start, len(batches))
    loader = torch.utils.data.DataLoader(batches, batch_size=None, sampler=sampler, num_workers=workers,
                                         persistent_workers=False, prefetch_factor=4)
    yield from loader


class BatchFeed:
    """Batch number ``position`` of ``dataset``: read ahead by a stream while positions come in order,
    restarted at the asked position otherwise (after a resume)."""

    def __init__(self, dataset: object, batch_size: int, workers: int = 0) -> None:
        self.dataset, self.batch_size, self.workers = dataset, int(batch_size), int(workers)
        self._stream: Iterator[dict[str, torch.Tensor]] | None = None
        self._next = -1

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        if self._stream is None or position != self._next:
            self._stream = batch_stream(self.dataset, self.batch_size, position, self.workers)
        self._next = position + 1
        return next(self._stream)


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 (...,H,W,3) -> float (...,3,H,W) in [0,1]."""
    return x.movedim(-1, -3).float().div(255.0)
