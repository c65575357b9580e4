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

Manifest format (``"format": "unianimate-project", "version": 1``): see :func:`Project.to_json`.
Every path inside the manifest is relative to the project folder and is checked on load to stay
inside it.

Segment tree: each segment has a ``parent`` segment id (``None`` for the root, which is generated
in reference mode) and the ``parent_candidate`` whose last frame is its first frame. A segment's
pose slice is ``[start, end)``; a child starts at ``parent.end - 1`` (one shared frame). The
*active path* is the chain of (segment, chosen candidate) pairs from the root to ``active_leaf``.

Seed scheme: ``seed = base_seed + 1000 * depth + candidate_index`` where ``depth`` is the
segment's distance from the root and ``candidate_index`` counts every candidate ever generated for
that segment (re-rolls continue the count), so seeds never repeat within a segment.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path, PurePosixPath
from typing import Any

from unianimate.errors import ProjectError
from unianimate.utils import atomic_write_json

log = logging.getLogger(__name__)

FORMAT = "unianimate-project"
VERSION = 1
MANIFEST = "manifest.json"
FIT_MODES = ("crop", "pad", "stretch")
CANDIDATE_STATUSES = ("running", "done", "interrupted", "failed")
JOB_STATUSES = ("queued", "running", "done", "cancelled", "interrupted", "failed")
SEED_DEPTH_STRIDE = 1000

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def seed_for(base_seed: int, depth: int, candidate_index: int) -> int:
    """The documented seed of candidate ``candidate_index`` of a segment at ``depth``."""
    return int(base_seed) + SEED_DEPTH_STRIDE * int(depth) + int(candidate_index)


def next_segment_range(prev_end: int, frames_per_segment: int, pose_count: int) -> tuple[int, int] | None:
    """Pose range [start, end) of the segment continuing one that ends at ``prev_end``.

    The two share exactly one frame (start = prev_end - 1: the chosen last frame becomes the next
    first frame). None when fewer than 2 poses are left (nothing new to generate).
    """
    start = prev_end - 1
    end = min(start + frames_per_segment, pose_count)
    return (start, end) if end - start >= 2 else None


def valid_id(value: str) -> bool:
    """True for ids safe to use as folder names (lowercase letters, digits, ``_``, ``-``)."""
    return isinstance(value, str) and bool(_ID_RE.match(value))


@dataclass(frozen=True)
class GenerationSettings:
    """Settings of a generation; a snapshot is stored with every candidate for re-rendering."""

    frames_per_segment: int = 16
    steps: int = 30
    guidance: float = 2.5
    noise_prior_t: int = 949
    base_seed: int = 0
    candidates: int = 2
    color_correction: bool = True
    color_threshold: float = 12.0

    def validated(self) -> "GenerationSettings":
        """Return self after range checks; raises ProjectError naming the bad value."""
        problems = []
        if not (2 <= self.frames_per_segment <= 128):
            problems.append(f"frames_per_segment={self.frames_per_segment} (use 2..128)")
        if not (1 <= self.steps <= 1000):
            problems.append(f"steps={self.steps} (use 1..1000)")
        if not (0.0 <= self.guidance <= 50.0):
            problems.append(f"guidance={self.guidance} (use 0..50)")
        if not (0 <= self.noise_prior_t <= 999):
            problems.append(f"noise_prior_t={self.noise_prior_t} (use 0..999)")
        if not (0 <= self.base_seed < 2**31 - 10**7):
            problems.append(f"base_seed={self.base_seed} (use 0..2_000_000_000)")
        if not (1 <= self.candidates <= 16):
            problems.append(f"candidates={self.candidates} (use 1..16)")
        if not (0.0 <= self.color_threshold <= 255.0):
            problems.append(f"color_threshold={self.color_threshold} (use 0..255)")
        if problems:
            raise ProjectError("invalid generation settings: " + "; ".join(problems))
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationSettings":
        """Build from a manifest dict; unknown keys or wrong types raise ProjectError."""
        return _build(cls, data, "settings")


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


@dataclass
class ReferenceInfo:
    """The reference image as stored and as fitted to the project resolution."""

    original: str
    fitted: str
    width: int
    height: int
    fit: str
    pose: str | None = None               # relative PNG of the drawn reference pose
    pose_source: str | None = None        # "detected" | "driving-frame-0" | "given"
    keypoints: str | None = None          # relative JSON (one-pose sequence) when detected


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


@dataclass
class Project:
    """A whole project: reference, poses, settings, the segment tree and the job log."""

    id: str
    owner: str | None
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

    # ---- (de)serialisation --------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The manifest dict (format + version first, then the dataclass fields)."""
        body = asdict(self)
        return {"format": FORMAT, "version": VERSION, **body}

    @classmethod
    def from_json(cls, data: Any, folder: Path | None = None) -> "Project":
        """Parse and check a manifest dict; ProjectError with the offending field otherwise."""
        if not isinstance(data, dict):
            raise ProjectError("manifest is not a JSON object")
        if data.get("format") != FORMAT:
            raise ProjectError(f"manifest format is {data.get('format')!r}, expected {FORMAT!r}")
        if data.get("version") != VERSION:
            raise ProjectError(f"manifest version {data.get('version')!r} is not supported "
                               f"(this program reads version {VERSION})")
        body = {k: v for k, v in data.items() if k not in ("format", "version")}
        project = _build(cls, body, "manifest")
        project._check(folder)
        return project

    def _check(self, folder: Path | None) -> None:
        """Cross-field consistency: ids, tree links, statuses, ranges, paths inside the folder."""
        if not valid_id(self.id):
            raise ProjectError(f"project id {self.id!r} is not a valid id")
        if folder is not None and folder.name != self.id:
            raise ProjectError(f"manifest id {self.id!r} does not match its folder {folder.name!r}")
        ref = self.reference
        if ref.fit not in FIT_MODES:
            raise ProjectError(f"reference.fit {ref.fit!r} is not one of {FIT_MODES}")
        if ref.width <= 0 or ref.height <= 0 or ref.width % 8 or ref.height % 8:
            raise ProjectError(f"reference size {ref.width}x{ref.height} is not positive multiples of 8")
        paths = [("reference.original", ref.original), ("reference.fitted", ref.fitted),
                 ("reference.pose", ref.pose), ("reference.keypoints", ref.keypoints)]
        if self.poses is not None:
            p = self.poses
            if p.count < 1 or not (p.fps > 0) or p.frame_interval < 1:
                raise ProjectError(f"poses: count={p.count}, fps={p.fps}, "
                                   f"frame_interval={p.frame_interval} out of range")
            paths += [("poses.images", p.images), ("poses.keypoints", p.keypoints),
                      ("poses.aligned_keypoints", p.aligned_keypoints),
                      ("poses.source_video", p.source_video)]
        ids = [s.id for s in self.segments]
        if len(set(ids)) != len(ids):
            raise ProjectError("segments: duplicate segment ids")
        roots = [s for s in self.segments if s.parent is None]
        if len(roots) > 1:
            raise ProjectError(f"segments: more than one root ({[s.id for s in roots]})")
        n_poses = self.poses.count if self.poses is not None else 0
        for seg in self.segments:
            where = f"segments[{seg.id}]"
            if not valid_id(seg.id):
                raise ProjectError(f"{where}: id is not a valid id")
            if not (0 <= seg.start < seg.end <= n_poses):
                raise ProjectError(f"{where}: pose slice [{seg.start}, {seg.end}) is outside the "
                                   f"{n_poses} poses of the project")
            if seg.parent is not None:
                parent = self.segment(seg.parent)
                parent.candidate(seg.parent_candidate or "")
                if seg.start != parent.end - 1:
                    raise ProjectError(f"{where}: starts at {seg.start}, its parent ends at "
                                       f"{parent.end} (a child starts at parent end - 1)")
            cids = [c.id for c in seg.candidates]
            if len(set(cids)) != len(cids):
                raise ProjectError(f"{where}: duplicate candidate ids")
            for cand in seg.candidates:
                if cand.status not in CANDIDATE_STATUSES:
                    raise ProjectError(f"{where}.{cand.id}: status {cand.status!r} is not one of "
                                       f"{CANDIDATE_STATUSES}")
                if not valid_id(cand.id):
                    raise ProjectError(f"{where}: candidate id {cand.id!r} is not a valid id")
                cand.settings.validated()
                if cand.status == "done" and (cand.num_frames != seg.num_frames
                                              or cand.frames_dir is None):
                    raise ProjectError(f"{where}.{cand.id}: a done candidate needs frames_dir and "
                                       f"{seg.num_frames} frames (has {cand.num_frames})")
                paths += [(f"{where}.{cand.id}.frames_dir", cand.frames_dir),
                          (f"{where}.{cand.id}.poster", cand.poster),
                          (f"{where}.{cand.id}.preview", cand.preview)]
            if seg.chosen is not None:
                if seg.candidate(seg.chosen).status != "done":
                    raise ProjectError(f"{where}: chosen candidate {seg.chosen} is not done")
            paths.append((f"{where}.first_frame", seg.first_frame))
            self.ancestry(seg.id)
        if self.active_leaf is not None:
            self.active_path()
        for job in self.jobs:
            if job.status not in JOB_STATUSES:
                raise ProjectError(f"jobs[{job.id}]: status {job.status!r} is not one of {JOB_STATUSES}")
        self.settings.validated()
        for name, rel in paths:
            if rel is not None:
                check_relative(rel, name)


def check_relative(rel: str, what: str = "path") -> PurePosixPath:
    """A manifest path must be relative, without ``..``; ProjectError otherwise."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise ProjectError(f"{what}: {rel!r} is not a relative path")
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("..", "") for part in p.parts):
        raise ProjectError(f"{what}: {rel!r} points outside the project folder")
    return p


# ---- generic strict dataclass builder -----------------------------------------------------
def _coerce(value: Any, annotation: str, where: str) -> Any:
    """Check ``value`` against a (string) annotation of the dataclasses above."""
    ann = annotation.replace(" ", "")
    optional = ann.endswith("|None")
    if optional:
        ann = ann[: -len("|None")]
        if value is None:
            return None
    elif value is None and ann != "Any":
        raise ProjectError(f"{where} must not be null")
    nested = {"GenerationSettings": GenerationSettings, "Candidate": Candidate, "Segment": Segment,
              "ReferenceInfo": ReferenceInfo, "PoseInfo": PoseInfo, "Job": Job}
    if ann in nested:
        if isinstance(value, nested[ann]):
            return value
        return _build(nested[ann], value, where)
    if ann.startswith("list["):
        inner = ann[5:-1]
        if not isinstance(value, list):
            raise ProjectError(f"{where} must be a list")
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if ann.startswith("dict["):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ProjectError(f"{where} must be an object")
        return dict(value)
    if ann == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProjectError(f"{where} must be an integer, got {value!r}")
        return value
    if ann == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ProjectError(f"{where} must be a number, got {value!r}")
        return float(value)
    if ann == "bool":
        if not isinstance(value, bool):
            raise ProjectError(f"{where} must be true or false, got {value!r}")
        return value
    if ann == "str":
        if not isinstance(value, str):
            raise ProjectError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from ``data`` strictly (unknown/missing keys -> ProjectError)."""
    if not isinstance(data, dict):
        raise ProjectError(f"{where} must be an object, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ProjectError(f"{where}: unknown field(s) {unknown}")
    kwargs = {}
    for name, f in known.items():
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ProjectError(f"{where}: missing field {name!r}")
            continue
        kwargs[name] = _coerce(data[name], str(f.type), f"{where}.{name}")
    return cls(**kwargs)


# ---- manifest I/O -------------------------------------------------------------------------
def manifest_path(folder: Path) -> Path:
    """Path of the manifest inside a project folder."""
    return Path(folder) / MANIFEST


def save_project(project: Project, folder: Path) -> None:
    """Write the manifest atomically (temp file + os.replace)."""
    project.updated = time.time()
    atomic_write_json(manifest_path(folder), project.to_json())


def load_project(folder: Path) -> Project:
    """Read and check a project's manifest; ProjectError naming the folder and the problem."""
    folder = Path(folder)
    path = manifest_path(folder)
    if not path.is_file():
        raise ProjectError(f"project folder {folder.name!r} has no {MANIFEST}; it is not a project "
                           "or was damaged (delete the folder or restore the manifest)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProjectError(f"project {folder.name!r}: {MANIFEST} cannot be read as JSON ({err}); "
                           "restore it or delete the project") from err
    try:
        return Project.from_json(data, folder)
    except ProjectError as err:
        raise ProjectError(f"project {folder.name!r}: {MANIFEST} is invalid: {err}. It was edited "
                           "by hand or damaged; fix or restore it, or delete the project") from err
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise ProjectError(f"project {folder.name!r}: {MANIFEST} is invalid ({err}); fix or "
                           "restore it, or delete the project") from err


__all__ = ["FORMAT", "VERSION", "MANIFEST", "FIT_MODES", "GenerationSettings", "Candidate",
           "Segment", "ReferenceInfo", "PoseInfo", "Job", "Project", "seed_for", "valid_id",
           "check_relative", "save_project", "load_project", "manifest_path", "replace"]
