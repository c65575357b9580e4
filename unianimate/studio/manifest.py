"""The manifest on disk: read, strictly checked, written atomically.

Strictness: unknown or missing fields, wrong types, ids that are not folder-safe, broken segment
tree links, statuses outside their sets, paths that leave the project folder — each raises
ProjectError naming the field. Version 1 manifests (owner in clear) are read with
``owner_hash`` None; :mod:`unianimate.studio.ownership` rewrites them.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from unianimate.errors import ProjectError
from unianimate.studio.project import (CANDIDATE_STATUSES, FIT_MODES, FORMAT, JOB_STATUSES,
                                       MANIFEST, READABLE_VERSIONS, Project, Segment,
                                       check_relative, valid_id)
from unianimate.utils import atomic_write_json

_MISSING_OWNER = object()


def project_from_json(data: Any, folder: Path | None = None) -> Project:
    """Parse and check a manifest dict; ProjectError with the offending field otherwise."""
    if not isinstance(data, dict):
        raise ProjectError("manifest is not a JSON object")
    if data.get("format") != FORMAT:
        raise ProjectError(f"manifest format is {data.get('format')!r}, expected {FORMAT!r}")
    version = data.get("version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise ProjectError(f"manifest version {version!r} is not supported "
                           f"(this program reads versions {list(READABLE_VERSIONS)})")
    body = {k: v for k, v in data.items() if k not in ("format", "version")}
    ref = body.get("reference")
    if isinstance(ref, dict) and "keypoints" in ref and ref["keypoints"] is None:
        # written (always null) by versions before the field was dropped
        body["reference"] = {k: v for k, v in ref.items() if k != "keypoints"}
    if version == 1:
        if "owner_hash" in body:
            raise ProjectError("manifest: unknown field(s) ['owner_hash'] (version 1)")
        owner = body.pop("owner", _MISSING_OWNER)
        if owner is _MISSING_OWNER:
            raise ProjectError("manifest: missing field 'owner'")
        if owner is not None and not isinstance(owner, str):
            raise ProjectError(f"manifest.owner must be a string, got {owner!r}")
        body["owner_hash"] = None        # the store sets it when the owner first opens it
    project = build_strict(Project, body, "manifest")
    check_project(project, folder)
    return project


def check_project(project: Project, folder: Path | None) -> None:
    """Cross-field consistency: ids, tree links, statuses, ranges, paths inside the folder."""
    if not valid_id(project.id):
        raise ProjectError(f"project id {project.id!r} is not a valid id")
    if folder is not None and folder.name != project.id:
        raise ProjectError(f"manifest id {project.id!r} does not match its folder {folder.name!r}")
    ref = project.reference
    if ref.fit not in FIT_MODES:
        raise ProjectError(f"reference.fit {ref.fit!r} is not one of {FIT_MODES}")
    if ref.width <= 0 or ref.height <= 0 or ref.width % 8 or ref.height % 8:
        raise ProjectError(f"reference size {ref.width}x{ref.height} is not positive multiples of 8")
    paths = [("reference.original", ref.original), ("reference.fitted", ref.fitted),
             ("reference.pose", ref.pose)]
    if project.poses is not None:
        p = project.poses
        if p.count < 1 or not (p.fps > 0) or p.frame_interval < 1:
            raise ProjectError(f"poses: count={p.count}, fps={p.fps}, "
                               f"frame_interval={p.frame_interval} out of range")
        paths += [("poses.images", p.images), ("poses.keypoints", p.keypoints),
                  ("poses.aligned_keypoints", p.aligned_keypoints),
                  ("poses.source_video", p.source_video)]
    ids = [s.id for s in project.segments]
    if len(set(ids)) != len(ids):
        raise ProjectError("segments: duplicate segment ids")
    roots = [s for s in project.segments if s.parent is None]
    if len(roots) > 1:
        raise ProjectError(f"segments: more than one root ({[s.id for s in roots]})")
    n_poses = project.poses.count if project.poses is not None else 0
    for seg in project.segments:
        paths += _check_segment(project, seg, n_poses)
    if project.active_leaf is not None:
        project.active_path()
    for job in project.jobs:
        if job.status not in JOB_STATUSES:
            raise ProjectError(f"jobs[{job.id}]: status {job.status!r} is not one of {JOB_STATUSES}")
    project.settings.validated()
    for name, rel in paths:
        if rel is not None:
            check_relative(rel, name)


def _check_segment(project: Project, seg: Segment, n_poses: int
                   ) -> list[tuple[str, str | None]]:
    """One segment's ids, pose slice, tree link and candidates; returns its media paths."""
    where = f"segments[{seg.id}]"
    paths: list[tuple[str, str | None]] = []
    if not valid_id(seg.id):
        raise ProjectError(f"{where}: id is not a valid id")
    if not (0 <= seg.start < seg.end <= n_poses):
        raise ProjectError(f"{where}: pose slice [{seg.start}, {seg.end}) is outside the "
                           f"{n_poses} poses of the project")
    if seg.parent is not None:
        parent = project.segment(seg.parent)
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
    project.ancestry(seg.id)
    return paths


# ---- strict parsing through pydantic --------------------------------------------------------
_ADAPTERS: dict[type, TypeAdapter] = {}
_KINDS = {"int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
          "finite_number": "a finite number", "bool_type": "true or false",
          "string_type": "a string", "list_type": "a list", "dict_type": "an object",
          "dataclass_type": "an object", "dataclass_exact_type": "an object"}


def _where(root: str, loc: tuple[Any, ...]) -> str:
    return root + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def build_strict(cls: type, data: Any, where: str) -> Any:
    """``data`` (a JSON value) as dataclass ``cls``, strictly: unknown or missing fields, wrong
    types and non-finite numbers raise ProjectError naming the field (``where.a.b[2].c``).
    pydantic does the checking (strict JSON mode, ``extra="forbid"``, see ``STRICT``)."""
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        adapter = _ADAPTERS[cls] = TypeAdapter(cls)
    try:
        return adapter.validate_json(json.dumps(data), strict=True)
    except ValidationError as err:
        raise ProjectError(_message(err, where)) from None


def _message(err: ValidationError, root: str) -> str:
    """The first problem pydantic found, in the manifest's words."""
    e = err.errors(include_url=False)[0]
    loc, kind, value = tuple(e["loc"]), e["type"], e.get("input")
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        names = sorted(str(x["loc"][-1]) for x in err.errors() if x["type"] == kind
                       and tuple(x["loc"][:-1]) == loc[:-1])
        return f"{_where(root, loc[:-1])}: unknown field(s) {names}"
    if kind in ("missing", "missing_argument"):
        return f"{_where(root, loc[:-1])}: missing field {loc[-1]!r}"
    if value is None:
        return f"{_where(root, loc)} must not be null"
    if kind in _KINDS:
        return f"{_where(root, loc)} must be {_KINDS[kind]}, got {value!r}"
    return f"{_where(root, loc)}: {e['msg']} (got {value!r})"


# ---- manifest I/O -------------------------------------------------------------------------
def manifest_path(folder: Path) -> Path:
    """Path of the manifest inside a project folder."""
    return Path(folder) / MANIFEST


def save_project(project: Project, folder: Path) -> None:
    """Write the manifest atomically (temp file + os.replace)."""
    project.updated = time.time()
    atomic_write_json(manifest_path(folder), project.to_json())


def read_manifest(folder: Path) -> Any:
    """The manifest's JSON as it is on disk (not checked); ProjectError when it is missing or
    not JSON."""
    folder = Path(folder)
    path = manifest_path(folder)
    if not path.is_file():
        raise ProjectError(f"project folder {folder.name!r} has no {MANIFEST}; it is not a project "
                           "or was damaged (delete the project or restore the manifest)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProjectError(f"project {folder.name!r}: {MANIFEST} cannot be read as JSON ({err}); "
                           "restore it from a backup or delete the project") from err


def load_project(folder: Path, data: Any = None) -> Project:
    """Read (or take ``data`` already read) and check a project's manifest; ProjectError naming
    the folder and the problem."""
    folder = Path(folder)
    if data is None:
        data = read_manifest(folder)
    try:
        return Project.from_json(data, folder)
    except ProjectError as err:
        raise ProjectError(f"project {folder.name!r}: {MANIFEST} is invalid: {err}. It was edited "
                           "by hand or damaged; fix or restore it, or delete the project") from err
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise ProjectError(f"project {folder.name!r}: {MANIFEST} is invalid ({err}); fix or "
                           "restore it, or delete the project") from err


__all__ = ["project_from_json", "check_project", "build_strict", "manifest_path", "save_project",
           "read_manifest", "load_project"]
