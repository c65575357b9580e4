"""The app service: everything the UI and the CLI do, as plain method calls (no Gradio here).

Typical flow::

    studio = Studio("projects", pipeline_factory=lambda: UniAnimatePipeline.tiny())
    p = studio.create_project("ref.png", width=512, height=768, fit="crop", owner=session)
    studio.set_poses_from_file(p.id, "dance.mp4", frame_interval=2, owner=session)
    cands = studio.generate_candidates(p.id, owner=session, progress=print)   # root segment
    studio.choose(p.id, cands[0].segment, cands[0].id, owner=session)
    seg = studio.continue_from(p.id, cands[0].segment, owner=session)
    studio.generate_candidates(p.id, seg.id, owner=session)
    ...
    studio.export(p.id, owner=session)

Ownership: every project stores an ``owner`` id; every method checks it against the caller's
(``owner=`` argument, else the Studio's default). A project owned by someone else behaves exactly
like a project that does not exist.

Files: everything a project has lives in its folder under ``projects_root``; :meth:`Studio.media`
and :meth:`Studio.resolve_served` hand out only paths inside it.

Generation: one job at a time per process (:data:`~unianimate.studio.jobs.GPU_QUEUE`); progress
callbacks get :class:`~unianimate.studio.jobs.Progress`; cancel with ``should_cancel`` or
:meth:`Studio.cancel`. A candidate is recorded as ``running`` before generation starts and becomes
``done``, ``interrupted`` (cancelled, or the process died) or ``failed``; ``chosen`` is only ever
changed by :meth:`Studio.choose` / :meth:`Studio.select_branch`.
"""
from __future__ import annotations

import inspect
import io
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unianimate.errors import (GenerationCancelled, InputError, ProjectError, UniAnimateError,
                               WeightsMissingError)
from unianimate.studio import measures as M
from unianimate.studio.jobs import (GPU_QUEUE, CancelToken, Progress, ProgressFn, StepClock,
                                    is_live, mark_dead, mark_live, report)
from unianimate.studio.project import (FIT_MODES, Candidate, GenerationSettings, Job, PoseInfo,
                                       Project, ReferenceInfo, Segment, check_relative,
                                       load_project, manifest_path, next_segment_range, save_project,
                                       seed_for, valid_id)
from unianimate.utils import check_known_keys

log = logging.getLogger(__name__)

#: upload size limits (bytes) checked before anything is decoded
MAX_REFERENCE_BYTES = 50 * 1024 * 1024
MAX_DRIVING_BYTES = 1024 * 1024 * 1024

_PROJECT_LOCKS: dict[str, threading.RLock] = {}
#: project folder -> cancel token of its queued/running job (one job per project at a time)
_TOKENS: dict[str, CancelToken] = {}
_TOKENS_LOCK = threading.Lock()
_PROJECT_LOCKS_GUARD = threading.Lock()


def _lock_for(folder: Path) -> threading.RLock:
    """One re-entrant lock per project folder, shared by every Studio of this process."""
    key = str(folder.resolve())
    with _PROJECT_LOCKS_GUARD:
        return _PROJECT_LOCKS.setdefault(key, threading.RLock())


# ---- views handed to the UI ---------------------------------------------------------------
@dataclass(frozen=True)
class ProjectSummary:
    """One row of :meth:`Studio.list_projects`. ``error`` is set for a damaged project."""

    id: str
    name: str
    created: float
    updated: float
    width: int = 0
    height: int = 0
    segments: int = 0
    chosen_frames: int = 0
    poster: str | None = None          # absolute path of the reference (fitted)
    error: str | None = None


@dataclass(frozen=True)
class CandidateView:
    """A candidate with absolute media paths, for display."""

    id: str
    segment: str
    index: int
    seed: int
    status: str
    chosen: bool
    num_frames: int
    poster: str | None
    preview: str | None
    frames_dir: str | None
    measures: dict[str, Any]
    timings: dict[str, float]
    color_corrected: bool
    error: str | None


@dataclass(frozen=True)
class SegmentView:
    """A segment of the tree with its candidates, for display."""

    id: str
    parent: str | None
    parent_candidate: str | None
    depth: int
    start: int
    end: int
    chosen: str | None
    on_path: bool
    branch_point: bool                 # has more than one child (alternative continuations)
    children: list[str]
    candidates: list[CandidateView]


@dataclass(frozen=True)
class Timeline:
    """The chosen path (root -> active leaf) with branch points and the whole tree."""

    project_id: str
    path: list[SegmentView]            # segments on the active path, root first
    tree: list[SegmentView]            # every segment
    active_leaf: str | None
    total_frames: int                  # frames an export of the chosen path would have now
    poses_total: int
    fps: float | None
    next_range: tuple[int, int] | None  # pose slice a continue_from(active leaf) would get
    can_continue: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready) for API endpoints."""
        return asdict(self)


@dataclass(frozen=True)
class ExportResult:
    """Files written by :meth:`Studio.export`."""

    video: str
    frames: int
    fps: float
    has_audio: bool
    side_by_side: str | None = None
    png_zip: str | None = None
    segments: int = 0


@dataclass(frozen=True)
class PosePreview:
    """Pose preview files: a skeleton video and one overlay of pose 0 on the reference."""

    skeleton_video: str
    overlay_image: str
    count: int
    fps: float
    messages: list[str] = field(default_factory=list)


# ---- the service --------------------------------------------------------------------------
class Studio:
    """Projects on disk + lazy pipeline + generation jobs. Thread-safe; no Gradio.

    ``pipeline_factory`` builds the pipeline on first use; it may take one argument, a
    ``report(message: str)`` callable for weight-loading progress. ``detector_factory`` builds a
    pose detector (needed for driving *videos* and to detect the reference's pose); without one,
    the reference pose is taken from the first driving pose and alignment is skipped.
    """

    def __init__(self, projects_root: str | os.PathLike,
                 pipeline_factory: Callable[..., Any] | None = None,
                 detector_factory: Callable[[], Any] | None = None,
                 owner: str | None = None) -> None:
        self.root = Path(projects_root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.pipeline_factory = pipeline_factory
        self.detector_factory = detector_factory
        self.owner = owner
        self._pipeline: Any = None
        self._pipeline_lock = threading.Lock()
        self._detector: Any = None

    # ---- pipeline ---------------------------------------------------------------------
    def pipeline(self, progress: ProgressFn | None = None) -> Any:
        """The pipeline, built on first call through ``pipeline_factory``.

        Errors of the factory (e.g. WeightsMissingError) propagate with their message; a later
        call tries again.
        """
        with self._pipeline_lock:
            if self._pipeline is not None:
                return self._pipeline
            if self.pipeline_factory is None:
                raise UniAnimateError("no model is configured: start the app with --model tiny or "
                                      "a model repo/folder")
            report(progress, Progress("loading", message="loading model weights"))

            def say(message: str) -> None:
                log.info("model: %s", message)
                report(progress, Progress("loading", message=str(message)))

            try:
                takes_arg = len(inspect.signature(self.pipeline_factory).parameters) >= 1
            except (TypeError, ValueError):
                takes_arg = False
            t0 = time.monotonic()
            self._pipeline = self.pipeline_factory(say) if takes_arg else self.pipeline_factory()
            log.info("pipeline %s ready in %.1f s", self.pipeline_info().get("model_name"),
                     time.monotonic() - t0)
            return self._pipeline

    def pipeline_info(self) -> dict[str, Any]:
        """{"loaded": bool, "model_name": str | None, "is_tiny": bool | None} (loads nothing)."""
        pipe = self._pipeline
        if pipe is None:
            return {"loaded": False, "model_name": None, "is_tiny": None}
        return {"loaded": True, "model_name": getattr(pipe, "model_name", type(pipe).__name__),
                "is_tiny": bool(getattr(pipe, "is_tiny", False))}

    def detector(self) -> Any:
        """The pose detector, built on first call, or None when no factory was given."""
        if self._detector is None and self.detector_factory is not None:
            self._detector = self.detector_factory()
        return self._detector

    # ---- folders, ownership -----------------------------------------------------------
    def _owner(self, owner: str | None) -> str | None:
        return owner if owner is not None else self.owner

    def _folder(self, project_id: str) -> Path:
        if not valid_id(project_id):
            raise ProjectError(f"{project_id!r} is not a valid project id")
        return self.root / project_id

    def _load(self, project_id: str, owner: str | None) -> Project:
        folder = self._folder(project_id)
        if not manifest_path(folder).is_file():
            raise ProjectError(f"no project {project_id!r}; pick one from the project list")
        project = load_project(folder)
        if project.owner != self._owner(owner):
            raise ProjectError(f"no project {project_id!r}; pick one from the project list")
        if self._mark_interrupted(project):
            # re-read under the lock: the job may have finished (and stopped being live) after
            # the unlocked read above; never write back a stale copy
            with _lock_for(folder):
                project = load_project(folder)
                if self._mark_interrupted(project):
                    save_project(project, folder)
                    with _TOKENS_LOCK:
                        busy = str(folder) in _TOKENS
                    if not busy:
                        _sweep_leftovers(folder)
        return project

    @staticmethod
    def _mark_interrupted(project: Project) -> bool:
        """Jobs/candidates recorded as running by a process that is gone -> interrupted."""
        changed = False
        for job in project.jobs:
            if job.status in ("queued", "running") and not is_live(job.id):
                job.status = "interrupted"
                job.finished = job.finished or time.time()
                job.error = job.error or "the app stopped while this job was running"
                changed = True
        for seg in project.segments:
            for cand in seg.candidates:
                if cand.status == "running" and not is_live(cand.job_id):
                    cand.status = "interrupted"
                    cand.error = cand.error or "the app stopped while this candidate was generated"
                    changed = True
        if changed:
            log.warning("project %s: marked a job interrupted by a previous stop", project.id)
        return changed

    @contextmanager
    def _edit(self, project_id: str, owner: str | None) -> Iterator[Project]:
        """Load fresh, let the body change the project, save atomically if it did not raise."""
        folder = self._folder(project_id)
        with _lock_for(folder):
            project = self._load(project_id, owner)
            yield project
            save_project(project, folder)

    def project_dir(self, project_id: str, owner: str | None = None) -> Path:
        """The folder of a project (ownership checked)."""
        self._load(project_id, owner)
        return self._folder(project_id)

    def media(self, project_id: str, relative: str, owner: str | None = None) -> Path:
        """Absolute path of a project file from its manifest-relative path; refuses escapes."""
        folder = self.project_dir(project_id, owner)
        return self._inside(folder, relative)

    @staticmethod
    def _inside(folder: Path, relative: str) -> Path:
        check_relative(relative, "media path")
        path = (folder / relative).resolve()
        base = folder.resolve()
        if path != base and base not in path.parents:
            raise ProjectError(f"{relative!r} points outside the project folder")
        return path

    def resolve_served(self, path: str | os.PathLike) -> Path:
        """Check that a path the UI wants to serve lies inside the projects root (symlinks
        resolved); return it resolved, ProjectError otherwise."""
        p = Path(path)
        if not p.is_absolute():
            p = self.root / p
        p = p.resolve()
        if p != self.root and self.root not in p.parents:
            raise ProjectError(f"refusing to serve {str(path)!r}: it is outside the projects folder")
        return p

    # ---- projects ---------------------------------------------------------------------
    def create_project(self, reference: Any, width: int = 512, height: int = 768,
                       fit: str = "crop", name: str | None = None,
                       owner: str | None = None) -> Project:
        """New project from a reference image (path, bytes, PIL image or uint8 array).

        The image is validated, stored as given (``reference/original.png``) and fitted to
        ``width`` x ``height`` (multiples of 64) with ``fit`` = crop | pad | stretch.
        """
        original, fitted = _prepare_reference(reference, width, height, fit)
        pid = uuid.uuid4().hex[:12]
        folder = self._folder(pid)
        (folder / "reference").mkdir(parents=True, exist_ok=False)
        _save_png(folder / "reference/original.png", original)
        _save_png(folder / "reference/fitted.png", fitted)
        ref = ReferenceInfo(original="reference/original.png", fitted="reference/fitted.png",
                            width=int(width), height=int(height), fit=fit)
        project = Project(id=pid, owner=self._owner(owner), name=name or _default_name(reference),
                          reference=ref)
        with _lock_for(folder):
            save_project(project, folder)
        log.info("created project %s (%dx%d, fit=%s)", pid, width, height, fit)
        return project

    def set_reference(self, project_id: str, reference: Any, width: int | None = None,
                      height: int | None = None, fit: str | None = None,
                      owner: str | None = None) -> Project:
        """Replace the reference image / size / fit (only before anything was generated).

        ``reference`` None keeps the stored original (e.g. to change only size or fit). The pose
        images are redrawn for the new size; on any error nothing changes.
        """
        with self._edit(project_id, owner) as project:
            if project.segments:
                raise InputError("this project already has generated segments; the reference "
                                 "cannot change now (create a new project instead)")
            folder = self._folder(project_id)
            w = int(width or project.width)
            h = int(height or project.height)
            fit = fit or project.reference.fit
            if reference is None:
                reference = np.asarray(Image.open(folder / project.reference.original).convert("RGB"))
            original, fitted = _prepare_reference(reference, w, h, fit)
            project.reference = replace(project.reference, width=w, height=h, fit=fit)
            staging = None
            if project.poses is not None:
                staging = folder / f".poses-{uuid.uuid4().hex[:8]}"
                shutil.copytree(folder / "poses", staging,
                                ignore=shutil.ignore_patterns("images", "preview.mp4", "overlay.png"))
            try:
                if staging is not None:
                    self._draw_poses(project, staging, np.asarray(fitted))
                _save_png(folder / "reference/original.png", original)
                _save_png(folder / "reference/fitted.png", fitted)
                if staging is not None:
                    _swap_dir(folder / "poses", staging)
            finally:
                if staging is not None and staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
            return project

    def get_project(self, project_id: str, owner: str | None = None) -> Project:
        """The project's data (a fresh copy read from disk)."""
        return self._load(project_id, owner)

    def list_projects(self, owner: str | None = None) -> list[ProjectSummary]:
        """The caller's projects, newest first; damaged ones are listed with ``error`` set."""
        want = self._owner(owner)
        out: list[ProjectSummary] = []
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or not valid_id(folder.name) or not manifest_path(folder).is_file():
                continue
            try:
                project = load_project(folder)
            except ProjectError as err:
                raw_owner = _raw_owner(folder)
                if raw_owner == want:
                    st = manifest_path(folder).stat()
                    out.append(ProjectSummary(id=folder.name, name=folder.name, created=st.st_mtime,
                                              updated=st.st_mtime, error=str(err)))
                continue
            if project.owner != want:
                continue
            path = project.active_path()
            frames = _stitched_length([s.num_frames for s, c in path if c is not None])
            out.append(ProjectSummary(
                id=project.id, name=project.name, created=project.created, updated=project.updated,
                width=project.width, height=project.height, segments=len(project.segments),
                chosen_frames=frames, poster=str(folder / project.reference.fitted)))
        out.sort(key=lambda s: s.updated, reverse=True)
        return out

    def rename_project(self, project_id: str, name: str, owner: str | None = None) -> Project:
        """Change the display name."""
        name = str(name).strip()
        if not name:
            raise InputError("a project name cannot be empty")
        with self._edit(project_id, owner) as project:
            project.name = name[:200]
            return project

    def delete_project(self, project_id: str, owner: str | None = None) -> None:
        """Remove a project folder (refused while one of its jobs runs)."""
        folder = self._folder(project_id)
        with _lock_for(folder):
            project = self._load(project_id, owner)
            if any(is_live(j.id) for j in project.jobs):
                raise ProjectError("a generation of this project is running; cancel it first")
            shutil.rmtree(folder)
        log.info("deleted project %s", project_id)

    def delete(self, project_id: str, owner: str | None = None) -> None:
        """Alias of :meth:`delete_project`."""
        self.delete_project(project_id, owner=owner)

    # ---- poses ------------------------------------------------------------------------
    def set_poses_from_file(self, project_id: str, path: str | os.PathLike,
                            frame_interval: int = 2, start: float | None = None,
                            end: float | None = None, align: bool = True,
                            progress: ProgressFn | None = None,
                            owner: str | None = None, *, kind: str = "auto",
                            image_fps: float = 30.0, smooth: float = 0.0,
                            person: int | None = None, align_mode: str = "per-limb",
                            align_parts: Sequence[str] | str = ("body", "hands"),
                            display_name: str | None = None) -> PoseInfo:
        """Driving input (video, pose JSON, folder or zip of pose images) -> the project's poses.

        A video is run through the pose detector (per-frame progress); every ``frame_interval``-th
        frame is kept and the output fps is source fps / interval. ``start``/``end`` trim in
        seconds. ``align`` scales the driving poses onto the reference body (spec §5).
        ``kind``, ``image_fps``, ``smooth``, ``person``: see ``unianimate.pose.load_driving``;
        ``align_mode``/``align_parts``: see ``unianimate.pose.align``; ``display_name``: the
        user's name for the source when ``path`` is a temporary copy (shown instead of it).
        """
        self._load(project_id, owner)            # ownership before any heavy work
        from unianimate.pose import load_driving
        # -- issue 11 (pose-layer options; a drawn-pose video needs no detector) ---------------
        from unianimate.pose.align import MODES, check_parts
        from unianimate.pose.importers import driving_needs_detector
        if align_mode not in MODES:
            raise InputError(f"alignment mode {align_mode!r} is not one of {MODES}")
        align_parts = check_parts(align_parts)
        # ---------------------------------------------------------------------------------------
        path = Path(path)
        if not path.exists():
            raise InputError(f"driving input {str(path)!r} does not exist; upload it again")
        _check_upload_size(path, MAX_DRIVING_BYTES, "driving input")
        if int(frame_interval) < 1:
            raise InputError(f"frame interval must be 1 or more, got {frame_interval}")

        def on_frames(*args: Any) -> None:
            done, total = (int(args[0]), int(args[1])) if len(args) >= 2 else (int(args[0]), 0)
            report(progress, Progress("poses", step=done, total=total,
                                      message=f"pose extraction {done}/{total or '?'}"))

        needs_detector = _is_video(path) and driving_needs_detector(path, kind)   # issue 11
        detector = self.detector() if needs_detector else None
        if needs_detector and detector is None:
            raise InputError("pose extraction from a video needs the DWPose detector, which is "
                             "not available here; upload a pose sequence (JSON) instead")
        if needs_detector:      # DWPose may run on the GPU: take a turn in the queue
            on_wait = (lambda pos: report(progress, Progress(
                "queued", queue_position=pos, message=f"waiting for the GPU: {pos} job(s) ahead")))
            with GPU_QUEUE.slot(on_wait=on_wait):
                driving = load_driving(path, detector=detector, frame_interval=int(frame_interval),
                                       start=start, end=end, progress=on_frames, kind=kind,
                                       image_fps=image_fps, smooth=smooth, person=person,
                                       display_name=display_name)
        else:
            driving = load_driving(path, detector=detector, frame_interval=int(frame_interval),
                                   start=start, end=end, progress=on_frames, kind=kind,
                                   image_fps=image_fps, smooth=smooth, person=person,
                                   display_name=display_name)
        return self._store_driving(project_id, owner, driving, path, int(frame_interval),
                                   start, end, align, align_mode, align_parts, display_name)

    def set_pose_sequence(self, project_id: str, sequence: Any, align: bool = True,
                          frame_interval: int = 1, owner: str | None = None) -> PoseInfo:
        """Use an in-memory PoseSequence as the driving poses (fps taken from the sequence)."""
        from unianimate.pose import PoseSequence
        if not isinstance(sequence, PoseSequence):
            raise InputError("set_pose_sequence needs a unianimate.pose.PoseSequence")
        driving = _SimpleDriving(keypoints=sequence, pose_images=None, fps=float(sequence.fps),
                                 messages=[], source_video=None)
        return self._store_driving(project_id, owner, driving, None, frame_interval, None, None,
                                   align)

    def _store_driving(self, project_id: str, owner: str | None, driving: Any,
                       source: Path | None, frame_interval: int, start: float | None,
                       end: float | None, align: bool, align_mode: str = "per-limb",
                       align_parts: Sequence[str] = ("body", "hands"),
                       display_name: str | None = None) -> PoseInfo:
        """Save keypoints / pose images (+ a copy of a source video with audio) into ``poses/``.

        Everything is built in a staging folder and swapped in at the end, so a failure leaves
        the previous poses untouched.
        """
        from unianimate.pose import save_pose_sequence
        from unianimate.video.writer import probe_media
        with self._edit(project_id, owner) as project:
            if project.segments:
                raise InputError("this project already has generated segments; its poses cannot "
                                 "change now (create a new project for another driving input)")
            folder = self._folder(project_id)
            keypoints = getattr(driving, "keypoints", None)
            images = getattr(driving, "pose_images", None)
            count = len(keypoints.poses) if keypoints is not None else (
                len(images) if images is not None else 0)
            if count == 0:
                raise InputError("the driving input has no frames with poses; use another video "
                                 "or pose file")
            fps = float(getattr(driving, "fps", 0) or 0)
            if not fps > 0:
                raise InputError("the driving input has no usable frame rate")
            info = PoseInfo(count=count, fps=fps, images="poses/images",
                            frame_interval=int(frame_interval), start=start, end=end,
                            source_fps=fps * int(frame_interval),
                            source_name=display_name or (source.name if source is not None else None),
                            messages=[str(m) for m in (getattr(driving, "messages", None) or [])],
                            aligned=bool(align), align_mode=align_mode,
                            align_parts=list(align_parts))
            staging = folder / f".poses-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            try:
                if keypoints is not None:
                    save_pose_sequence(keypoints, staging / "driving.json")
                    info.keypoints = "poses/driving.json"
                else:
                    (staging / "given").mkdir()
                    for i, img in enumerate(images):
                        _save_png(staging / "given" / f"{i:06d}.png", _to_uint8(img))
                src_video = getattr(driving, "source_video", None)
                if src_video:
                    src_video = Path(src_video)
                    if probe_media(src_video).has_audio:
                        dest = staging / ("source" + src_video.suffix.lower())
                        shutil.copyfile(src_video, dest)
                        info.source_video = f"poses/{dest.name}"
                        info.audio = True
                        info.audio_start = float(start or 0.0)
                project.poses = info
                fitted = np.asarray(Image.open(folder / project.reference.fitted).convert("RGB"))
                self._draw_poses(project, staging, fitted)
                _swap_dir(folder / "poses", staging)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
            return project.poses

    def _draw_poses(self, project: Project, staging: Path, fitted: np.ndarray) -> None:
        """In ``staging`` (the future ``poses/``): detect the reference pose, align, draw every
        driving pose at WxH (``images/``) and the reference pose (``reference_pose.png``)."""
        from unianimate.imaging import fit_image
        from unianimate.pose import (align_poses_report, draw_pose, load_pose_sequence,
                                     save_pose_sequence)
        info = project.poses
        assert info is not None
        w, h = project.width, project.height
        ref_pose = None
        try:
            detector = self.detector()
        except WeightsMissingError as err:
            detector = None
            info.messages.append(f"the pose detector is not available ({err}); the reference "
                                 "pose cannot be detected")
        if detector is not None:
            ref_pose = _detect(detector, fitted)
            if ref_pose is None:
                info.messages.append("no person found in the reference image; the driving poses "
                                     "are not aligned to it")
        images_dir = staging / "images"
        if images_dir.exists():
            shutil.rmtree(images_dir)
        images_dir.mkdir(parents=True)
        if info.keypoints is not None:
            seq = load_pose_sequence(staging / "driving.json")
            poses = list(seq.poses)
            if info.aligned and ref_pose is not None:
                poses, rep = align_poses_report(ref_pose, poses, mode=info.align_mode,
                                                parts=info.align_parts)
                info.messages.extend(str(m) for m in getattr(rep, "messages", ()))
            elif info.aligned:
                info.aligned = False
                info.messages.append("alignment skipped: no pose of the reference image (no pose "
                                     "detector here); the driving poses are used as they are")
            save_pose_sequence(seq.with_poses(poses), staging / "poses.json")
            info.aligned_keypoints = "poses/poses.json"
            for i, pose in enumerate(poses):
                _save_png(images_dir / f"{i:06d}.png", draw_pose(pose, h, w))
            ref_img = draw_pose(ref_pose if ref_pose is not None else poses[0], h, w)
        else:
            info.aligned = False
            for i, p in enumerate(sorted((staging / "given").glob("*.png"))):
                img = fit_image(Image.open(p).convert("RGB"), w, h, mode=project.reference.fit)
                _save_png(images_dir / f"{i:06d}.png", _to_uint8(img))
            ref_img = (draw_pose(ref_pose, h, w) if ref_pose is not None else
                       np.asarray(Image.open(images_dir / "000000.png").convert("RGB")))
        project.reference.pose_source = "detected" if ref_pose is not None else "driving-frame-0"
        _save_png(staging / "reference_pose.png", ref_img)
        project.reference.pose = "poses/reference_pose.png"

    def pose_preview(self, project_id: str, owner: str | None = None) -> PosePreview:
        """Write (and return) a skeleton video of the poses and pose 0 drawn over the reference."""
        from unianimate.video.writer import write_mp4
        project = self._load(project_id, owner)
        if project.poses is None:
            raise InputError("this project has no poses yet; load a driving video or pose file")
        folder = self._folder(project_id)
        info = project.poses
        video = folder / "poses/preview.mp4"
        overlay_path = folder / "poses/overlay.png"
        if video.is_file() and overlay_path.is_file():       # poses/ is replaced on any change
            return PosePreview(skeleton_video=str(video), overlay_image=str(overlay_path),
                               count=info.count, fps=info.fps, messages=list(info.messages))
        images = folder / info.images
        # streamed from disk: a long driving input must not be held in memory at once
        write_mp4((_read_pngs(images, i, i + 1)[0] for i in range(info.count)), video,
                  fps=info.fps, quality=23)
        ref = np.asarray(Image.open(folder / project.reference.fitted).convert("RGB"))
        pose0 = _read_pngs(images, 0, 1)[0]
        mask = pose0.max(axis=2, keepdims=True) > 0
        overlay = np.where(mask, pose0, (ref * 0.6).astype(np.uint8))
        _save_png(overlay_path, overlay)
        return PosePreview(skeleton_video=str(video), overlay_image=str(overlay_path),
                           count=info.count, fps=info.fps, messages=list(info.messages))

    # ---- settings ---------------------------------------------------------------------
    def set_settings(self, project_id: str, owner: str | None = None,
                     **changes: Any) -> GenerationSettings:
        """Change generation settings (names of :class:`GenerationSettings`); returns the new ones.

        Already generated candidates keep the settings they were made with.
        """
        check_known_keys(GenerationSettings, changes, where="the generation settings")
        with self._edit(project_id, owner) as project:
            typed = {}
            for key, value in changes.items():
                typed[key] = _typed_setting(key, value, type(getattr(project.settings, key)))
            try:
                project.settings = replace(project.settings, **typed).validated()
            except ProjectError as err:
                raise InputError(str(err)) from None
            return project.settings

    # ---- segments and candidates ------------------------------------------------------
    def ensure_root(self, project_id: str, owner: str | None = None) -> Segment:
        """The root segment, created (poses 0..frames_per_segment) when missing."""
        with self._edit(project_id, owner) as project:
            root = project.root
            if root is not None:
                return root
            if project.poses is None:
                raise InputError("load a driving video or pose sequence before generating")
            n = project.settings.frames_per_segment
            if project.poses.count < n:
                raise InputError(f"the pose sequence has {project.poses.count} frames, fewer than "
                                 f"one segment of {n}; lower 'frames per segment' or use a longer "
                                 "driving input")
            root = Segment(id=project.next_segment_id(), parent=None, parent_candidate=None,
                           depth=0, start=0, end=n)
            project.segments.append(root)
            project.active_leaf = root.id
            return root

    def _fit_empty_segment(self, project_id: str, segment_id: str, owner: str | None) -> None:
        """A segment with no candidates yet follows the current 'frames per segment'."""
        with self._edit(project_id, owner) as project:
            seg = project.segment(segment_id)
            if seg.candidates or project.children(seg.id) or project.poses is None:
                return
            n = project.settings.frames_per_segment
            count = project.poses.count
            if seg.parent is None and count < n:
                raise InputError(f"the pose sequence has {count} frames, fewer than one segment "
                                 f"of {n}; lower 'frames per segment' or use a longer driving input")
            seg.end = min(seg.start + n, count)

    def generate_candidates(self, project_id: str, segment_id: str | None = None,
                            n: int | None = None, progress: ProgressFn | None = None,
                            should_cancel: Callable[[], bool] | None = None,
                            owner: str | None = None) -> list[Candidate]:
        """Generate ``n`` (default: settings.candidates) new candidates of a segment.

        ``segment_id`` None = the root segment (created on first use). Blocks until done; waits
        in the GPU queue first (progress reports the position). On cancel raises
        GenerationCancelled after recording the candidate in progress as interrupted; candidates
        finished before stay. On any other error the candidate is recorded as failed and the
        error propagates.
        """
        if segment_id is None:
            segment_id = self.ensure_root(project_id, owner).id
        self._fit_empty_segment(project_id, segment_id, owner)
        project = self._load(project_id, owner)
        seg = project.segment(segment_id)
        if project.poses is None:
            raise InputError("load a driving video or pose sequence before generating")
        if seg.parent is not None and seg.first_frame is None:
            raise ProjectError(f"segment {seg.id} has no first frame recorded")
        count = int(n if n is not None else project.settings.candidates)
        if not (1 <= count <= 16):
            raise InputError(f"number of candidates must be 1..16, got {count}")
        job = Job(id=uuid.uuid4().hex[:12], kind="generate", segment=seg.id, candidates=[])
        token = CancelToken(should_cancel)
        key = str(self._folder(project_id))
        with _TOKENS_LOCK:
            if key in _TOKENS:
                raise InputError("a generation of this project is already queued or running; "
                                 "wait for it or cancel it")
            _TOKENS[key] = token
        mark_live(job.id)
        try:
            with self._edit(project_id, owner) as p:
                p.jobs.append(job)
                p.jobs[:] = p.jobs[-200:]
            on_wait = (lambda pos: report(progress, Progress(
                "queued", queue_position=pos, message=f"waiting for the GPU: {pos} job(s) ahead")))
            with GPU_QUEUE.slot(on_wait=on_wait, should_cancel=token):
                self._set_job(project_id, owner, job.id, status="running")
                pipe = self.pipeline(progress)
                return self._run_generation(project_id, owner, seg.id, job.id, count, pipe,
                                            progress, token)
        except GenerationCancelled:
            self._set_job(project_id, owner, job.id, status="cancelled")
            raise
        except BaseException as err:
            self._set_job(project_id, owner, job.id, status="failed", error=_describe(err))
            raise
        finally:
            mark_dead(job.id)
            with _TOKENS_LOCK:
                _TOKENS.pop(key, None)

    def reroll(self, project_id: str, segment_id: str, n: int | None = None,
               progress: ProgressFn | None = None,
               should_cancel: Callable[[], bool] | None = None,
               owner: str | None = None) -> list[Candidate]:
        """More candidates for a segment (new seeds; existing candidates and branches stay)."""
        return self.generate_candidates(project_id, segment_id, n=n, progress=progress,
                                        should_cancel=should_cancel, owner=owner)

    def cancel(self, project_id: str, owner: str | None = None) -> bool:
        """Ask the queued/running generation of a project to stop; False when none runs."""
        self._load(project_id, owner)
        with _TOKENS_LOCK:
            token = _TOKENS.get(str(self._folder(project_id)))
        if token is None:
            return False
        token.cancel()
        return True

    def _set_job(self, project_id: str, owner: str | None, job_id: str, status: str,
                 error: str | None = None) -> None:
        try:
            with self._edit(project_id, owner) as p:
                for job in p.jobs:
                    if job.id == job_id:
                        job.status = status
                        if status not in ("queued", "running"):
                            job.finished = time.time()
                        if error:
                            job.error = error
        except ProjectError as err:           # project deleted meanwhile: nothing to record
            log.warning("could not record job %s as %s: %s", job_id, status, err)

    def _run_generation(self, project_id: str, owner: str | None, segment_id: str, job_id: str,
                        count: int, pipe: Any, progress: ProgressFn | None,
                        token: CancelToken) -> list[Candidate]:
        """The body of a generation job (holding the GPU)."""
        folder = self._folder(project_id)
        project = self._load(project_id, owner)
        seg = project.segment(segment_id)
        settings = project.settings
        inputs = self._segment_inputs(project, seg)
        clock = StepClock(count * settings.steps)
        model_name = str(getattr(pipe, "model_name", type(pipe).__name__))
        done: list[Candidate] = []
        for i in range(count):
            # record the candidate as running first, so a crash shows up as interrupted
            with self._edit(project_id, owner) as p:
                s = p.segment(segment_id)
                index = max((c.index for c in s.candidates), default=-1) + 1
                cand = Candidate(id=f"c{index}", index=index,
                                 seed=seed_for(settings.base_seed, s.depth, index),
                                 settings=settings, status="running", job_id=job_id,
                                 model=model_name)
                s.candidates.append(cand)
                for job in p.jobs:
                    if job.id == job_id:
                        job.candidates.append(cand.id)

            def callback(step: int, total: int, preview: Any = None, _i: int = i) -> None:
                # ``total`` is the pipeline's count of denoising calls for one candidate
                clock.total = max(1, count * int(total))
                done_steps = _i * int(total) + int(step)
                eta = clock.tick(done_steps)
                report(progress, Progress("generating", step=done_steps, total=clock.total,
                                          eta_s=eta, candidate=_i + 1, candidates=count,
                                          preview=preview,
                                          message=f"candidate {_i + 1}/{count}: step {step}/{total}"))

            t0 = time.monotonic()
            rel = f"segments/{segment_id}/{cand.id}"
            try:
                frames = self._render(pipe, inputs, cand.seed, settings, seg.num_frames,
                                      callback, token)
                gen_s = time.monotonic() - t0
                report(progress, Progress("saving", step=clock.done, total=clock.total,
                                          candidate=i + 1, candidates=count,
                                          message=f"candidate {i + 1}/{count}: saving frames"))
                frames, correction, measures = self._measure_and_correct(project, seg, inputs,
                                                                          frames, settings)
                fps = project.poses.fps if project.poses else 8.0
                self._save_candidate_media(folder, rel, frames, fps)
            except GenerationCancelled:
                self._finish_candidate(project_id, owner, segment_id, cand.id, "interrupted",
                                       error="cancelled by the user")
                raise
            except BaseException as err:
                self._finish_candidate(project_id, owner, segment_id, cand.id, "failed",
                                       error=_describe(err))
                raise
            timings = {"generate_s": round(gen_s, 3),
                       "per_step_s": round(gen_s / max(1, settings.steps), 4),
                       "save_s": round(time.monotonic() - t0 - gen_s, 3)}
            with self._edit(project_id, owner) as p:
                c = p.segment(segment_id).candidate(cand.id)
                c.status = "done"
                c.frames_dir = rel
                c.num_frames = int(frames.shape[0])
                c.poster = f"{rel}/poster.png"
                c.preview = f"{rel}/preview.mp4"
                c.timings = timings
                c.measures = measures
                c.color_correction = correction
                done.append(c)
            log.info("project %s segment %s: candidate %s (seed %d) done in %.1f s",
                     project_id, segment_id, cand.id, cand.seed, gen_s)
        self._set_job(project_id, owner, job_id, status="done")
        report(progress, Progress("done", step=clock.total, total=clock.total, candidates=count,
                                  message=f"{count} candidate(s) ready"))
        return done

    def _finish_candidate(self, project_id: str, owner: str | None, segment_id: str,
                          candidate_id: str, status: str, error: str | None) -> None:
        try:
            with self._edit(project_id, owner) as p:
                c = p.segment(segment_id).candidate(candidate_id)
                c.status = status
                c.error = error
        except ProjectError as err:
            log.warning("could not record candidate %s as %s: %s", candidate_id, status, err)

    def _segment_inputs(self, project: Project, seg: Segment) -> dict[str, Any]:
        """Everything the pipeline needs for a segment, read from the project folder."""
        folder = self._folder(project.id)
        if project.poses is None or project.reference.pose is None:
            raise InputError("load a driving video or pose sequence before generating")
        ref = np.asarray(Image.open(folder / project.reference.fitted).convert("RGB"))
        ref_pose = np.asarray(Image.open(folder / project.reference.pose).convert("RGB"))
        poses = _read_pngs(folder / project.poses.images, seg.start, seg.end)
        first = None
        if seg.first_frame is not None:
            first = np.asarray(Image.open(self._inside(folder, seg.first_frame)).convert("RGB"))
        prev_last = first
        anchor = None
        if seg.parent is not None:
            # anchor: the root candidate this branch grew from (the first segment's colours)
            chain = project.ancestry(seg.id)
            anchor_c = chain[0].candidate(chain[1].parent_candidate or "")
            if anchor_c.measures.get("mean_color") is not None:
                anchor = np.asarray(anchor_c.measures["mean_color"], dtype=np.float64)
        if anchor is None:
            anchor = M.mean_color(ref[None])
        return {"reference": ref, "ref_pose": ref_pose, "poses": poses, "first_frame": first,
                "prev_last": prev_last, "anchor": anchor}

    @staticmethod
    def _render(pipe: Any, inputs: dict[str, Any], seed: int, settings: GenerationSettings,
                num_frames: int, callback: Callable[..., None] | None,
                should_cancel: Callable[[], bool] | None) -> np.ndarray:
        frames = pipe.generate_segment(
            inputs["reference"], inputs["poses"], inputs["ref_pose"],
            first_frame=inputs["first_frame"], num_frames=num_frames, seed=int(seed),
            num_inference_steps=settings.steps, guidance_scale=settings.guidance,
            noise_prior_t=settings.noise_prior_t, callback=callback, should_cancel=should_cancel)
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != num_frames:
            raise UniAnimateError(f"the pipeline returned frames of shape {frames.shape} "
                                  f"{frames.dtype}, expected ({num_frames}, H, W, 3) uint8")
        return frames

    @staticmethod
    def _measure_and_correct(project: Project, seg: Segment, inputs: dict[str, Any],
                             frames: np.ndarray, settings: GenerationSettings
                             ) -> tuple[np.ndarray, dict[str, Any] | None, dict[str, Any]]:
        """Colour correction (when switched on and the join drifts) then the measures."""
        prev_last = inputs["prev_last"]
        correction = None
        if prev_last is not None and settings.color_correction:
            jump = M.color_jump(prev_last, frames[0])
            if jump > settings.color_threshold:
                frames, params = M.match_color(frames, prev_last)
                correction = {**params, "jump_before": round(jump, 3),
                              "jump_after": round(M.color_jump(prev_last, frames[0]), 3)}
        measures = M.candidate_measures(frames, prev_last=prev_last, anchor_color=inputs["anchor"],
                                        reference=inputs["reference"])
        return frames, correction, measures

    def _save_candidate_media(self, folder: Path, rel: str, frames: np.ndarray,
                              fps: float) -> None:
        """Frames as PNGs (lossless: the last one seeds the next segment), poster, preview."""
        from unianimate.video.writer import write_mp4
        final = folder / rel
        tmp = folder / (rel + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for i, frame in enumerate(frames):
            _save_png(tmp / f"{i:06d}.png", frame)
        _save_png(tmp / "poster.png", frames[-1])
        write_mp4(frames, tmp / "preview.mp4", fps=fps, quality=20)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)

    def candidate_frames(self, project_id: str, segment_id: str, candidate_id: str,
                         owner: str | None = None) -> np.ndarray:
        """The saved frames of a done candidate, uint8 (F,H,W,3)."""
        project = self._load(project_id, owner)
        cand = project.segment(segment_id).candidate(candidate_id)
        if cand.status != "done" or cand.frames_dir is None:
            raise InputError(f"candidate {candidate_id} of segment {segment_id} has no frames "
                             f"(status: {cand.status})")
        folder = self._folder(project_id)
        return _read_pngs(self._inside(folder, cand.frames_dir), 0, cand.num_frames)

    def rerender(self, project_id: str, segment_id: str, candidate_id: str,
                 progress: ProgressFn | None = None, owner: str | None = None) -> np.ndarray:
        """Generate a candidate again from the manifest alone (same seed, settings, inputs,
        same colour correction); returns the frames without saving them."""
        project = self._load(project_id, owner)
        seg = project.segment(segment_id)
        cand = seg.candidate(candidate_id)
        inputs = self._segment_inputs(project, seg)
        with GPU_QUEUE.slot():
            pipe = self.pipeline(progress)
            name = str(getattr(pipe, "model_name", type(pipe).__name__))
            if cand.model is not None and cand.model != name:
                log.warning("re-rendering %s/%s with model %s; it was made with %s, so the "
                            "frames will differ", segment_id, candidate_id, name, cand.model)
            frames = self._render(pipe, inputs, cand.seed, cand.settings, seg.num_frames, None, None)
        if cand.color_correction is not None:
            frames = M.apply_color(frames, cand.color_correction)
        return frames

    def choose(self, project_id: str, segment_id: str, candidate_id: str,
               owner: str | None = None) -> Timeline:
        """Choose a done candidate of a segment; the active path follows it (an existing
        continuation of that candidate is resumed, otherwise the path ends at this segment)."""
        with self._edit(project_id, owner) as project:
            seg = project.segment(segment_id)
            try:
                cand = seg.candidate(candidate_id)
            except ProjectError:
                raise InputError(f"segment {segment_id} has no candidate {candidate_id!r}; "
                                 "generate candidates first and choose one of them") from None
            if cand.status != "done":
                raise InputError(f"candidate {candidate_id} of segment {segment_id} is "
                                 f"{cand.status}, not done; choose a finished candidate")
            seg.chosen = candidate_id
            project.active_leaf = self._descend(project, seg.id)
            _sync_chosen(project)
        return self.timeline(project_id, owner)

    def select_branch(self, project_id: str, segment_id: str,
                      owner: str | None = None) -> Timeline:
        """Make the branch through ``segment_id`` the active path (its ancestors' choices follow)."""
        with self._edit(project_id, owner) as project:
            project.segment(segment_id)
            project.active_leaf = self._descend(project, segment_id)
            _sync_chosen(project)
        return self.timeline(project_id, owner)

    @staticmethod
    def _descend(project: Project, segment_id: str) -> str:
        """From a segment follow the chosen candidates' newest continuations down to a leaf."""
        seg = project.segment(segment_id)
        seen = {seg.id}
        while seg.chosen is not None:
            kids = project.children(seg.id, seg.chosen)
            if not kids:
                break
            seg = max(kids, key=lambda s: s.created)
            if seg.id in seen:
                break
            seen.add(seg.id)
        return seg.id

    def continue_from(self, project_id: str, segment_id: str | None = None,
                      owner: str | None = None) -> Segment:
        """The next segment after a segment's chosen candidate (default: the active leaf).

        Its first frame is that candidate's last frame and its poses start at that frame's pose
        (next.start = prev.end - 1). An existing continuation of the same candidate is reused.
        """
        with self._edit(project_id, owner) as project:
            seg_id = segment_id or project.active_leaf
            if seg_id is None:
                raise InputError("nothing to continue from: generate and choose a first segment")
            seg = project.segment(seg_id)
            if seg.chosen is None:
                raise InputError(f"choose a candidate of segment {seg.id} before continuing")
            existing = project.children(seg.id, seg.chosen)
            if existing:
                child = max(existing, key=lambda s: s.created)
                project.active_leaf = self._descend(project, child.id)   # keep its continuation
                _sync_chosen(project)
                return child
            assert project.poses is not None
            span = next_segment_range(seg.end, project.settings.frames_per_segment,
                                      project.poses.count)
            if span is None:
                raise InputError(f"the pose sequence ends at frame {project.poses.count}; there is "
                                 "nothing left to continue (export the video now)")
            folder = self._folder(project_id)
            cand = seg.candidate(seg.chosen)
            new = Segment(id=project.next_segment_id(), parent=seg.id, parent_candidate=cand.id,
                          depth=seg.depth + 1, start=span[0], end=span[1])
            last = self._inside(folder, cand.frames_dir or "") / f"{cand.num_frames - 1:06d}.png"
            dest = folder / "segments" / new.id / "first_frame.png"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(last, dest)
            new.first_frame = f"segments/{new.id}/first_frame.png"
            project.segments.append(new)
            project.active_leaf = new.id
            _sync_chosen(project)
            return new

    # ---- timeline ---------------------------------------------------------------------
    def timeline(self, project_id: str, owner: str | None = None) -> Timeline:
        """The data the UI shows: the active path, the whole tree, what continue would do."""
        project = self._load(project_id, owner)
        folder = self._folder(project_id)
        path = project.active_path()
        on_path = {s.id for s, _ in path}

        def view(seg: Segment) -> SegmentView:
            kids = project.children(seg.id)
            cands = [CandidateView(
                id=c.id, segment=seg.id, index=c.index, seed=c.seed, status=c.status,
                chosen=(c.id == seg.chosen), num_frames=c.num_frames,
                poster=str(folder / c.poster) if c.poster else None,
                preview=str(folder / c.preview) if c.preview else None,
                frames_dir=str(folder / c.frames_dir) if c.frames_dir else None,
                measures=dict(c.measures), timings=dict(c.timings),
                color_corrected=c.color_correction is not None, error=c.error)
                for c in seg.candidates]
            return SegmentView(id=seg.id, parent=seg.parent, parent_candidate=seg.parent_candidate,
                               depth=seg.depth, start=seg.start, end=seg.end, chosen=seg.chosen,
                               on_path=seg.id in on_path, branch_point=len(kids) > 1,
                               children=[k.id for k in kids], candidates=cands)

        tree = [view(s) for s in project.segments]
        by_id = {v.id: v for v in tree}
        lengths = [s.num_frames for s, c in path if c is not None]
        next_range = None
        can_continue = False
        if path and path[-1][1] is not None and project.poses is not None:
            next_range = next_segment_range(path[-1][0].end, project.settings.frames_per_segment,
                                            project.poses.count)
            can_continue = next_range is not None
        return Timeline(project_id=project.id, path=[by_id[s.id] for s, _ in path], tree=tree,
                        active_leaf=project.active_leaf, total_frames=_stitched_length(lengths),
                        poses_total=project.poses.count if project.poses else 0,
                        fps=project.poses.fps if project.poses else None,
                        next_range=next_range, can_continue=can_continue)

    # ---- export -----------------------------------------------------------------------
    def _chosen_plan(self, project: Project) -> list[tuple[Path, int, int, list[int]]]:
        """Per chosen segment: (frames folder, first frame to use, frame count, pose indices).

        The first segment gives all its frames, every later one drops its first (shared) frame.
        """
        folder = self._folder(project.id)
        plan = []
        for k, (seg, cand) in enumerate(project.active_path()):
            if cand is None:
                break
            skip = 1 if k > 0 else 0
            plan.append((self._inside(folder, cand.frames_dir or ""), skip, cand.num_frames,
                         list(range(seg.start + skip, seg.end))))
        if not plan:
            raise InputError("nothing to export yet: generate candidates and choose one first")
        return plan

    @staticmethod
    def _iter_plan(plan: list[tuple[Path, int, int, list[int]]]) -> Iterator[np.ndarray]:
        """The stitched frames one by one (read lazily from the PNGs)."""
        for frames_dir, skip, count, _ in plan:
            for i in range(skip, count):
                yield _read_pngs(frames_dir, i, i + 1)[0]

    def chosen_frames(self, project_id: str, owner: str | None = None
                      ) -> tuple[np.ndarray, list[int]]:
        """The chosen path stitched (shared join frames dropped) and the pose index of each frame."""
        plan = self._chosen_plan(self._load(project_id, owner))
        frames = np.stack(list(self._iter_plan(plan)), axis=0)
        return frames, [i for *_, idx in plan for i in idx]

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
        from unianimate.video.writer import AudioSpan, side_by_side_frames, write_mp4, write_png_zip
        project = self._load(project_id, owner)
        folder = self._folder(project_id)
        plan = self._chosen_plan(project)
        pose_idx = [i for *_, idx in plan for i in idx]
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
            src = self._inside(folder, info.source_video)
            start = info.audio_start + pose_idx[0] * info.frame_interval / (info.source_fps or out_fps)
            audio = AudioSpan(path=str(src), start=start, duration=n_frames / out_fps)
        steps = 1 + int(side_by_side) + int(png_zip)
        report(progress, Progress("exporting", step=0, total=steps, message="writing the video"))
        write_mp4(self._iter_plan(plan), video, fps=out_fps, quality=int(quality), audio=audio)
        sbs_path = zip_path = None
        if side_by_side:
            report(progress, Progress("exporting", step=1, total=steps, message="side by side"))
            ref = np.asarray(Image.open(folder / project.reference.fitted).convert("RGB"))
            images = folder / info.images

            def panels() -> Iterator[np.ndarray]:
                for frame, idx in zip(self._iter_plan(plan), pose_idx):
                    pose = _read_pngs(images, idx, idx + 1)
                    yield side_by_side_frames(ref, pose, frame[None])[0]

            sbs_path = video.with_name(video.stem + "_side_by_side.mp4")
            write_mp4(panels(), sbs_path, fps=out_fps, quality=int(quality), audio=audio)
        if png_zip:
            report(progress, Progress("exporting", step=steps - 1, total=steps,
                                      message="PNG sequence zip"))
            zip_path = video.with_name(video.stem + "_frames.zip")
            write_png_zip(self._iter_plan(plan), zip_path)
        result = ExportResult(video=str(video), frames=n_frames, fps=out_fps,
                              has_audio=audio is not None,
                              side_by_side=str(sbs_path) if sbs_path else None,
                              png_zip=str(zip_path) if zip_path else None, segments=len(plan))
        with self._edit(project_id, owner) as p:
            p.exports.append({**asdict(result), "time": time.time()})
            p.exports[:] = p.exports[-50:]
        report(progress, Progress("done", step=steps, total=steps, message=f"exported {video.name}"))
        log.info("exported project %s: %d frames at %.3f fps -> %s", project_id, n_frames,
                 out_fps, video)
        return result


# ---- helpers ------------------------------------------------------------------------------
@dataclass
class _SimpleDriving:
    keypoints: Any
    pose_images: Any
    fps: float
    messages: list[str]
    source_video: Any


def _typed_setting(key: str, value: Any, kind: type) -> Any:
    """Convert a UI/CLI value to the setting's type; InputError for anything lossy or odd."""
    bad = InputError(f"setting {key}={value!r} is not a valid {kind.__name__}")
    if kind is bool:
        if isinstance(value, str):
            if value.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if value.strip().lower() in ("0", "false", "no", "off"):
                return False
            raise bad
        return bool(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise bad from None
    if number != number or number in (float("inf"), float("-inf")):
        raise bad
    if kind is int:
        if not number.is_integer():
            raise bad
        return int(number)
    return number


def _sweep_leftovers(folder: Path) -> None:
    """Remove half-written media a killed process left (``*.tmp`` frame folders, staging)."""
    for tmp in list(folder.glob("segments/*/*.tmp")) + list(folder.glob(".poses-*")):
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("removed leftover %s", tmp.relative_to(folder))


def _check_upload_size(path: Path, limit: int, what: str) -> None:
    """InputError when a file (or a folder's files together) exceed ``limit`` bytes."""
    if not path.exists():
        raise InputError(f"{what} {path.name!r} does not exist; upload it again")
    size = (path.stat().st_size if path.is_file() else
            sum(p.stat().st_size for p in path.rglob("*") if p.is_file()))
    if size > limit:
        raise InputError(f"the {what} {path.name!r} is {size / 2**20:.0f} MB; the limit is "
                         f"{limit / 2**20:.0f} MB")


def _swap_dir(target: Path, staging: Path) -> None:
    """Replace folder ``target`` by ``staging`` (old one removed after the rename)."""
    old = None
    if target.exists():
        old = target.with_name(f".old-{target.name}-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _sync_chosen(project: Project) -> None:
    """Make every segment on the active path choose the candidate the path goes through."""
    for seg, cand in project.active_path():
        if cand is not None:
            seg.chosen = cand.id


def _stitched_length(lengths: Sequence[int]) -> int:
    """Frames after stitching segments that share one frame at each join."""
    return 0 if not lengths else sum(lengths) - (len(lengths) - 1)


def _describe(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _default_name(reference: Any) -> str:
    if isinstance(reference, (str, os.PathLike)):
        return Path(reference).stem[:80] or "project"
    return time.strftime("project %Y-%m-%d %H:%M")


def _raw_owner(folder: Path) -> Any:
    """Best-effort owner of a damaged manifest (to list it to its owner only)."""
    import json
    try:
        data = json.loads(manifest_path(folder).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return object()
    return data.get("owner", object()) if isinstance(data, dict) else object()


_VIDEO_EXT = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".gif", ".mpg", ".mpeg", ".wmv"}


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in _VIDEO_EXT


def _detect(detector: Any, image: np.ndarray) -> Any:
    """Run the pose detector on one image -> a Pose or None when nobody is found."""
    for name in ("detect", "__call__"):
        fn = getattr(detector, name, None)
        if fn is not None:
            pose = fn(image)
            if hasattr(pose, "pose") and not hasattr(pose, "body"):   # DWPose DetectionResult
                pose = pose.pose
            if isinstance(pose, (list, tuple)):
                pose = pose[0] if pose else None
            if pose is not None and hasattr(pose, "is_empty") and pose.is_empty():
                return None
            return pose
    return None


def _to_uint8(img: Any) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return arr[..., :3]


def _save_png(path: Path, image: Any) -> None:
    """PNG bytes written atomically."""
    from unianimate.utils import atomic_write_bytes
    img = image if isinstance(image, Image.Image) else Image.fromarray(_to_uint8(image))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    atomic_write_bytes(path, buf.getvalue())


def _read_pngs(folder: Path, start: int, end: int) -> np.ndarray:
    """Frames ``start..end-1`` of a folder of ``%06d.png`` files as uint8 (F,H,W,3)."""
    frames = []
    for i in range(start, end):
        p = folder / f"{i:06d}.png"
        if not p.is_file():
            raise ProjectError(f"missing media file {p.name} in {folder.name}; the project folder "
                               "was changed by hand (restore it or delete the project)")
        frames.append(np.asarray(Image.open(p).convert("RGB")))
    return np.stack(frames, axis=0)


def _prepare_reference(reference: Any, width: int, height: int, fit: str
                       ) -> tuple[Image.Image, Image.Image]:
    """Validate and decode a reference (path, bytes, PIL, array) -> (original RGB, fitted WxH)."""
    from unianimate import imaging
    if fit not in FIT_MODES:
        raise InputError(f"fit must be one of {FIT_MODES}, got {fit!r}")
    imaging.check_size(height, width)
    if isinstance(reference, (np.ndarray, Image.Image)):
        rgb = imaging.to_rgb_array(reference)
    else:
        if isinstance(reference, (bytes, bytearray)) and len(reference) > MAX_REFERENCE_BYTES:
            raise InputError(f"the reference image is {len(reference) / 2**20:.0f} MB; the limit "
                             f"is {MAX_REFERENCE_BYTES / 2**20:.0f} MB")
        if isinstance(reference, (str, os.PathLike)):
            _check_upload_size(Path(reference), MAX_REFERENCE_BYTES, "reference image")
        rgb = imaging.to_rgb_array(imaging.open_image(reference))
    fitted = imaging.fit_image(rgb, int(width), int(height), mode=fit)
    return Image.fromarray(rgb), Image.fromarray(_to_uint8(fitted))


__all__ = ["Studio", "ProjectSummary", "CandidateView", "SegmentView", "Timeline",
           "ExportResult", "PosePreview", "Progress"]
