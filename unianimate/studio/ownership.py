"""Who owns which project — the one place that knows.

Owner ids (a browser token ``u-...``, an API session ``s-...``, any string; None is the shared
owner of the CLI and single-user mode) are never written anywhere:

* the manifest keeps a salted hash (:func:`hash_owner`, ``owner_hash``);
* the index ``<root>/.studio/owners/<HMAC(secret, owner)>/<id>.json`` lists an owner's projects
  (one small file per project; :class:`~unianimate.studio.store.ProjectStore` caches the list row
  in it), so a caller's projects are found by listing one folder, and the owner of a damaged
  project is known without parsing its manifest;
* the secret ``<root>/.studio/secret`` is 32 random bytes made once per installation (0600, in a
  0700 folder); the browser's stored-token key is derived from it.

Version 1 manifests held the owner id in clear (and were served by URL), so those ids are taken as
known to others: they are migrated to a hash and indexed the first time a store opens the folder
(or, for one added later, on first open by its owner); a migrated browser owner is marked legacy
and gets a new token at the browser's next page load (:meth:`OwnerIndex.transfer`, the old id is
retired for good); a migrated API-session owner (``s-<session hash>``, chosen by the client and
gone with it) becomes the shared owner.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from unianimate.errors import ProjectError
from unianimate.studio.manifest import manifest_path, read_manifest
from unianimate.studio.project import VERSION, valid_id
from unianimate.utils import atomic_write_json

log = logging.getLogger(__name__)

SECRET_FILE = "secret"
INDEX_DIR = "owners"
INDEX_MARK = "index-v1"
SHARED_KEY = "shared"               # index folder of owner None
LEGACY_MARK = ".legacy"             # in an owner's index folder: its id was once on disk in clear
RETIRED_MARK = ".retired"           # ... its projects were given to a new id: never use it again


def legacy_owner(data: Any) -> tuple[bool, str | None]:
    """``(True, owner)`` for a version 1 manifest dict naming its owner in clear, else
    ``(False, None)``. Reads only those two keys, so it works on a manifest damaged elsewhere."""
    if (isinstance(data, dict) and data.get("version") == 1 and "owner" in data
            and (data["owner"] is None or isinstance(data["owner"], str))):
        return True, data["owner"]
    return False, None


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
        raise ProjectError(f"{path.parent.name}/{SECRET_FILE} in the projects folder is damaged; "
                           "restore it from a backup (without it no owner finds their projects)")
    return bytes.fromhex(text)


class OwnerIndex:
    """The per-owner index and the secret of one projects root.

    ``lock(project_id)`` is the per-project lock of the store (migrations and transfers rewrite
    manifests under it).
    """

    def __init__(self, root: Path, state: Path, lock: Callable[[str], threading.RLock]) -> None:
        self.root = root
        self._lock = lock
        self._secret = _load_secret(state / SECRET_FILE)
        self._index = state / INDEX_DIR
        self._index.mkdir(exist_ok=True)
        if not (state / INDEX_MARK).is_file():
            self._index_legacy_projects()
            (state / INDEX_MARK).write_text(f"{time.time():.0f}\n", encoding="ascii")

    def owner_key(self, owner: str | None) -> str:
        """The index folder name of an owner (keyed hash; the owner id is never stored)."""
        if owner is None:
            return SHARED_KEY
        return hmac.new(self._secret, owner.encode(), hashlib.sha256).hexdigest()[:40]

    def browser_secret(self) -> str:
        """The key of the browser's stored owner token (random per installation)."""
        return hmac.new(self._secret, b"browser-state", hashlib.sha256).hexdigest()

    def entry(self, project_id: str, owner: str | None) -> Path:
        """The index file of one project of ``owner`` (exists only when they own it)."""
        return self._index / self.owner_key(owner) / f"{project_id}.json"

    def owns(self, project_id: str, owner: str | None) -> bool:
        """Whether ``owner`` owns the project (a version 1 one is claimed on the way)."""
        if self.entry(project_id, owner).is_file():
            return True
        folder = self.root / project_id
        return folder.is_dir() and self._claim_legacy(folder, owner)

    def entries(self, owner: str | None) -> Iterator[tuple[str, Path]]:
        """(project id, index file) of every project ``owner`` owns."""
        folder = self._index / self.owner_key(owner)
        if folder.is_dir():
            for item in os.scandir(folder):
                pid = item.name[:-5] if item.name.endswith(".json") else ""
                if valid_id(pid):
                    yield pid, Path(item.path)

    def write(self, project_id: str, owner: str | None, summary: dict[str, Any] | None) -> None:
        """Record ``owner``'s project with its list row and the manifest's (mtime, size)."""
        entry = self.entry(project_id, owner)
        entry.parent.mkdir(exist_ok=True)
        try:
            st = manifest_path(self.root / project_id).stat()
            stamp = [st.st_mtime_ns, st.st_size]
        except FileNotFoundError:
            stamp = None
        atomic_write_json(entry, {"stamp": stamp, "summary": summary})

    @staticmethod
    def cached(entry: Path, stamp: list[int]) -> dict[str, Any] | None:
        """The list row stored in an index file, when the manifest still has that stamp."""
        try:
            record = json.loads(entry.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if isinstance(record, dict) and record.get("stamp") == stamp and \
                isinstance(record.get("summary"), dict):
            return record["summary"]
        return None

    @staticmethod
    def cached_name(entry: Path) -> str | None:
        """The project name last recorded in an index file (to list a damaged project)."""
        try:
            summary = json.loads(entry.read_text(encoding="utf-8")).get("summary") or {}
        except (OSError, ValueError, AttributeError):
            return None
        name = summary.get("name")
        return str(name) if name is not None else None

    # ---- version 1 owners ------------------------------------------------------------------
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
        for pid, entry in sorted(self.entries(old)):
            with self._lock(pid):
                folder = self.root / pid
                try:
                    data = read_manifest(folder)
                except ProjectError:
                    data = None
                if isinstance(data, dict) and data.get("version") == VERSION:
                    data["owner_hash"] = hash_owner(new)
                    atomic_write_json(manifest_path(folder), data)
                self.write(pid, new, None)
                entry.unlink()
                moved += 1
        (src / LEGACY_MARK).unlink(missing_ok=True)
        if old is not None:
            src.mkdir(exist_ok=True)
            (src / RETIRED_MARK).touch()
        return moved

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
        with self._lock(folder.name):
            self._migrate(folder, data, owner)
        return self.entry(folder.name, owner).is_file()

    def _migrate(self, folder: Path, data: dict[str, Any], owner: str | None) -> None:
        """Rewrite a version 1 manifest's owner as a salted hash and index it (only those keys
        change, so a manifest damaged elsewhere stays as it was otherwise)."""
        if owner is not None and owner.startswith("s-"):
            owner = None                             # an API session's key, known to others
        body = {k: v for k, v in data.items() if k != "owner"}
        body["version"] = VERSION
        body["owner_hash"] = hash_owner(owner)
        self.write(folder.name, owner, None)
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
                with self._lock(folder.name):
                    self._migrate(folder, data, owner)
                migrated += 1
        if migrated:
            log.info("stored the owners of %d project(s) as salted hashes", migrated)


__all__ = ["OwnerIndex", "hash_owner", "owner_matches", "legacy_owner", "SHARED_KEY"]
