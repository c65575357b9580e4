"""What the studio hands to the UI and the API: plain frozen dataclasses built from one loaded
project (no file is read or written here)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unianimate.studio.project import Project, Segment, next_segment_range, stitched_length


@dataclass(frozen=True)
class ProjectSummary:
    """One row of a project list. ``error`` (what is wrong and what to do) marks a damaged one."""

    id: str
    name: str
    created: float
    updated: float
    width: int = 0
    height: int = 0
    segments: int = 0
    chosen_frames: int = 0
    poster: str | None = None          # project-relative path of the fitted reference
    error: str | None = None


def summarize(project: Project) -> ProjectSummary:
    """The list row of a (valid) project."""
    path = project.active_path()
    return ProjectSummary(
        id=project.id, name=project.name, created=project.created, updated=project.updated,
        width=project.width, height=project.height, segments=len(project.segments),
        chosen_frames=stitched_length([s.num_frames for s, c in path if c is not None]),
        poster=project.reference.fitted)


@dataclass(frozen=True)
class CandidateView:
    """A candidate with absolute media paths, for display (:meth:`Timeline.to_dict` gives them
    relative to the project folder)."""

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
        """Plain dict (JSON-ready) for API endpoints; media paths relative to the project folder
        (no server path leaves the service through it)."""
        data = asdict(self)
        for seg in data["path"] + data["tree"]:
            for cand in seg["candidates"]:
                for key in _MEDIA_KEYS:
                    if cand[key] is not None:
                        cand[key] = _project_relative(cand[key], self.project_id)
        return data


_MEDIA_KEYS = ("poster", "preview", "frames_dir")


def _project_relative(path: str, project_id: str) -> str:
    """``<root>/<project_id>/a/b`` -> ``a/b`` (a view's media path as the API shows it)."""
    parts = Path(path).parts
    if project_id in parts:
        last = len(parts) - 1 - parts[::-1].index(project_id)
        return "/".join(parts[last + 1:])
    return Path(path).name


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


@dataclass(frozen=True)
class PeopleInFirstFrame:
    """The people of a driving video's first frame with anyone in it, to pick the dancer to
    follow: ``image`` (that frame with numbered boxes, the default one in yellow), the people
    (``index`` is what ``person=`` takes; ``box``: x0 y0 x1 y1 normalised to [0, 1]), the one
    followed when none is picked, and the frame's number among the kept frames."""

    image: str
    people: tuple[tuple[int, tuple[float, float, float, float]], ...]
    default: int | None
    frame_index: int
    width: int
    height: int

    def person_at(self, x: float, y: float) -> int | None:
        """The person whose box holds the pixel (x, y) of ``image`` (the smallest such box,
        so a dancer in front of a larger one can be picked); None when no box holds it."""
        u, v = float(x) / self.width, float(y) / self.height
        inside = [(max(0.0, (b[2] - b[0]) * (b[3] - b[1])), i) for i, b in self.people
                  if b[0] <= u <= b[2] and b[1] <= v <= b[3]]
        return min(inside)[1] if inside else None

    @property
    def message(self) -> str:
        """One line for the user."""
        count = len(self.people)
        default = "" if self.default is None else f"; without a choice, person {self.default} " \
                                                   "(yellow, the largest and most central) is followed"
        return (f"{count} {'person' if count == 1 else 'people'} in kept frame "
                f"{self.frame_index}{default}. Click a dancer or pick a number.")


@dataclass(frozen=True)
class ProjectPage:
    """Everything a page shows of one project, from one load (no file written): the project,
    its timeline, and the absolute paths of its displayed files (None when missing)."""

    project: Project
    timeline: Timeline
    reference: str | None
    pose_video: str | None
    pose_overlay: str | None


def build_page(project: Project, folder: Path, pose_video: str, pose_overlay: str
               ) -> ProjectPage:
    """The page of a loaded project; ``pose_video``/``pose_overlay``: their project-relative
    paths (shown only when present)."""
    def existing(rel: str | None) -> str | None:
        return str(folder / rel) if rel and (folder / rel).is_file() else None

    has_poses = project.poses is not None
    return ProjectPage(project=project, timeline=build_timeline(project, folder),
                       reference=existing(project.reference.fitted),
                       pose_video=existing(pose_video) if has_poses else None,
                       pose_overlay=existing(pose_overlay) if has_poses else None)


def build_timeline(project: Project, folder: Path) -> Timeline:
    """The data the UI shows of a loaded project: the active path, the whole tree, what
    continue would do; media paths absolute under ``folder`` (the project's folder)."""
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
                    active_leaf=project.active_leaf, total_frames=stitched_length(lengths),
                    poses_total=project.poses.count if project.poses else 0,
                    fps=project.poses.fps if project.poses else None,
                    next_range=next_range, can_continue=can_continue)


__all__ = ["ProjectSummary", "summarize", "CandidateView", "SegmentView", "Timeline",
           "ExportResult", "PeopleInFirstFrame", "PosePreview", "ProjectPage", "build_page",
           "build_timeline"]
