"""Driving poses of a project: ingestion (video through the pose detector, pose JSON, pose
images), alignment to the reference, drawing at the project size, and the pose preview."""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from unianimate.errors import InputError, WeightsMissingError
from unianimate.pose.importers import DrivingInput, driving_needs_detector
from unianimate.studio.engines import Engines
from unianimate.studio.jobs import Progress, ProgressFn, report
from unianimate.studio.media import (MAX_DRIVING_BYTES, check_upload_size, is_video,
                                     prepare_reference, read_pngs, save_png, swap_dir, to_uint8)
from unianimate.studio.ports import PoseDetector
from unianimate.studio.project import PoseInfo, Project
from unianimate.studio.store import ProjectStore
from unianimate.studio.views import PeopleInFirstFrame, PosePreview

log = logging.getLogger(__name__)

#: the pose preview files (made with the poses; ``poses/`` is replaced on any change)
PREVIEW_VIDEO = "poses/preview.mp4"
PREVIEW_OVERLAY = "poses/overlay.png"
SMOOTHING_PREVIEW = "poses/smoothing_preview.mp4"     # left | right = before | after
FIRST_FRAME_PEOPLE = "driving/first_frame_people.png"  # the dancer picker's numbered boxes
ALIGN_SKIPPED = ("alignment skipped: no pose of the reference image (no pose detector here); the "
                 "driving poses are used as they are")


class PoseIngest:
    """Poses in and out of project folders (ownership through the store)."""

    def __init__(self, store: ProjectStore, engines: Engines) -> None:
        self.store = store
        self.engines = engines

    def set_reference(self, project_id: str, reference: Any, width: int | None = None,
                      height: int | None = None, fit: str | None = None,
                      owner: str | None = None) -> Project:
        """Replace the reference image / size / fit (only before anything was generated).

        ``reference`` None keeps the stored original (e.g. to change only size or fit). The pose
        images are redrawn for the new size; on any error nothing changes.
        """
        with self.store.edit(project_id, owner) as project:
            if project.segments:
                raise InputError("this project already has generated segments; the reference "
                                 "cannot change now (create a new project instead)")
            folder = self.store.folder(project_id)
            w = int(width or project.width)
            h = int(height or project.height)
            fit = fit or project.reference.fit
            if reference is None:
                reference = np.asarray(Image.open(folder / project.reference.original).convert("RGB"))
            original, fitted = prepare_reference(reference, w, h, fit)
            project.reference = replace(project.reference, width=w, height=h, fit=fit)
            staging = None
            if project.poses is not None:
                staging = folder / f".poses-{uuid.uuid4().hex[:8]}"
                shutil.copytree(folder / "poses", staging, ignore=shutil.ignore_patterns(
                    "images", "preview.mp4", "overlay.png", "smoothing_preview.mp4"))
            try:
                if staging is not None:
                    self.draw_poses(project, staging, np.asarray(fitted))
                save_png(folder / "reference/original.png", original)
                save_png(folder / "reference/fitted.png", fitted)
                if staging is not None:
                    swap_dir(folder / "poses", staging)
            finally:
                if staging is not None and staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
            return project

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

        A real video is run through the pose detector (per-frame progress); a video of drawn
        poses needs no detector. Every ``frame_interval``-th frame / pose is kept and the output
        fps is source fps / interval; ``start``/``end`` trim in seconds (videos, JSON, folders and
        zips alike). ``align`` scales the driving poses onto the reference body (spec §5).
        ``kind``, ``image_fps``, ``smooth``, ``person``: see ``unianimate.pose.load_driving``;
        ``align_mode``/``align_parts``: see ``unianimate.pose.align``; ``display_name``: the
        user's name for the source when ``path`` is a temporary copy (shown instead of it).
        """
        self.store.check_owner(project_id, owner)     # ownership before any heavy work
        from unianimate.pose import load_driving
        from unianimate.pose.align import MODES, check_parts
        if align_mode not in MODES:
            raise InputError(f"alignment mode {align_mode!r} is not one of {', '.join(MODES)}")
        parts = check_parts(align_parts)
        path = Path(path)
        if not path.exists():
            raise InputError(f"driving input {path.name!r} does not exist; upload it again")
        check_upload_size(path, MAX_DRIVING_BYTES, "driving input")
        if int(frame_interval) < 1:
            raise InputError(f"frame interval must be 1 or more, got {frame_interval}")

        def on_frames(*args: Any) -> None:
            done, total = (int(args[0]), int(args[1])) if len(args) >= 2 else (int(args[0]), 0)
            report(progress, Progress("poses", step=done, total=total,
                                      message=f"pose extraction {done}/{total or '?'}"))

        def load(detector: PoseDetector | None) -> DrivingInput:
            return load_driving(path, detector=detector, frame_interval=int(frame_interval),
                                start=start, end=end, progress=on_frames, kind=kind,
                                image_fps=image_fps, smooth=smooth, person=person,
                                display_name=display_name)

        if not needs_detector(path, kind):
            driving = load(None)
        else:
            detector = self.engines.detector()
            if detector is None:
                raise InputError("pose extraction from a video needs the DWPose detector, which "
                                 "is not available here; upload a pose sequence (JSON) or a "
                                 "video of drawn poses instead")
            on_wait = (lambda pos: report(progress, Progress(        # DWPose may use the GPU
                "queued", queue_position=pos, message=f"waiting for the GPU: {pos} job(s) ahead")))
            with self.store.runtime.gpu.slot(on_wait=on_wait):
                driving = load(detector)
        return self.store_driving(project_id, owner, driving, path, int(frame_interval),
                                  start, end, align, align_mode, parts, display_name)

    def set_pose_sequence(self, project_id: str, sequence: Any, align: bool = True,
                          frame_interval: int = 1, owner: str | None = None) -> PoseInfo:
        """Use an in-memory PoseSequence as the driving poses (fps taken from the sequence)."""
        from unianimate.pose import PoseSequence
        if not isinstance(sequence, PoseSequence):
            raise InputError("set_pose_sequence needs a unianimate.pose.PoseSequence")
        driving = DrivingInput(keypoints=sequence, pose_images=None, fps=float(sequence.fps),
                               kind="sequence")
        return self.store_driving(project_id, owner, driving, None, frame_interval, None, None,
                                  align)

    def store_driving(self, project_id: str, owner: str | None, driving: DrivingInput,
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
        with self.store.edit(project_id, owner) as project:
            if project.segments:
                raise InputError("this project already has generated segments; its poses cannot "
                                 "change now (create a new project for another driving input)")
            folder = self.store.folder(project_id)
            keypoints, images = driving.keypoints, driving.pose_images
            count = len(keypoints.poses) if keypoints is not None else (
                len(images) if images is not None else 0)
            if count == 0:
                raise InputError("the driving input has no frames with poses; use another video "
                                 "or pose file")
            fps = float(driving.fps or 0)
            if not fps > 0:
                raise InputError("the driving input has no usable frame rate")
            info = PoseInfo(count=count, fps=fps, images="poses/images",
                            frame_interval=int(frame_interval), start=start, end=end,
                            source_fps=fps * int(frame_interval),
                            source_name=display_name or (source.name if source is not None
                                                         else None),
                            messages=[str(m) for m in driving.messages],
                            aligned=bool(align) and align_mode != "none", align_mode=align_mode,
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
                        save_png(staging / "given" / f"{i:06d}.png", to_uint8(img))
                src_video = driving.source_video
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
                self.draw_poses(project, staging, fitted)
                swap_dir(folder / "poses", staging)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
            return project.poses

    def draw_poses(self, project: Project, staging: Path, fitted: np.ndarray) -> None:
        """In ``staging`` (the future ``poses/``): detect the reference pose, align, draw every
        driving pose at WxH (``images/``) and the reference pose (``reference_pose.png``)."""
        info = project.poses
        assert info is not None
        if ALIGN_SKIPPED in info.drawing_messages:
            info.aligned = True             # asked for before: try again with this reference
        loaded = [m for m in info.messages if m not in info.drawing_messages]
        info.messages = []                  # this drawing's messages (a redraw replaces them)
        self._draw(project, staging, fitted)
        info.drawing_messages = list(info.messages)
        info.messages = loaded + info.messages

    def _draw(self, project: Project, staging: Path, fitted: np.ndarray) -> None:
        """:meth:`draw_poses` with ``project.poses.messages`` collecting this drawing's notes."""
        from unianimate.imaging import fit_image
        from unianimate.pose import (PoseSequence, align_poses_report, draw_pose,
                                     load_pose_sequence, save_pose_sequence)
        from unianimate.pose.fit import fit_pose_list
        info = project.poses
        assert info is not None
        w, h = project.width, project.height
        ref_pose = None
        try:
            detector = self.engines.detector()
        except WeightsMissingError as err:
            detector = None
            info.messages.append("the pose detector is not available, so the reference pose is "
                                 f"taken from the first driving pose ({err})")
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
                info.messages.append(ALIGN_SKIPPED)
            if not info.aligned:      # unaligned: placed like the reference's pixels (crop/pad)
                poses = fit_pose_list(poses, (seq.width, seq.height), (w, h),
                                      project.reference.fit)
                seq = PoseSequence(poses, seq.fps, w, h, dict(seq.meta))
            save_pose_sequence(seq.with_poses(poses), staging / "poses.json")
            info.aligned_keypoints = "poses/poses.json"
            for i, pose in enumerate(poses):
                save_png(images_dir / f"{i:06d}.png", draw_pose(pose, h, w))
            ref_img = draw_pose(ref_pose if ref_pose is not None else poses[0], h, w)
        else:
            info.aligned = False
            for i, p in enumerate(sorted((staging / "given").glob("*.png"))):
                img = fit_image(Image.open(p).convert("RGB"), w, h, mode=project.reference.fit)
                save_png(images_dir / f"{i:06d}.png", to_uint8(img))
            ref_img = (draw_pose(ref_pose, h, w) if ref_pose is not None else
                       np.asarray(Image.open(images_dir / "000000.png").convert("RGB")))
        project.reference.pose_source = "detected" if ref_pose is not None else "driving-frame-0"
        save_png(staging / "reference_pose.png", ref_img)
        project.reference.pose = "poses/reference_pose.png"
        _write_preview(staging, info, fitted)

    def pose_preview(self, project_id: str, owner: str | None) -> PosePreview:
        """The skeleton video of the poses and pose 0 drawn over the reference (written with
        the poses; made here only for a project whose poses predate that)."""
        project = self.store.load(project_id, owner)
        if project.poses is None:
            raise InputError("this project has no poses yet; load a driving video or pose file")
        folder = self.store.folder(project_id)
        video, overlay = folder / PREVIEW_VIDEO, folder / PREVIEW_OVERLAY
        if not (video.is_file() and overlay.is_file()):
            with self.store.lock(project_id):
                fitted = np.asarray(Image.open(folder / project.reference.fitted).convert("RGB"))
                _write_preview(folder / "poses", project.poses, fitted)
        return PosePreview(skeleton_video=str(video), overlay_image=str(overlay),
                           count=project.poses.count, fps=project.poses.fps,
                           messages=list(project.poses.messages))

    def smoothing_preview(self, project_id: str, strength: float,
                          owner: str | None) -> tuple[str, str]:
        """Before | after drawings of the driving keypoints smoothed at ``strength`` (up to 16
        poses spread over the sequence), written as ``poses/smoothing_preview.mp4``; returns its
        path and a message with the jitter before and after."""
        from unianimate.pose import load_pose_sequence
        from unianimate.pose.smooth import smoothing_preview
        from unianimate.video.writer import write_mp4
        project = self.store.load(project_id, owner)
        info = project.poses
        if info is None or info.keypoints is None:
            raise InputError("the smoothing preview needs keypoints: load a pose JSON or extract "
                             "the poses of a video first (drawn pose images carry none)")
        folder = self.store.folder(project_id)
        seq = load_pose_sequence(folder / info.keypoints)
        w, h = project.width, project.height
        prev = smoothing_preview(seq, strength, h, w)
        step = prev.indices[1] - prev.indices[0] if len(prev.indices) > 1 else 1
        video = folder / SMOOTHING_PREVIEW
        with self.store.lock(project_id):
            write_mp4(np.concatenate([prev.before, prev.after], axis=2), video,
                      fps=max(1.0, info.fps / step), quality=23)
        return str(video), prev.message


    def first_frame_people(self, project_id: str, path: str | os.PathLike,
                           frame_interval: int = 2, start: float | None = None,
                           end: float | None = None, owner: str | None = None,
                           kind: str = "auto") -> PeopleInFirstFrame:
        """The people the detector finds in the first kept frame of the driving video ``path``
        (same interval and trim as the extraction), drawn with numbered boxes into
        ``driving/first_frame_people.png``, so the user can pick whom to follow
        (``set_poses_from_file(person=)``)."""
        self.store.check_owner(project_id, owner)     # ownership before any heavy work
        from unianimate.pose.extract import first_frame_people
        path = Path(path)
        if not path.exists():
            raise InputError(f"driving video {path.name!r} does not exist; upload it again")
        check_upload_size(path, MAX_DRIVING_BYTES, "driving input")
        if not needs_detector(path, kind):
            raise InputError("only a real video has people to pick from; this input holds "
                             "poses already (one skeleton per frame)")
        detector = self.engines.detector()
        if detector is None:
            raise InputError("finding the people of a video needs the DWPose detector, which is "
                             "not available here")
        with self.store.runtime.gpu.slot():
            found = first_frame_people(path, detector, int(frame_interval), start, end)
        target = self.store.folder(project_id) / FIRST_FRAME_PEOPLE
        with self.store.lock(project_id):
            target.parent.mkdir(exist_ok=True)
            save_png(target, found.annotated())
        h, w = found.image.shape[:2]
        return PeopleInFirstFrame(
            image=str(target), frame_index=int(found.frame_index), width=int(w), height=int(h),
            people=tuple((c.index, tuple(round(float(v), 6) for v in c.box_normalised))
                         for c in found.candidates),
            default=found.default)


def _write_preview(poses_dir: Path, info: PoseInfo, fitted: np.ndarray) -> None:
    """``preview.mp4`` (the drawn poses, streamed from disk one at a time: a long driving input
    is never held in memory) and ``overlay.png`` (pose 0 over the reference) in ``poses_dir``."""
    from unianimate.video.writer import write_mp4
    images = poses_dir / "images"
    write_mp4((read_pngs(images, i, i + 1)[0] for i in range(info.count)),
              poses_dir / "preview.mp4", fps=info.fps, quality=23)
    pose0 = read_pngs(images, 0, 1)[0]
    mask = pose0.max(axis=2, keepdims=True) > 0
    save_png(poses_dir / "overlay.png", np.where(mask, pose0, (fitted * 0.6).astype(np.uint8)))


def needs_detector(path: Path, kind: str = "auto") -> bool:
    """Whether loading ``path`` as driving input runs the pose detector: only a real video
    (a video of drawn poses, pose JSON, folders and zips need none)."""
    return is_video(path) and driving_needs_detector(path, kind)


def _detect(detector: PoseDetector, image: np.ndarray) -> Any:
    """The pose of the person the detector chose in one image, or None when nobody is found."""
    pose = detector(image).pose
    return None if pose is None or pose.is_empty() else pose


__all__ = ["PoseIngest"]
