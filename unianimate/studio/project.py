"""Projects, segments and candidates as plain data, and the manifest that stores them.

A project is one folder under the projects root::

    <root>/<project_id>/
        manifest.json                 # this module's format, written atomically
        reference/original.png        # the uploaded reference image, as given (RGB)
        reference/fitted.png          # the reference fitted to width x height (what the model sees)
        poses/driving.json            # the driving keypoint sequence as loaded, when there is one
        poses/poses.json              # the keypoints actually drawn (aligned to the reference)
        poses/images/000000.png ...   # the drawn pose images at width x height (model input)
        poses/reference_pose.png      # the drawn pose of the reference (model input ``ref_pose``)
        poses/source.<ext>            # copy of the driving video when it has audio (for export)
        segments/<sid>/<cid>/000000.png ...  frames of one candidate, lossless
        segments/<sid>/<cid>/poster.png, preview.mp4
        exports/...

Manifest format (``"format": "unianimate-project", "version": 2``): see :func:`Project.to_json`.
Every path inside the manifest is relative to the project folder and is checked on load to stay
inside it. The owner is stored only as a salted hash (``owner_hash``, see
:mod:`unianimate.studio.store`); version 1 manifests stored the owner id itself (``owner``) and
are still read (:func:`unianimate.studio.ownership.legacy_owner` gives that owner) and rewritten
as version 2 the first time the store sees them.

Segment tree: each segment has a ``parent`` segment id (``None`` for the root, which is generated
in reference mode) and the ``parent_candidate`` whose last frame is its first frame. A segment's
pose slice is ``[start, end)``; a child starts at ``parent.end - 1`` (one shared frame). The
*active path* is the chain of (segment, chosen candidate) pairs from the root to ``active_leaf``.

Seed scheme: ``seed = base_seed + 1000 * depth + candidate_index`` where ``depth`` is the
segment's distance from the root and ``candidate_index`` counts every candidate ever generated for
that segment (re-rolls continue the count), so seeds never repeat within a segment.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import with_config

from unianimate.errors import InputError, ProjectError
from unianimate.seeds import candidate_seed
from unianimate.studio.settings import STRICT, GenerationSettings

log = logging.getLogger(__name__)

FORMAT = "unianimate-project"
VERSION = 2
#: manifest versions this program reads (1: the owner id in clear, migrated on first use)
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
FIT_MODES = ("crop", "pad", "stretch")
CANDIDATE_STATUSES = ("running", "done", "interrupted", "failed")
JOB_STATUSES = ("queued", "running", "done", "cancelled", "interrupted", "failed")

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def seed_for(base_seed: int, depth: int, candidate_index: int) -> int:
    """The documented main-line seed of candidate ``candidate_index`` of a segment at ``depth``
    (``unianimate.seeds.candidate_seed``; sibling segments add a branch offset)."""
    return candidate_seed(int(base_seed), int(depth), int(candidate_index), main_line=True)


def next_segment_range(prev_end: int, frames_per_segment: int, pose_count: int) -> tuple[int, int] | None:
    """Pose range [start, end) of the segment continuing one that ends at ``prev_end``.

    The two share exactly one frame (start = prev_end - 1: the chosen last frame becomes the next
    first frame). None when fewer than 2 poses are left (nothing new to generate).
    """
    start = prev_end - 1
    end = min(start + frames_per_segment, pose_count)
    return (start, end) if end - start >= 2 else None


def stitched_length(lengths: Sequence[int]) -> int:
    """Frames after stitching segments that share one frame at each join."""
    return 0 if not lengths else sum(lengths) - (len(lengths) - 1)


def valid_id(value: str) -> bool:
    """True for ids safe to use as folder names (lowercase letters, digits, ``_``, ``-``)."""
    return isinstance(value, str) and bool(_ID_RE.match(value))


@with_config(STRICT)
@dataclass
class Candidate:
    """One generated (or attempted) take of a segment."""

    id: str
    index: int
    seed: int
    settings: GenerationSettings
    status: str = "running"
    frames_dir: str | None = None        # relative folder of PNG frames 000000.png ...
    num_frames: int = 0
    poster: str | None = None            # relative PNG
    preview: str | None = None           # relative MP4 (H.264) for display
    timings: dict[str, float] = field(default_factory=dict)
    measures: dict[str, Any] = field(default_factory=dict)
    color_correction: dict[str, Any] | None = None   # {"gain": [3], "offset": [3]} when applied
    error: str | None = None
    job_id: str | None = None
    model: str | None = None             # pipeline.model_name that made it (re-render needs it)
    created: float = field(default_factory=time.time)
    #: frames per VAE decode it was made with (a run option, not a setting: it can move a pixel
    #: by one level where convolution kernels depend on the batch, so a re-render reuses it;
    #: None: made before it was recorded, with the pipeline's default of 2)
    decode_chunk: int | None = None


@with_config(STRICT)
@dataclass
class Segment:
    """A node of the segment tree: a pose slice and its candidates."""

    id: str
    parent: str | None
    parent_candidate: str | None
    depth: int
    start: int
    end: int                              # exclusive
    first_frame: str | None = None        # relative PNG (the parent candidate's last frame)
    candidates: list[Candidate] = field(default_factory=list)
    chosen: str | None = None
    created: float = field(default_factory=time.time)

    @property
    def num_frames(self) -> int:
        """Number of frames (and poses) of this segment."""
        return self.end - self.start

    def candidate(self, candidate_id: str) -> Candidate:
        """The candidate with this id; ProjectError when the segment has none such."""
        for cand in self.candidates:
            if cand.id == candidate_id:
                return cand
        raise ProjectError(f"segment {self.id} has no candidate {candidate_id!r}; "
                           f"it has {[c.id for c in self.candidates] or 'none yet'}")


@with_config(STRICT)
@dataclass
class ReferenceInfo:
    """The reference image as stored and as fitted to the project resolution."""

    original: str
    fitted: str
    width: int
    height: int
    fit: str
    pose: str | None = None               # relative PNG of the drawn reference pose
    pose_source: str | None = None        # "detected" | "driving-frame-0"


@with_config(STRICT)
@dataclass
class PoseInfo:
    """The driving pose sequence of a project."""

    count: int
    fps: float                            # output fps = source fps / frame interval
    images: str                           # relative folder of drawn pose PNGs 000000.png ...
    keypoints: str | None = None          # relative PoseSequence JSON as loaded (not aligned)
    aligned_keypoints: str | None = None  # relative PoseSequence JSON actually drawn (aligned)
    source_fps: float | None = None
    frame_interval: int = 1
    start: float | None = None            # trim start as given (seconds)
    end: float | None = None
    aligned: bool = False
    source_name: str | None = None        # the uploaded file's name (display only)
    source_video: str | None = None       # relative copy of the driving video
    audio: bool = False                   # source video has an audio stream
    audio_start: float = 0.0              # seconds into the source video where pose 0 sits
    messages: list[str] = field(default_factory=list)
    # issue 11: how the keypoints are aligned (unianimate.pose.align); defaults = before
    align_mode: str = "per-limb"
    align_parts: list[str] = field(default_factory=lambda: ["body", "hands"])
    # the part of ``messages`` the last drawing added (replaced, not appended, on a redraw)
    drawing_messages: list[str] = field(default_factory=list)


@with_config(STRICT)
@dataclass
class Job:
    """A generation job, recorded so that a crash shows up as ``interrupted`` after restart."""

    id: str
    kind: str
    segment: str
    candidates: list[str]
    status: str = "queued"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None


@with_config(STRICT)
@dataclass
class Project:
    """A whole project: reference, poses, settings, the segment tree and the job log."""

    id: str
    owner_hash: str | None
    name: str
    reference: ReferenceInfo
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    poses: PoseInfo | None = None
    segments: list[Segment] = field(default_factory=list)
    active_leaf: str | None = None
    jobs: list[Job] = field(default_factory=list)
    exports: list[dict[str, Any]] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    # ---- tree helpers -------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.reference.width

    @property
    def height(self) -> int:
        return self.reference.height

    def segment(self, segment_id: str) -> Segment:
        """The segment with this id; ProjectError otherwise."""
        for seg in self.segments:
            if seg.id == segment_id:
                return seg
        raise ProjectError(f"project {self.id} has no segment {segment_id!r}; "
                           f"it has {[s.id for s in self.segments] or 'none yet'}")

    @property
    def root(self) -> Segment | None:
        """The root segment (reference mode), or None before the first generation."""
        for seg in self.segments:
            if seg.parent is None:
                return seg
        return None

    def children(self, segment_id: str, candidate_id: str | None = None) -> list[Segment]:
        """Child segments of a segment (optionally only those continuing ``candidate_id``)."""
        return [s for s in self.segments if s.parent == segment_id
                and (candidate_id is None or s.parent_candidate == candidate_id)]

    def ancestry(self, segment_id: str) -> list[Segment]:
        """Segments from the root down to ``segment_id`` inclusive."""
        chain: list[Segment] = []
        seg: Segment | None = self.segment(segment_id)
        seen: set[str] = set()
        while seg is not None:
            if seg.id in seen:
                raise ProjectError(f"project {self.id}: segment tree has a cycle at {seg.id}")
            seen.add(seg.id)
            chain.append(seg)
            seg = self.segment(seg.parent) if seg.parent is not None else None
        return chain[::-1]

    def active_path(self) -> list[tuple[Segment, Candidate | None]]:
        """(segment, chosen candidate) pairs from the root to the active leaf.

        The candidate of an inner segment is the one its child on the path continues; the leaf's
        is its ``chosen`` (None when nothing is chosen there yet).
        """
        if self.active_leaf is None:
            return []
        chain = self.ancestry(self.active_leaf)
        out: list[tuple[Segment, Candidate | None]] = []
        for i, seg in enumerate(chain):
            cid = chain[i + 1].parent_candidate if i + 1 < len(chain) else seg.chosen
            out.append((seg, seg.candidate(cid) if cid is not None else None))
        return out

    def next_segment_id(self) -> str:
        """A fresh segment id ``s<n>``."""
        used = {s.id for s in self.segments}
        n = len(self.segments)
        while f"s{n}" in used:
            n += 1
        return f"s{n}"

    # ---- segment-tree operations (pure: no files) -----------------------------------------
    def ensure_root(self) -> Segment:
        """The root segment, created (poses 0..frames_per_segment) when missing."""
        root = self.root
        if root is not None:
            return root
        if self.poses is None:
            raise InputError("load a driving video or pose sequence before generating")
        n = self.settings.frames_per_segment
        if self.poses.count < n:
            raise InputError(f"the pose sequence has {self.poses.count} frames, fewer than one "
                             f"segment of {n}; lower 'frames per segment' or use a longer "
                             "driving input")
        root = Segment(id=self.next_segment_id(), parent=None, parent_candidate=None, depth=0,
                       start=0, end=n)
        self.segments.append(root)
        self.active_leaf = root.id
        return root

    def fit_empty_segment(self, segment_id: str) -> None:
        """A segment with no candidates (and no children) yet follows the current 'frames per
        segment'."""
        seg = self.segment(segment_id)
        if seg.candidates or self.children(seg.id) or self.poses is None:
            return
        n = self.settings.frames_per_segment
        count = self.poses.count
        if seg.parent is None and count < n:
            raise InputError(f"the pose sequence has {count} frames, fewer than one segment "
                             f"of {n}; lower 'frames per segment' or use a longer driving input")
        seg.end = min(seg.start + n, count)

    def choose(self, segment_id: str, candidate_id: str) -> None:
        """Choose a done candidate; the active path follows it (an existing continuation of
        that candidate is resumed, otherwise the path ends at this segment)."""
        seg = self.segment(segment_id)
        try:
            cand = seg.candidate(candidate_id)
        except ProjectError:
            raise InputError(f"segment {segment_id} has no candidate {candidate_id!r}; "
                             "generate candidates first and choose one of them") from None
        if cand.status != "done":
            raise InputError(f"candidate {candidate_id} of segment {segment_id} is "
                             f"{cand.status}, not done; choose a finished candidate")
        seg.chosen = candidate_id
        self.select_branch(seg.id)

    def select_branch(self, segment_id: str) -> None:
        """Make the branch through a segment the active path (its ancestors' choices follow)."""
        self.active_leaf = self.descend(segment_id)
        self.sync_chosen()

    def descend(self, segment_id: str) -> str:
        """From a segment follow the chosen candidates' newest continuations down to a leaf."""
        seg = self.segment(segment_id)
        seen = {seg.id}
        while seg.chosen is not None:
            kids = self.children(seg.id, seg.chosen)
            if not kids:
                break
            seg = max(kids, key=lambda s: s.created)
            if seg.id in seen:
                break
            seen.add(seg.id)
        return seg.id

    def sync_chosen(self) -> None:
        """Make every segment on the active path choose the candidate the path goes through."""
        for seg, cand in self.active_path():
            if cand is not None:
                seg.chosen = cand.id

    def continuation(self, segment_id: str | None = None) -> tuple[Segment, bool]:
        """The segment after a segment's chosen candidate (default: the active leaf), made the
        active leaf: ``(existing, False)`` when that candidate was continued before (its
        continuation is resumed), else ``(new, True)``, whose poses start at the chosen last
        frame's pose (start = prev.end - 1) and whose ``first_frame`` the caller must write."""
        seg_id = segment_id or self.active_leaf
        if seg_id is None:
            raise InputError("nothing to continue from: generate and choose a first segment")
        seg = self.segment(seg_id)
        if seg.chosen is None:
            raise InputError(f"choose a candidate of segment {seg.id} before continuing")
        existing = self.children(seg.id, seg.chosen)
        if existing:
            child = max(existing, key=lambda s: s.created)
            self.select_branch(child.id)             # keep its continuation
            return child, False
        assert self.poses is not None
        span = next_segment_range(seg.end, self.settings.frames_per_segment, self.poses.count)
        if span is None:
            raise InputError(f"the pose sequence ends at frame {self.poses.count}; there is "
                             "nothing left to continue (export the video now)")
        new = Segment(id=self.next_segment_id(), parent=seg.id, parent_candidate=seg.chosen,
                      depth=seg.depth + 1, start=span[0], end=span[1],
                      first_frame=None)
        new.first_frame = f"segments/{new.id}/first_frame.png"
        self.segments.append(new)
        self.active_leaf = new.id
        self.sync_chosen()
        return new, True

    def mark_interrupted(self, is_live: Callable[[str | None], bool]) -> bool:
        """Jobs and candidates recorded as running by a process that is gone (``is_live``
        False) become interrupted; True when anything changed."""
        changed = False
        for job in self.jobs:
            if job.status in ("queued", "running") and not is_live(job.id):
                job.status = "interrupted"
                job.finished = job.finished or time.time()
                job.error = job.error or "the app stopped while this job was running"
                changed = True
        for seg in self.segments:
            for cand in seg.candidates:
                if cand.status == "running" and not is_live(cand.job_id):
                    cand.status = "interrupted"
                    cand.error = cand.error or "the app stopped while this candidate was generated"
                    changed = True
        return changed

    # ---- (de)serialisation --------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The manifest dict (format + version first, then the dataclass fields)."""
        body = asdict(self)
        return {"format": FORMAT, "version": VERSION, **body}

    @classmethod
    def from_json(cls, data: Any, folder: Path | None = None) -> "Project":
        """Parse and check a manifest dict (:func:`unianimate.studio.manifest.project_from_json`)."""
        from unianimate.studio.manifest import project_from_json
        return project_from_json(data, folder)

def check_relative(rel: str, what: str = "path") -> PurePosixPath:
    """A manifest path must be relative, without ``..``; ProjectError otherwise."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise ProjectError(f"{what}: {rel!r} is not a relative path")
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("..", "") for part in p.parts):
        raise ProjectError(f"{what}: {rel!r} points outside the project folder")
    return p


__all__ = ["FORMAT", "VERSION", "READABLE_VERSIONS", "MANIFEST", "FIT_MODES", "GenerationSettings",
           "Candidate", "Segment", "ReferenceInfo", "PoseInfo", "Job", "Project", "seed_for",
           "valid_id", "check_relative", "stitched_length", "next_segment_range"]
