"""Project folders on disk: who owns what, per-project locks, load/edit/save, safe media paths,
and sweeping what a killed process left behind. The one place that knows about ownership.

Layout of the projects root::

    <root>/.studio/                    # private (0700): never a project (ids cannot start with '.')
        secret                         # 32 random bytes (hex), 0600, made once per installation
        index-v1                       # marker: the one-time scan of version 1 manifests is done
        owners/<owner key>/<id>.json   # the owner's index: one small file per project
    <root>/<id>/manifest.json ...      # see :mod:`unianimate.studio.project`

Ownership: an owner id (a browser token ``u-...``, an API session ``s-...``, any string, or None
for the shared owner of the CLI and single-user mode) is never written anywhere. The manifest keeps
a salted hash of it (``owner_hash``); the index is keyed by ``HMAC(secret, owner)``, so a caller's
projects are found by listing one folder, without opening any other manifest. Every read goes
through :meth:`ProjectStore.check_owner` first: a project of someone else, a damaged one of
someone else and one that does not exist give the same "no project" error.

Version 1 manifests held the owner id in clear (and were served by URL), so those ids must be
taken as known to others: a migrated browser owner is marked legacy and its token is replaced by
a new one the next time the browser presents it (:meth:`ProjectStore.transfer`); a migrated API
session owner (``s-<session hash>``, chosen by the client and gone with it) becomes the shared
owner, reachable only in single-user mode (``--shared-sessions``) or from the CLI.

Index entries also cache the project's summary with the manifest's (mtime, size) stamp, so
listing reads one small file per owned project; a manifest changed behind the store's back is
parsed again (and shown as damaged when it no longer reads).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from unianimate.errors import ProjectError
from unianimate.studio.project import (VERSION, Project, check_relative, legacy_owner,
                                       load_project, manifest_path, read_manifest,
                                       stitched_length, valid_id)
from unianimate.utils import atomic_write_json

log = logging.getLogger(__name__)

STATE_DIR = ".studio"
SECRET_FILE = "secret"
INDEX_DIR = "owners"
INDEX_MARK = "index-v1"
SHARED_KEY = "shared"               # index folder of owner None
LEGACY_MARK = ".legacy"             # in an owner's index folder: its id was once on disk in clear
RETIRED_MARK = ".retired"           # ... its projects were given to a new id: never use it again
DAMAGED_ADVICE = ("restore manifest.json from a backup, or delete the project (Delete project "
                  "button, API /delete_project)")

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()
_SWEPT: set[str] = set()
#: temp files of :func:`unianimate.video.writer.write_mp4` / ``write_png_zip``: ``.<stem>.<pid>.<random>.<ext>``
_WRITER_TEMP = re.compile(r"^\..+\.(\d+)\.[^.]+\.(mp4|zip)$")


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


def hash_owner(owner: str | None) -> str | None:
    """A salted hash of an owner id (``sha256$<salt>$<digest>``); None for the shared owner."""
    if owner is None:
        return None
    salt = secrets.token_hex(16)
    return f"sha256${salt}${hashlib.sha256((salt + owner).encode()).hexdigest()}"


def owner_matches(stored: str | None, owner: str | None) -> bool:
    """True when ``stored`` (a :func:`hash_owner` value) is the hash of ``owner``."""
    if stored is None or owner is None:
        return stored is None and owner is None
    parts = stored.split("$")
    if len(parts) != 3 or parts[0] != "sha256":
        return False
    digest = hashlib.sha256((parts[1] + owner).encode()).hexdigest()
    return hmac.compare_digest(digest, parts[2])


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _load_secret(path: Path) -> bytes:
    """The installation's random secret, made on first use with private permissions."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    os.chmod(path, 0o600)
    text = path.read_text(encoding="ascii").strip()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ProjectError(f"{STATE_DIR}/{SECRET_FILE} in the projects folder is damaged; delete "
                           "it only if no browser sessions need to keep their projects, or "
                           "restore it from a backup")
    return bytes.fromhex(text)


class ProjectStore:
    """Project folders under ``root`` with ownership checked before anything is read."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.state = self.root / STATE_DIR
        self.state.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.state, 0o700)
        self._secret = _load_secret(self.state / SECRET_FILE)
        self._index = self.state / INDEX_DIR
        self._index.mkdir(exist_ok=True)
        if not (self.state / INDEX_MARK).is_file():
            self._index_legacy_projects()
        with _LOCKS_GUARD:
            first = str(self.root) not in _SWEPT
            _SWEPT.add(str(self.root))
        if first:
            self._sweep_dead_writers()

    # ---- ownership ------------------------------------------------------------------------
    def owner_key(self, owner: str | None) -> str:
        """The index folder name of an owner (keyed hash; the owner id is never stored)."""
        if owner is None:
            return SHARED_KEY
        return hmac.new(self._secret, owner.encode(), hashlib.sha256).hexdigest()[:40]

    def browser_secret(self) -> str:
        """The key of the browser's stored owner token (random per installation)."""
        return hmac.new(self._secret, b"browser-state", hashlib.sha256).hexdigest()

    def _entry(self, project_id: str, owner: str | None) -> Path:
        return self._index / self.owner_key(owner) / f"{project_id}.json"

    @staticmethod
    def not_found(project_id: str) -> ProjectError:
        """The one error for 'not yours', 'does not exist' and 'someone else's damaged one'."""
        return ProjectError(f"no project {project_id!r}; pick one from the project list")

    def folder(self, project_id: str) -> Path:
        """The folder a project id names (the id is checked; nothing is read)."""
        if not valid_id(project_id):
            raise ProjectError(f"{project_id!r} is not a valid project id")
        return self.root / project_id

    def check_owner(self, project_id: str, owner: str | None) -> Path:
        """The project's folder when ``owner`` owns it, else :meth:`not_found`. Reads only the
        owner's index (and, for a project written by version 1, that manifest's owner)."""
        folder = self.folder(project_id)
        if self._entry(project_id, owner).is_file() and folder.is_dir():
            return folder
        if folder.is_dir() and self._claim_legacy(folder, owner):
            return folder
        raise self.not_found(project_id)

    def _claim_legacy(self, folder: Path, owner: str | None) -> bool:
        """A version 1 manifest added after the first scan: migrate it when ``owner`` is its
        owner in clear."""
        try:
            data = read_manifest(folder)
        except ProjectError:
            return False
        is_legacy, legacy = legacy_owner(data)
        if not is_legacy or legacy != owner:
            return False
        with self.lock(folder.name):
            self._migrate(folder, data, owner)
        return self._entry(folder.name, owner).is_file()

    def is_legacy_owner(self, owner: str | None) -> bool:
        """True for an owner id to be replaced: one a version 1 manifest held in clear, or one
        whose projects were already given to a new id (:meth:`transfer`)."""
        folder = self._index / self.owner_key(owner)
        return owner is not None and ((folder / LEGACY_MARK).is_file()
                                      or (folder / RETIRED_MARK).is_file())

    def transfer(self, old: str | None, new: str | None) -> int:
        """Give every project of ``old`` to ``new`` (manifest hash and index); returns how many.
        A manifest that no longer reads as JSON keeps its old hash and stays listed as damaged."""
        if old == new:
            return 0
        src = self._index / self.owner_key(old)
        moved = 0
        for entry in sorted(src.glob("*.json")):
            pid = entry.name[:-5]
            with self.lock(pid):
                folder = self.root / pid
                try:
                    data = read_manifest(folder)
                except ProjectError:
                    data = None
                if isinstance(data, dict) and data.get("version") == VERSION:
                    data["owner_hash"] = hash_owner(new)
                    atomic_write_json(manifest_path(folder), data)
                self._write_entry(pid, new, None)
                entry.unlink()
                moved += 1
        (src / LEGACY_MARK).unlink(missing_ok=True)
        if old is not None:
            src.mkdir(exist_ok=True)
            (src / RETIRED_MARK).touch()
        return moved

    def _migrate(self, folder: Path, data: dict[str, Any], owner: str | None) -> None:
        """Rewrite a version 1 manifest's owner as a salted hash and index it (only those keys
        change, so a manifest damaged elsewhere stays as it was otherwise)."""
        if owner is not None and owner.startswith("s-"):
            owner = None                             # an API session's key, known to others
        body = {k: v for k, v in data.items() if k != "owner"}
        body["version"] = VERSION
        body["owner_hash"] = hash_owner(owner)
        self._write_entry(folder.name, owner, None)
        if owner is not None:
            (self._index / self.owner_key(owner) / LEGACY_MARK).touch()
        atomic_write_json(manifest_path(folder), body)

    def _index_legacy_projects(self) -> None:
        """Once per projects folder: index every version 1 manifest and hash its owner, so no
        owner id stays on disk in clear."""
        migrated = 0
        for folder in sorted(self.root.iterdir()):
            if not valid_id(folder.name) or not manifest_path(folder).is_file():
                continue
            try:
                data = read_manifest(folder)
            except ProjectError:
                continue
            is_legacy, owner = legacy_owner(data)
            if is_legacy:
                with self.lock(folder.name):
                    self._migrate(folder, data, owner)
                migrated += 1
        (self.state / INDEX_MARK).write_text(f"{time.time():.0f}\n", encoding="ascii")
        if migrated:
            log.info("stored the owners of %d project(s) as salted hashes", migrated)

    # ---- locks, load, save ----------------------------------------------------------------
    def lock(self, project_id: str) -> threading.RLock:
        """One re-entrant lock per project folder, shared by every store of this process."""
        key = str(self.root / project_id)
        with _LOCKS_GUARD:
            return _LOCKS.setdefault(key, threading.RLock())

    def load(self, project_id: str, owner: str | None) -> Project:
        """The project, read fresh and checked; ownership first (see :meth:`check_owner`)."""
        folder = self.check_owner(project_id, owner)
        project = load_project(folder)
        if not owner_matches(project.owner_hash, owner):
            raise self.not_found(project_id)
        return project

    def save(self, project: Project, owner: str | None) -> None:
        """Write the manifest atomically and refresh the owner's index entry."""
        folder = self.folder(project.id)
        project.updated = time.time()
        atomic_write_json(manifest_path(folder), project.to_json())
        self._write_entry(project.id, owner, summarize(project))

    @contextmanager
    def edit(self, project_id: str, owner: str | None) -> Iterator[Project]:
        """Load under the project's lock, let the body change it, save if it did not raise."""
        with self.lock(project_id):
            project = self.load(project_id, owner)
            yield project
            self.save(project, owner)

    def create(self, project: Project, owner: str | None) -> None:
        """Record a new project (its folder exists) as ``owner``'s and write its manifest."""
        project.owner_hash = hash_owner(owner)
        with self.lock(project.id):
            self._write_entry(project.id, owner, None)     # indexed first: never an orphan
            self.save(project, owner)

    def delete(self, project_id: str, owner: str | None) -> None:
        """Remove a project folder (damaged or not) and its index entry."""
        folder = self.check_owner(project_id, owner)
        with self.lock(project_id):
            shutil.rmtree(folder)
            self._entry(project_id, owner).unlink(missing_ok=True)

    def _write_entry(self, project_id: str, owner: str | None,
                     summary: ProjectSummary | None) -> None:
        entry = self._entry(project_id, owner)
        entry.parent.mkdir(exist_ok=True)
        try:
            st = manifest_path(self.root / project_id).stat()
            stamp = [st.st_mtime_ns, st.st_size]
        except FileNotFoundError:
            stamp = None
        atomic_write_json(entry, {"stamp": stamp,
                                  "summary": asdict(summary) if summary is not None else None})

    # ---- listing ---------------------------------------------------------------------------
    def list(self, owner: str | None) -> list[ProjectSummary]:
        """The owner's projects, newest first; damaged ones carry ``error``. Reads the owner's
        index and, only for manifests changed behind the store's back, those manifests."""
        folder = self._index / self.owner_key(owner)
        if not folder.is_dir():
            return []
        out = []
        for entry in os.scandir(folder):
            pid = entry.name[:-5] if entry.name.endswith(".json") else ""
            if valid_id(pid):
                row = self._summary(pid, owner, Path(entry.path))
                if row is not None:
                    out.append(row)
        out.sort(key=lambda s: s.updated, reverse=True)
        return out

    def _summary(self, pid: str, owner: str | None, entry: Path) -> ProjectSummary | None:
        project_dir = self.root / pid
        try:
            st = manifest_path(project_dir).stat()
        except FileNotFoundError:
            if not project_dir.is_dir():             # deleted by hand: forget it
                entry.unlink(missing_ok=True)
                return None
            now = time.time()
            return ProjectSummary(id=pid, name=pid, created=now, updated=now,
                                  error=f"project {pid!r} has no manifest.json; {DAMAGED_ADVICE}")
        try:
            record = json.loads(entry.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        cached = record.get("summary") if isinstance(record, dict) else None
        if (isinstance(cached, dict) and record.get("stamp") == [st.st_mtime_ns, st.st_size]):
            try:
                return ProjectSummary(**cached)
            except TypeError:
                pass                                 # an older entry layout: read again below
        try:
            project = self.load(pid, owner)
        except ProjectError as err:
            name = cached.get("name", pid) if isinstance(cached, dict) else pid
            return ProjectSummary(id=pid, name=str(name), created=st.st_mtime,
                                  updated=st.st_mtime, error=f"{err} ({DAMAGED_ADVICE})")
        summary = summarize(project)
        with self.lock(pid):
            self._write_entry(pid, owner, summary)
        return summary

    # ---- files -----------------------------------------------------------------------------
    @staticmethod
    def inside(folder: Path, relative: str) -> Path:
        """``folder / relative`` resolved, refusing anything that leaves the folder (symlinks
        included)."""
        check_relative(relative, "media path")
        path = (folder / relative).resolve()
        base = folder.resolve()
        if path != base and base not in path.parents:
            raise ProjectError(f"{relative!r} points outside the project folder")
        return path

    @staticmethod
    def sweep_staging(folder: Path) -> None:
        """Remove half-written media a killed process left (``*.tmp`` frame folders, staging)."""
        for tmp in list(folder.glob("segments/*/*.tmp")) + list(folder.glob(".poses-*")):
            shutil.rmtree(tmp, ignore_errors=True)
            log.info("removed a leftover staging folder of a stopped job")

    def _sweep_dead_writers(self) -> None:
        """Once per process and root: delete the temp MP4/zip files of writers whose process is
        gone (an export killed mid-way); a live writer's files are left alone."""
        removed = 0
        for pattern in ("*/exports/.*", "*/poses/.*"):
            for path in self.root.glob(pattern):
                m = _WRITER_TEMP.match(path.name)
                if m and path.is_file() and not pid_alive(int(m.group(1))):
                    path.unlink(missing_ok=True)
                    removed += 1
        if removed:
            log.info("removed %d half-written video file(s) of a stopped export", removed)


__all__ = ["ProjectStore", "ProjectSummary", "summarize", "hash_owner", "owner_matches",
           "pid_alive", "DAMAGED_ADVICE"]
