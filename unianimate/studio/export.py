"""Export: the chosen path stitched (one shared frame dropped at each join) into an H.264 MP4
with the driving video's audio, plus a side-by-side MP4 and a PNG zip on request."""
from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from unianimate.errors import InputError, ProjectError
from unianimate.studio.jobs import Progress, ProgressFn, report
from unianimate.studio.media import read_pngs
from unianimate.studio.project import Project
from unianimate.studio.store import ProjectStore
from unianimate.studio.views import ExportResult

log = logging.getLogger(__name__)


class Exporter:
    """Export of a project's chosen path (ownership through the store)."""

    def __init__(self, store: ProjectStore) -> None:
        self.store = store

    def _chosen_plan(self, project: Project) -> list[_PlanPart]:
        """Per chosen segment: its frames folder, first frame to use, frame count, pose indices.

        The first segment gives all its frames, every later one drops its first (shared) frame.
        """
        folder = self.store.folder(project.id)
        plan = []
        for k, (seg, cand) in enumerate(project.active_path()):
            if cand is None:
                break
            skip = 1 if k > 0 else 0
            plan.append(_PlanPart(seg.id, cand.id, self.store.inside(folder, cand.frames_dir or ""),
                                  skip, cand.num_frames, list(range(seg.start + skip, seg.end))))
        if not plan:
            raise InputError("nothing to export yet: generate candidates and choose one first")
        return plan

    def _panels(self, project: Project, folder: Path, plan: list[_PlanPart]
                ) -> Iterator[np.ndarray]:
        """(reference | pose | result) frames of the stitched path, one at a time."""
        from unianimate.video.writer import side_by_side_frames
        assert project.poses is not None
        ref = np.asarray(Image.open(folder / project.reference.fitted).convert("RGB"))
        images = folder / project.poses.images
        pose_idx = [i for part in plan for i in part.poses]
        for frame, idx in zip(self._iter_plan(plan), pose_idx):
            yield side_by_side_frames(ref, read_pngs(images, idx, idx + 1), frame[None])[0]

    @staticmethod
    def _iter_plan(plan: list[_PlanPart]) -> Iterator[np.ndarray]:
        """The stitched frames one by one (read lazily from the PNGs). A frame missing or
        damaged on disk stops with an InputError naming the candidate and the remedy."""
        for part in plan:
            for i in range(part.skip, part.count):
                try:
                    yield read_pngs(part.frames_dir, i, i + 1)[0]
                except ProjectError as err:
                    raise InputError(
                        f"frame {i} of segment {part.segment} candidate {part.candidate} cannot "
                        f"be read ({err}). Re-render that candidate from its manifest (Re-render "
                        f"button, or API /rerender with segment_id={part.segment!r} and "
                        f"candidate_id={part.candidate!r}), then export again") from None

    def chosen_frames(self, project_id: str, owner: str | None = None
                      ) -> tuple[np.ndarray, list[int]]:
        """The chosen path stitched (shared join frames dropped) and the pose index of each frame."""
        plan = self._chosen_plan(self.store.load(project_id, owner))
        frames = np.stack(list(self._iter_plan(plan)), axis=0)
        return frames, [i for part in plan for i in part.poses]

    def export(self, project_id: str, path: str | os.PathLike | None = None,
               fps: float | None = None, quality: int = 18, side_by_side: bool = False,
               png_zip: bool = False, with_audio: bool = True,
               progress: ProgressFn | None = None, owner: str | None = None) -> ExportResult:
        """Write the chosen path as an H.264 MP4 (yuv420p, CRF ``quality``), with the driving
        video's audio trimmed to match, plus optional side-by-side MP4 and PNG zip.

        ``path`` None writes into the project's ``exports/`` folder. k segments of n frames give
        exactly k*(n-1)+1 frames; fps defaults to source fps / frame interval. Frames are
        streamed from disk, so long videos do not need to fit in memory.
        """
        from unianimate.video.writer import AudioSpan, write_mp4, write_png_zip
        project = self.store.load(project_id, owner)
        folder = self.store.folder(project_id)
        plan = self._chosen_plan(project)
        pose_idx = [i for part in plan for i in part.poses]
        n_frames = len(pose_idx)
        info = project.poses
        assert info is not None
        try:
            out_fps = float(fps) if fps else info.fps
        except (TypeError, ValueError):
            raise InputError(f"fps must be a positive number, got {fps!r}") from None
        if not out_fps > 0:
            raise InputError(f"fps must be positive, got {fps}")
        if not (0 <= int(quality) <= 51):
            raise InputError(f"quality (CRF) must be 0..51 (lower is better), got {quality}")
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{uuid.uuid4().hex[:4]}"
        video = Path(path) if path is not None else folder / "exports" / f"{stamp}.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        audio = None
        if with_audio and info.audio and info.source_video:
            src = self.store.inside(folder, info.source_video)
            start = info.audio_start + pose_idx[0] * info.frame_interval / (info.source_fps or out_fps)
            audio = AudioSpan(path=str(src), start=start, duration=n_frames / out_fps)
        steps = 1 + int(side_by_side) + int(png_zip)
        report(progress, Progress("exporting", step=0, total=steps, message="writing the video"))
        write_mp4(self._iter_plan(plan), video, fps=out_fps, quality=int(quality), audio=audio)
        sbs_path = zip_path = None
        if side_by_side:
            report(progress, Progress("exporting", step=1, total=steps, message="side by side"))
            sbs_path = video.with_name(video.stem + "_side_by_side.mp4")
            write_mp4(self._panels(project, folder, plan), sbs_path, fps=out_fps,
                      quality=int(quality), audio=audio)
        if png_zip:
            report(progress, Progress("exporting", step=steps - 1, total=steps,
                                      message="PNG sequence zip"))
            zip_path = video.with_name(video.stem + "_frames.zip")
            write_png_zip(self._iter_plan(plan), zip_path)
        result = ExportResult(video=str(video), frames=n_frames, fps=out_fps,
                              has_audio=audio is not None,
                              side_by_side=str(sbs_path) if sbs_path else None,
                              png_zip=str(zip_path) if zip_path else None, segments=len(plan))
        with self.store.edit(project_id, owner) as p:
            p.exports.append({**asdict(result), **_relative_paths(result, folder),
                              "time": time.time()})
            p.exports[:] = p.exports[-50:]
        report(progress, Progress("done", step=steps, total=steps, message=f"exported {video.name}"))
        log.info("exported %d frames at %.3f fps", n_frames, out_fps)
        return result


@dataclass(frozen=True)
class _PlanPart:
    """One chosen segment of an export: where its frames are and which of them to use."""

    segment: str
    candidate: str
    frames_dir: Path
    skip: int
    count: int
    poses: list[int]


def _relative_paths(result: ExportResult, folder: Path) -> dict[str, str | None]:
    """The export's files as the manifest records them: relative to the project folder, or
    only the file name for a path elsewhere (no server path in project data)."""
    out: dict[str, str | None] = {}
    for key in ("video", "side_by_side", "png_zip"):
        value = getattr(result, key)
        if value is not None:
            path = Path(value)
            out[key] = (path.relative_to(folder).as_posix() if path.is_relative_to(folder)
                        else path.name)
    return out


__all__ = ["Exporter"]
