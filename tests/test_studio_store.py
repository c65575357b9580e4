"""Ownership on disk: salted hashes, the per-owner index, the installation secret, manifests
written by version 1, damaged projects in their owner's list (no pipeline needed)."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from unianimate.errors import ProjectError
from unianimate.studio import Studio
from unianimate.studio.ownership import hash_owner, owner_matches
from unianimate.studio.store import DAMAGED_ADVICE

DATA = Path(__file__).resolve().parent / "data"
LEGACY_OWNER = "u-" + "c" * 32           # the owner written in clear by the version 1 fixture
LEGACY_ID = json.loads((DATA / "manifest_v1.json").read_text())["id"]


def _ref(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (80, 64, 3), dtype=np.uint8)


def _legacy_root(tmp_path: Path) -> Path:
    """A projects folder as version 1 left it: the fixture manifest in its project folder."""
    root = tmp_path / "projects"
    (root / LEGACY_ID).mkdir(parents=True)
    shutil.copyfile(DATA / "manifest_v1.json", root / LEGACY_ID / "manifest.json")
    return root


def _all_text(root: Path) -> str:
    return "\n".join(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())


def test_salted_hash_matches_only_its_owner() -> None:
    a, b = hash_owner("alice"), hash_owner("alice")
    assert a != b and "alice" not in a                       # salted: no two alike
    assert owner_matches(a, "alice") and owner_matches(b, "alice")
    assert not owner_matches(a, "bob") and not owner_matches(a, None)
    assert owner_matches(None, None) and not owner_matches(None, "alice")
    assert not owner_matches("sha256$x", "alice") and not owner_matches("alice", "alice")


def test_a_version_1_manifest_opens_for_its_owner_and_loses_the_clear_owner(tmp_path: Path
                                                                           ) -> None:
    root = _legacy_root(tmp_path)
    studio = Studio(root)
    text = (root / LEGACY_ID / "manifest.json").read_text()
    assert "c" * 32 not in _all_text(root)                  # migrated when the folder opened
    data = json.loads(text)
    assert data["version"] == 2 and "owner" not in data
    assert owner_matches(data["owner_hash"], LEGACY_OWNER)
    assert [s.id for s in studio.list_projects(owner=LEGACY_OWNER)] == [LEGACY_ID]
    project = studio.get_project(LEGACY_ID, owner=LEGACY_OWNER)
    assert [s.id for s in project.segments] == ["s0", "s1"] and project.segment("s0").chosen == "c0"
    tl = studio.timeline(LEGACY_ID, owner=LEGACY_OWNER)
    assert tl.to_dict()["path"][0]["candidates"][0]["poster"] == "segments/s0/c0/poster.png"
    for other in (None, "u-" + "d" * 32, "s-" + "c" * 32, "c" * 32):
        assert studio.list_projects(owner=other) == []
        with pytest.raises(ProjectError, match="no project"):
            studio.get_project(LEGACY_ID, owner=other)


def test_a_version_1_manifest_added_later_is_claimed_by_its_owner_only(tmp_path: Path) -> None:
    root = tmp_path / "projects"
    studio = Studio(root)                                   # first scan done: nothing there
    (root / LEGACY_ID).mkdir()
    shutil.copyfile(DATA / "manifest_v1.json", root / LEGACY_ID / "manifest.json")
    with pytest.raises(ProjectError, match="no project"):
        studio.get_project(LEGACY_ID, owner="u-" + "d" * 32)
    assert "c" * 32 in (root / LEGACY_ID / "manifest.json").read_text()   # untouched by others
    assert studio.get_project(LEGACY_ID, owner=LEGACY_OWNER).id == LEGACY_ID
    assert "c" * 32 not in _all_text(root)
    assert [s.id for s in studio.list_projects(owner=LEGACY_OWNER)] == [LEGACY_ID]


def test_legacy_owners_are_marked_and_api_session_owners_become_shared(tmp_path: Path) -> None:
    root = _legacy_root(tmp_path)
    api = json.loads((DATA / "manifest_v1.json").read_text())
    api.update(id="a" * 12, owner="s-abcdef")
    (root / api["id"]).mkdir()
    (root / api["id"] / "manifest.json").write_text(json.dumps(api))
    studio = Studio(root)
    assert studio.store.is_legacy_owner(LEGACY_OWNER)
    # the API session's hash was on disk in clear: that session no longer opens it; the
    # shared owner (single-user mode, the CLI) does
    with pytest.raises(ProjectError, match="no project"):
        studio.get_project(api["id"], owner="s-abcdef")
    assert [s.id for s in studio.list_projects(owner=None)] == [api["id"]]
    new = "u-" + "e" * 32
    assert studio.store.transfer(LEGACY_OWNER, new) == 1
    assert studio.store.is_legacy_owner(LEGACY_OWNER) and not studio.store.is_legacy_owner(new)
    assert studio.list_projects(owner=LEGACY_OWNER) == []
    assert studio.get_project(LEGACY_ID, owner=new).id == LEGACY_ID
    with pytest.raises(ProjectError, match="no project"):
        studio.get_project(LEGACY_ID, owner=LEGACY_OWNER)


def test_the_secret_is_random_per_installation_and_private(tmp_path: Path) -> None:
    a, b = Studio(tmp_path / "a"), Studio(tmp_path / "b")
    secret = a.root / ".studio" / "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((a.root / ".studio").stat().st_mode) == 0o700
    assert secret.read_text() != (b.root / ".studio" / "secret").read_text()
    assert a.store.browser_secret() != b.store.browser_secret()
    assert Studio(tmp_path / "a").store.browser_secret() == a.store.browser_secret()
    assert a.store.owner_key("alice") != b.store.owner_key("alice")


def test_owner_ids_are_never_written(tmp_path: Path) -> None:
    studio = Studio(tmp_path / "projects")
    owner = "u-" + "f" * 32
    p = studio.create_project(_ref(), 64, 64, "crop", owner=owner)
    studio.set_settings(p.id, owner=owner, steps=3)
    assert "f" * 32 not in _all_text(studio.root)
    assert [s.id for s in studio.list_projects(owner=owner)] == [p.id]


def test_a_damaged_project_stays_in_its_owners_list_only(tmp_path: Path) -> None:
    studio = Studio(tmp_path / "projects")
    good = studio.create_project(_ref(), 64, 64, "crop", name="good", owner="alice")
    bad = studio.create_project(_ref(1), 64, 64, "crop", name="bad", owner="alice")
    theirs = studio.create_project(_ref(2), 64, 64, "crop", owner="bob")
    for pid in (bad.id, theirs.id):
        (studio.root / pid / "manifest.json").write_text("{ not json")
    rows = {s.id: s for s in studio.list_projects(owner="alice")}
    assert set(rows) == {good.id, bad.id} and rows[good.id].error is None
    assert rows[bad.id].name == "bad" and "cannot be read as JSON" in rows[bad.id].error
    assert DAMAGED_ADVICE in rows[bad.id].error and str(studio.root) not in rows[bad.id].error
    assert [s.id for s in studio.list_projects(owner="bob")] == [theirs.id]
    # someone else's damaged project answers exactly like one that does not exist
    errors = []
    for pid in (theirs.id, "ffffffffffff"):
        with pytest.raises(ProjectError) as info:
            studio.get_project(pid, owner="alice")
        errors.append(str(info.value).replace(pid, "<id>"))
    assert errors[0] == errors[1]
    with pytest.raises(ProjectError, match="no project"):
        studio.delete_project(theirs.id, owner="alice")
    studio.delete_project(bad.id, owner="alice")             # the remedy works on a damaged one
    assert [s.id for s in studio.list_projects(owner="alice")] == [good.id]
    assert not (studio.root / bad.id).exists() and (studio.root / theirs.id).exists()


def test_a_manifest_edited_behind_the_stores_back_is_read_again(tmp_path: Path) -> None:
    studio = Studio(tmp_path / "projects")
    p = studio.create_project(_ref(), 64, 64, "crop", name="before", owner="alice")
    path = studio.root / p.id / "manifest.json"
    data = json.loads(path.read_text())
    data["name"] = "edited by hand"
    path.write_text(json.dumps(data))
    os.utime(path, ns=(0, 12345))                            # a stamp the index never saw
    assert [s.name for s in studio.list_projects(owner="alice")] == ["edited by hand"]
    shutil.rmtree(studio.root / p.id)                       # deleted by hand: forgotten
    assert studio.list_projects(owner="alice") == []
