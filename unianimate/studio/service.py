"""The app service: everything the UI and the CLI do, as plain method calls (no Gradio here).

Typical flow::

    studio = Studio("projects", pipeline_factory=lambda report: UniAnimatePipeline.tiny())
    me = studio.session(owner)                 # or pass owner= to every call
    p = me.create_project("ref.png", width=512, height=768, fit="crop")
    me.set_poses_from_file(p.id, "dance.mp4", frame_interval=2)
    cands = me.generate_candidates(p.id, progress=print)        # root segment
    me.choose(p.id, cands[0].segment, cands[0].id)
    seg = me.continue_from(p.id)
    me.generate_candidates(p.id, seg.id)
    ...
    me.export(p.id)

:class:`Studio` is a thin facade over modules with one job each:

========================  =================================================================
``store`` / ownership     project folders, the ownership check before any read, locks,
                          load/edit/save, listing, cleaning up after a killed process
``project`` / manifest    the data (segment tree operations are ``Project`` methods) and its
                          strict on-disk form
``poses``                 reference changes, driving poses in, drawing, the pose preview
``generation``            jobs and candidates, cancel, re-render
``export``                the chosen path as MP4 / side-by-side / PNG zip
``views``                 what the UI and the API get (built from one loaded project)
``runtime`` / engines     process-wide state (GPU queue, jobs, locks); the lazy model side
========================  =================================================================

Ownership: every method takes ``owner=`` (default: the Studio's); a project owned by someone else
behaves exactly like a project that does not exist. ``chosen`` is only ever changed by
:meth:`Studio.choose` / :meth:`Studio.select_branch` / :meth:`Studio.continue_from`.
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from unianimate.errors import InputError, ProjectError
from unianimate.studio.engines import Engines
from unianimate.studio.export import Exporter
from unianimate.studio.generation import Generation
from unianimate.studio.jobs import Progress, ProgressFn
from unianimate.studio.media import default_name, prepare_reference, save_png
from unianimate.studio.poses import PREVIEW_OVERLAY, PREVIEW_VIDEO, PoseIngest
from unianimate.studio.ports import Animator, AnimatorFactory, PoseDetector, PoseDetectorFactory
from unianimate.studio.project import (Candidate, GenerationSettings, PoseInfo, Project,
                                       ReferenceInfo, Segment)
from unianimate.studio.runtime import StudioRuntime
from unianimate.studio.settings import SpeedOptions
from unianimate.studio.store import ProjectStore
from unianimate.studio.views import (ExportResult, PeopleInFirstFrame, PosePreview,
                                     ProjectPage, ProjectSummary,
                                     Timeline, build_page, build_timeline)

log = logging.getLogger(__name__)


class Studio:
    """Projects on disk + lazy animator + generation jobs. Thread-safe; no Gradio.

    ``pipeline_factory(report)`` builds the animator on first use (``report(message)`` takes
    weight-loading progress). ``detector_factory()`` builds a pose detector (needed for driving
    *videos* and to detect the reference's pose); without one, the reference pose is taken from
    the first driving pose and alignment is skipped. ``runtime``: the process-wide state (the
    composition root passes its own; default: the process's).
    """

    def __init__(self, projects_root: str | os.PathLike,
                 pipeline_factory: AnimatorFactory | None = None,
                 detector_factory: PoseDetectorFactory | None = None,
                 owner: str | None = None, runtime: StudioRuntime | None = None) -> None:
        self.store = ProjectStore(projects_root, runtime)
        self.root = self.store.root
        self.owner = owner
        self.engines = Engines(pipeline_factory, detector_factory)
        self.poses = PoseIngest(self.store, self.engines)
        self.generation = Generation(self.store, self.engines)
        self.exporter = Exporter(self.store)

    def session(self, owner: str | None) -> "StudioSession":
        """A handle whose calls all act as ``owner`` (no ``owner=`` on each call)."""
        return StudioSession(self, owner)

    def _owner(self, owner: str | None) -> str | None:
        return owner if owner is not None else self.owner

    # ---- model side ---------------------------------------------------------------------
    def pipeline(self, progress: ProgressFn | None = None) -> Animator:
        """The animator, built on first call (see :class:`~unianimate.studio.engines.Engines`)."""
        return self.engines.pipeline(progress)

    def pipeline_info(self) -> dict[str, Any]:
        """{"loaded": bool, "model_name": str | None, "is_tiny": bool | None} (loads nothing)."""
        return self.engines.pipeline_info()

    def switch_model(self, change: Callable[[], bool]) -> bool:
        """Change what the pipeline factory builds (``change()``, e.g. the composition root's
        :meth:`~unianimate.compose.ModelManager.select_lora`; True when the model changed) while
        holding the GPU, so a running generation finishes on the model it started with; a
        change drops the loaded animator and the next use loads the new one. Returns
        ``change()``'s answer; an error from it changes nothing."""
        with self.store.runtime.gpu.slot():
            changed = bool(change())
            if changed:
                self.engines.drop()
        return changed

    def detector(self) -> PoseDetector | None:
        """The pose detector, built on first call, or None when no factory was given."""
        return self.engines.detector()

    # ---- folders, ownership -------------------------------------------------------------
    def check_owner(self, project_id: str, owner: str | None = None) -> None:
        """ProjectError "no project ..." unless the caller owns the project (reads nothing else:
        callers check it before anything that could tell about a project)."""
        self.store.check_owner(project_id, self._owner(owner))

    def project_dir(self, project_id: str, owner: str | None = None) -> Path:
        """The folder of a project (ownership checked)."""
        return self.store.check_owner(project_id, self._owner(owner))

    def media(self, project_id: str, relative: str, owner: str | None = None) -> Path:
        """Absolute path of a project file from its manifest-relative path; refuses escapes."""
        return self.store.inside(self.project_dir(project_id, owner), relative)

    def resolve_served(self, path: str | os.PathLike) -> Path:
        """Check that a path the UI wants to serve lies inside the projects root (symlinks
        resolved); return it resolved, ProjectError otherwise."""
        p = Path(path)
        p = (p if p.is_absolute() else self.root / p).resolve()
        if p != self.root and self.root not in p.parents:
            raise ProjectError(f"refusing to serve {Path(path).name!r}: it is outside the "
                               "projects folder")
        return p

    # ---- projects -----------------------------------------------------------------------
    def create_project(self, reference: Any, width: int = 512, height: int = 768,
                       fit: str = "crop", name: str | None = None,
                       owner: str | None = None) -> Project:
        """New project from a reference image (path, bytes, PIL image or uint8 array).

        The image is validated, stored as given (``reference/original.png``) and fitted to
        ``width`` x ``height`` (multiples of 64) with ``fit`` = crop | pad | stretch.
        """
        original, fitted = prepare_reference(reference, width, height, fit)
        pid = uuid.uuid4().hex[:12]
        folder = self.store.folder(pid)
        (folder / "reference").mkdir(parents=True, exist_ok=False)
        save_png(folder / "reference/original.png", original)
        save_png(folder / "reference/fitted.png", fitted)
        ref = ReferenceInfo(original="reference/original.png", fitted="reference/fitted.png",
                            width=int(width), height=int(height), fit=fit)
        project = Project(id=pid, owner_hash=None, name=name or default_name(reference),
                          reference=ref)
        self.store.create(project, self._owner(owner))
        log.debug("created project %s (%dx%d, fit=%s)", pid, width, height, fit)
        return project

    def set_reference(self, project_id: str, reference: Any, width: int | None = None,
                      height: int | None = None, fit: str | None = None,
                      owner: str | None = None) -> Project:
        """Replace the reference image / size / fit (only before anything was generated); the
        pose images are redrawn; on any error nothing changes."""
        return self.poses.set_reference(project_id, reference, width, height, fit,
                                        self._owner(owner))

    def get_project(self, project_id: str, owner: str | None = None) -> Project:
        """The project's data (a fresh copy read from disk)."""
        return self.store.load(project_id, self._owner(owner))

    def list_projects(self, owner: str | None = None) -> list[ProjectSummary]:
        """The caller's projects, newest first; damaged ones are listed with ``error`` set (what
        is wrong and what to do). Reads only the caller's index (see the store)."""
        return self.store.list(self._owner(owner))

    def delete_project(self, project_id: str, owner: str | None = None) -> None:
        """Remove a project folder, damaged or not (refused while one of its jobs runs)."""
        owner = self._owner(owner)
        self.store.check_owner(project_id, owner)
        with self.store.lock(project_id):
            if self.store.runtime.token(self.store.job_key(project_id)) is not None:
                raise InputError("a generation of this project is running; cancel it first")
            self.store.delete(project_id, owner)
        log.debug("deleted project %s", project_id)

    def set_settings(self, project_id: str, owner: str | None = None,
                     **changes: Any) -> GenerationSettings:
        """Change generation settings (names of :class:`GenerationSettings`); returns the new
        ones. Already generated candidates keep the settings they were made with."""
        with self.store.edit(project_id, self._owner(owner)) as project:
            project.settings = project.settings.with_changes(**changes)
            return project.settings

    # ---- poses --------------------------------------------------------------------------
    def set_poses_from_file(self, project_id: str, path: str | os.PathLike,
                            frame_interval: int = 2, start: float | None = None,
                            end: float | None = None, align: bool = True,
                            progress: ProgressFn | None = None,
                            owner: str | None = None, **options: Any) -> PoseInfo:
        """Driving input (video, pose JSON, folder or zip of pose images) -> the project's poses
        (see :meth:`PoseIngest.set_poses_from_file` for ``options``: kind, image_fps, smooth,
        person, align_mode, align_parts, display_name)."""
        return self.poses.set_poses_from_file(project_id, path, frame_interval, start, end,
                                              align, progress, self._owner(owner), **options)

    def set_pose_sequence(self, project_id: str, sequence: Any, align: bool = True,
                          frame_interval: int = 1, owner: str | None = None) -> PoseInfo:
        """Use an in-memory PoseSequence as the driving poses (fps taken from the sequence)."""
        return self.poses.set_pose_sequence(project_id, sequence, align, frame_interval,
                                            self._owner(owner))

    def smoothing_preview(self, project_id: str, strength: float,
                          owner: str | None = None) -> tuple[str, str]:
        """A before | after video of the keypoints smoothed at ``strength`` and a message
        (see :meth:`PoseIngest.smoothing_preview`)."""
        return self.poses.smoothing_preview(project_id, strength, self._owner(owner))

    def first_frame_people(self, project_id: str, path: str | os.PathLike,
                           frame_interval: int = 2, start: float | None = None,
                           end: float | None = None, owner: str | None = None,
                           kind: str = "auto") -> PeopleInFirstFrame:
        """The people of a driving video's first frame with anyone in it, numbered, to pick
        whom to follow (see :meth:`PoseIngest.first_frame_people`)."""
        return self.poses.first_frame_people(project_id, path, frame_interval, start, end,
                                             self._owner(owner), kind)

    def pose_preview(self, project_id: str, owner: str | None = None) -> PosePreview:
        """The skeleton video of the poses and pose 0 drawn over the reference."""
        return self.poses.pose_preview(project_id, self._owner(owner))

    # ---- segments, candidates -----------------------------------------------------------
    def ensure_root(self, project_id: str, owner: str | None = None) -> Segment:
        """The root segment, created (poses 0..frames_per_segment) when missing."""
        return self.generation.ensure_root(project_id, self._owner(owner))

    def generate_candidates(self, project_id: str, segment_id: str | None = None,
                            n: int | None = None, progress: ProgressFn | None = None,
                            should_cancel: Callable[[], bool] | None = None,
                            owner: str | None = None,
                            speed: SpeedOptions | None = None) -> list[Candidate]:
        """Generate ``n`` (default: settings.candidates) new candidates of a segment (None: the
        root, created on first use) with this run's VRAM / speed options ``speed``; see
        :meth:`Generation.generate_candidates`."""
        return self.generation.generate_candidates(project_id, segment_id, n, progress,
                                                   should_cancel, self._owner(owner), speed)

    def reroll(self, project_id: str, segment_id: str, n: int | None = None,
               progress: ProgressFn | None = None,
               should_cancel: Callable[[], bool] | None = None,
               owner: str | None = None,
               speed: SpeedOptions | None = None) -> list[Candidate]:
        """More candidates for a segment (new seeds; existing candidates and branches stay)."""
        return self.generate_candidates(project_id, segment_id, n, progress, should_cancel,
                                        owner, speed)

    def cancel(self, project_id: str, owner: str | None = None) -> bool:
        """Ask the queued/running generation of a project to stop; False when none runs."""
        return self.generation.cancel(project_id, self._owner(owner))

    def candidate_frames(self, project_id: str, segment_id: str, candidate_id: str,
                         owner: str | None = None) -> np.ndarray:
        """The saved frames of a done candidate, uint8 (F,H,W,3)."""
        return self.generation.candidate_frames(project_id, segment_id, candidate_id,
                                                self._owner(owner))

    def rerender(self, project_id: str, segment_id: str, candidate_id: str,
                 progress: ProgressFn | None = None, owner: str | None = None) -> np.ndarray:
        """A candidate generated again from the manifest alone (not saved)."""
        return self.generation.rerender(project_id, segment_id, candidate_id, progress,
                                        self._owner(owner))

    def repair_candidate(self, project_id: str, segment_id: str, candidate_id: str,
                         progress: ProgressFn | None = None,
                         owner: str | None = None) -> Candidate:
        """Re-render a done candidate and write its frames, poster and preview again."""
        return self.generation.repair_candidate(project_id, segment_id, candidate_id, progress,
                                                self._owner(owner))

    # ---- the segment tree ---------------------------------------------------------------
    def choose(self, project_id: str, segment_id: str, candidate_id: str,
               owner: str | None = None) -> Timeline:
        """Choose a done candidate of a segment; the active path follows it."""
        with self.store.edit(project_id, self._owner(owner)) as project:
            project.choose(segment_id, candidate_id)
        return build_timeline(project, self.store.folder(project_id))

    def select_branch(self, project_id: str, segment_id: str,
                      owner: str | None = None) -> Timeline:
        """Make the branch through ``segment_id`` the active path (its ancestors' choices follow)."""
        with self.store.edit(project_id, self._owner(owner)) as project:
            project.select_branch(segment_id)
        return build_timeline(project, self.store.folder(project_id))

    def continue_from(self, project_id: str, segment_id: str | None = None,
                      owner: str | None = None) -> Segment:
        """The next segment after a segment's chosen candidate (default: the active leaf); its
        first frame is that candidate's last frame. A continuation made before is reused."""
        with self.store.edit(project_id, self._owner(owner)) as project:
            seg, new = project.continuation(segment_id)
            if new:
                folder = self.store.folder(project_id)
                parent = project.segment(seg.parent or "")
                cand = parent.candidate(seg.parent_candidate or "")
                last = (self.store.inside(folder, cand.frames_dir or "")
                        / f"{cand.num_frames - 1:06d}.png")
                dest = self.store.inside(folder, seg.first_frame or "")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(last, dest)
            return seg

    def timeline(self, project_id: str, owner: str | None = None) -> Timeline:
        """The data the UI shows: the active path, the whole tree, what continue would do."""
        project = self.store.load(project_id, self._owner(owner))
        return build_timeline(project, self.store.folder(project_id))

    def page(self, project_id: str, owner: str | None = None) -> ProjectPage:
        """Everything a page shows of a project, from one load; writes nothing."""
        project = self.store.load(project_id, self._owner(owner))
        return build_page(project, self.store.folder(project_id), PREVIEW_VIDEO, PREVIEW_OVERLAY)

    # ---- export -------------------------------------------------------------------------
    def chosen_frames(self, project_id: str, owner: str | None = None
                      ) -> tuple[np.ndarray, list[int]]:
        """The chosen path stitched (shared join frames dropped) and each frame's pose index."""
        return self.exporter.chosen_frames(project_id, self._owner(owner))

    def export(self, project_id: str, path: str | os.PathLike | None = None,
               fps: float | None = None, quality: int = 18, side_by_side: bool = False,
               png_zip: bool = False, with_audio: bool = True,
               progress: ProgressFn | None = None, owner: str | None = None) -> ExportResult:
        """Write the chosen path as an H.264 MP4 (see :meth:`Exporter.export`)."""
        return self.exporter.export(project_id, path, fps, quality, side_by_side, png_zip,
                                    with_audio, progress, self._owner(owner))


class StudioSession:
    """A :class:`Studio` scoped to one owner: ``studio.session(owner).timeline(pid)``."""

    def __init__(self, studio: Studio, owner: str | None) -> None:
        self.studio = studio
        self.owner = owner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.studio, name)
        if name.startswith("_") or not callable(attr) or name in _UNSCOPED:
            return attr
        return partial(attr, owner=self.owner)


#: Studio methods that take no owner
_UNSCOPED = frozenset({"session", "pipeline", "pipeline_info", "switch_model", "detector",
                        "resolve_served"})

__all__ = ["Studio", "StudioSession", "ProjectSummary", "Timeline", "ExportResult",
           "PosePreview", "Progress"]
