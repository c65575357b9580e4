"""Project folders on disk: the ownership check in front of every read, per-project locks,
load/edit/save, listing, safe media paths, and cleaning up after a killed process.

Layout of the projects root::

    <root>/.studio/                    # private (0700), never a project (ids cannot start with '.')
        secret, index-v1, owners/...   # see unianimate.studio.ownership
    <root>/<id>/manifest.json ...      # see unianimate.studio.project

Every read goes through :meth:`ProjectStore.check_owner` first: a project of someone else, a
damaged one of someone else and one that does not exist give the same "no project" error. Index
entries cache each project's list row with the manifest's (mtime, size) stamp, so listing reads
one small file per owned project; a manifest changed behind the store's back is parsed again (and
listed as damaged when it no longer reads).

Recovery: a job recorded as running whose process is gone is marked ``interrupted`` when the
project is next loaded (that load writes it back: the one write a read does), and its half-written
media are removed; temp files of writers whose process is gone are removed at the first open of
the root in a process.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from unianimate.errors import ProjectError
from unianimate.studio.manifest import load_project, manifest_path
from unianimate.studio.ownership import OwnerIndex, hash_owner, owner_matches
from unianimate.studio.project import Project, check_relative, valid_id
from unianimate.studio.runtime import StudioRuntime, default_runtime
from unianimate.studio.views import ProjectSummary, summarize
from unianimate.utils import atomic_write_json

log = logging.getLogger(__name__)

STATE_DIR = ".studio"
DAMAGED_ADVICE = ("restore manifest.json from a backup, or delete the project (Delete project "
                  "button, API /delete_project)")
#: temp files of :func:`unianimate.video.writer.write_mp4` / ``write_png_zip``: ``.<stem>.<pid>.<random>.<ext>``
_WRITER_TEMP = re.compile(r"^\..+\.(\d+)\.[^.]+\.(mp4|zip)$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ProjectStore:
    """Project folders under ``root`` with ownership checked before anything is read."""

    def __init__(self, root: str | os.PathLike, runtime: StudioRuntime | None = None) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.runtime = runtime or default_runtime()
        self.state = self.root / STATE_DIR
        self.state.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.state, 0o700)
        self.owners = OwnerIndex(self.root, self.state, self.lock)
        if self.runtime.first_visit(str(self.root)):
            self._sweep_dead_writers()

    # ---- ownership ------------------------------------------------------------------------
    def owner_key(self, owner: str | None) -> str:
        """The index folder name of an owner (see :class:`OwnerIndex`)."""
        return self.owners.owner_key(owner)

    def browser_secret(self) -> str:
        """The key of the browser's stored owner token (random per installation)."""
        return self.owners.browser_secret()

    def is_legacy_owner(self, owner: str | None) -> bool:
        """True for an owner id to be replaced by a new one (see :class:`OwnerIndex`)."""
        return self.owners.is_legacy_owner(owner)

    def transfer(self, old: str | None, new: str | None) -> int:
        """Give every project of ``old`` to ``new``; returns how many."""
        return self.owners.transfer(old, new)

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
        if folder.is_dir() and self.owners.owns(project_id, owner):
            return folder
        raise self.not_found(project_id)

    # ---- locks, load, save ----------------------------------------------------------------
    def lock(self, project_id: str) -> threading.RLock:
        """One re-entrant lock per project folder, shared by every store of this process."""
        return self.runtime.lock(str(self.root / project_id))

    def job_key(self, project_id: str) -> str:
        """The runtime's key of a project's one queued/running job."""
        return str(self.root / project_id)

    def load(self, project_id: str, owner: str | None) -> Project:
        """The project read fresh and checked, ownership first (:meth:`check_owner`). Jobs a
        dead process left as running are recorded as interrupted (written back at once)."""
        project = self._read(project_id, owner)
        if self._mark_interrupted(project):
            # re-read under the lock: the job may have finished (and stopped being live) after
            # the unlocked read above; never write back a stale copy
            with self.lock(project_id):
                project = self._read(project_id, owner)
                if self._mark_interrupted(project):
                    self.save(project, owner)
                    if self.runtime.token(self.job_key(project_id)) is None:
                        self.sweep_staging(self.folder(project_id))
        return project

    def _read(self, project_id: str, owner: str | None) -> Project:
        folder = self.check_owner(project_id, owner)
        project = load_project(folder)
        if not owner_matches(project.owner_hash, owner):
            raise self.not_found(project_id)
        return project

    def _mark_interrupted(self, project: Project) -> bool:
        changed = project.mark_interrupted(self.runtime.is_live)
        if changed:
            log.warning("marked a job interrupted by a previous stop of the app")
        return changed

    def save(self, project: Project, owner: str | None) -> None:
        """Write the manifest atomically and refresh the owner's index entry."""
        folder = self.folder(project.id)
        project.updated = time.time()
        atomic_write_json(manifest_path(folder), project.to_json())
        self.owners.write(project.id, owner, asdict(summarize(project)))

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
            self.owners.write(project.id, owner, None)     # indexed first: never an orphan
            self.save(project, owner)

    def delete(self, project_id: str, owner: str | None) -> None:
        """Remove a project folder (damaged or not) and its index entry."""
        folder = self.check_owner(project_id, owner)
        with self.lock(project_id):
            shutil.rmtree(folder)
            self.owners.entry(project_id, owner).unlink(missing_ok=True)

    # ---- listing ---------------------------------------------------------------------------
    def list(self, owner: str | None) -> list[ProjectSummary]:
        """The owner's projects, newest first; damaged ones carry ``error``. Reads the owner's
        index and, only for manifests changed behind the store's back, those manifests."""
        rows = [self._summary(pid, owner, entry) for pid, entry in self.owners.entries(owner)]
        out = [row for row in rows if row is not None]
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
        cached = self.owners.cached(entry, [st.st_mtime_ns, st.st_size])
        if cached is not None:
            try:
                return ProjectSummary(**cached)
            except TypeError:
                pass                                 # an older entry layout: read again below
        try:
            project = self.load(pid, owner)
        except ProjectError as err:
            name = self.owners.cached_name(entry) or pid
            return ProjectSummary(id=pid, name=name, created=st.st_mtime, updated=st.st_mtime,
                                  error=f"{err} ({DAMAGED_ADVICE})")
        summary = summarize(project)
        with self.lock(pid):
            self.owners.write(pid, owner, asdict(summary))
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
        """Delete the temp MP4/zip files of writers whose process is gone (an export killed
        mid-way); a live writer's files are left alone."""
        removed = 0
        for pattern in ("*/exports/.*", "*/poses/.*"):
            for path in self.root.glob(pattern):
                m = _WRITER_TEMP.match(path.name)
                if m and path.is_file() and not pid_alive(int(m.group(1))):
                    path.unlink(missing_ok=True)
                    removed += 1
        if removed:
            log.info("removed %d half-written video file(s) of a stopped export", removed)


__all__ = ["ProjectStore", "ProjectSummary", "pid_alive", "DAMAGED_ADVICE", "STATE_DIR"]
