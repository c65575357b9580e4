"""An outsider who knows a project id, and a second session of another user, get nothing of it:
every file through ``/gradio_api/file=`` and ``/file=``, every endpoint through gradio_client and
through the raw queue, with the id, with an old-style owner token (the owner id a version 1
manifest held in clear), with guessed session hashes. The app on 127.0.0.1, tiny model."""
from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")
pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from ui.blocks import build_ui, launch_kwargs  # noqa: E402
from ui.runtime import ModelManager, build_studio  # noqa: E402
from tests._net import free_port  # noqa: E402

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DATA = Path(__file__).resolve().parent / "data"
REF = str(ASSETS / "example_reference.png")
DANCE = str(ASSETS / "example_dance.json")
LEGACY_TOKEN = "c" * 32                   # the browser token the version 1 fixture held in clear
LEGACY_ID = json.loads((DATA / "manifest_v1.json").read_text())["id"]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("projects")
    (root / LEGACY_ID).mkdir()                       # a project as version 1 left it
    shutil.copyfile(DATA / "manifest_v1.json", root / LEGACY_ID / "manifest.json")
    models = ModelManager("tiny")
    studio = build_studio(root, models)
    demo = build_ui(studio, models)
    kwargs = launch_kwargs(root, port=free_port(), max_file_size="2mb")
    demo.launch(prevent_thread_lock=True, quiet=True, **kwargs)
    url = f"http://127.0.0.1:{kwargs['server_port']}/"
    try:
        victim = Client(url, verbose=False, download_files=False)
        pid, _, _ = victim.predict(handle_file(REF), "custom", 64, 64, "crop", "victim",
                                   api_name="/create_project")
        victim.predict(pid, [handle_file(DANCE)], 0, 0, 1, True, api_name="/load_pose_file")
        victim.predict(pid, None, 3, 1, 2.5, 949, 0, 1, api_name="/generate_candidates")
        victim.predict(pid, "s0", "c0", api_name="/choose")
        video, files, _ = victim.predict(pid, 20, False, True, True, api_name="/export")
        fns = {getattr(d.fn, "__name__", None): i for i, d in demo.fns.items()}
        yield {"url": url, "root": root, "pid": pid, "victim": victim, "fns": fns,
               "studio": studio, "served": [video] + list(files)}
    finally:
        demo.close()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def _queue(url: str, fn_index: int, data: list, session: str) -> dict:
    """Call an event (also a private one) the way a browser does: join the queue, read the SSE."""
    body = json.dumps({"data": data, "fn_index": fn_index, "session_hash": session,
                       "event_data": None, "trigger_id": None}).encode()
    req = urllib.request.Request(url + "gradio_api/queue/join", body,
                                 {"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=60).read()
    with urllib.request.urlopen(url + f"gradio_api/queue/data?session_hash={session}",
                                timeout=300) as r:
        for line in r:
            if line.startswith(b"data:"):
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed":
                    return msg
    raise AssertionError("the queue closed without a result")


def _client(url: str, session_hash: str | None = None) -> Client:
    c = Client(url, verbose=False, download_files=False)
    if session_hash is not None:
        c.session_hash = session_hash
    return c


def _attempts(pid: str) -> list[tuple[str, tuple]]:
    """Every endpoint that names a project, with arguments that would work for its owner."""
    return [("/open_project", (pid, None)),
            ("/set_reference", (pid, None, "custom", 64, 64, "pad")),
            ("/load_pose_file", (pid, [handle_file(DANCE)], 0, 0, 1, True)),
            ("/extract_poses", (pid, None, 0, 0, 1, True)),
            ("/generate_candidates", (pid, "s0", 3, 1, 2.5, 949, 0, 1)),
            ("/reroll", (pid, "s0", 1)),
            ("/cancel", (pid,)),
            ("/choose", (pid, "s0", "c0")),
            ("/continue_segment", (pid,)),
            ("/select_branch", (pid, "s0")),
            ("/timeline", (pid,)),
            ("/export", (pid, 18, False, False, True)),
            ("/rerender", (pid, "s0", "c0")),
            ("/delete_project", (pid,))]


def _refused_everywhere(c: Client, pid: str) -> None:
    _, rows = c.predict(api_name="/list_projects")
    assert pid not in json.dumps(rows)
    for name, args in _attempts(pid):
        with pytest.raises(AppError, match="no project") as info:
            c.predict(*args, api_name=name)
        assert "/" + pid not in str(info.value), name


def test_no_project_file_is_served_by_url(app: dict) -> None:
    root, url = app["root"], app["url"]
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in files) and any(p.suffix == ".mp4" for p in files)
    assert any(p.name == "secret" for p in files)
    for path in files:
        quoted = urllib.parse.quote(str(path))
        for prefix in ("gradio_api/file=", "file="):
            assert _status(url + prefix + quoted) in (403, 404), (prefix, path)
    # and what the owner was handed is only a copy in Gradio's cache
    for served in app["served"]:
        path = served["path"] if isinstance(served, dict) else served
        assert not Path(path).resolve().is_relative_to(root)


def test_a_second_session_gets_nothing_of_the_project(app: dict) -> None:
    before = (app["root"] / app["pid"] / "manifest.json").read_bytes()
    _refused_everywhere(_client(app["url"]), app["pid"])
    assert (app["root"] / app["pid"] / "manifest.json").read_bytes() == before
    tl = app["victim"].predict(app["pid"], api_name="/timeline")   # the owner still has it all
    assert tl["path"][0]["chosen"] == "c0" and str(app["root"]) not in json.dumps(tl)


def test_guessed_session_hashes_open_nothing(app: dict) -> None:
    store = app["studio"].store
    keys = [p.name for p in (app["root"] / ".studio" / "owners").iterdir()]
    guesses = [app["pid"], LEGACY_ID, LEGACY_TOKEN, "u-" + LEGACY_TOKEN, uuid.uuid4().hex[:11],
               *keys, store.owner_key(None)]
    for guess in guesses:
        c = _client(app["url"], session_hash=guess)
        _, rows = c.predict(api_name="/list_projects")
        assert rows == [], guess
        for pid in (app["pid"], LEGACY_ID):
            with pytest.raises(AppError, match="no project"):
                c.predict(pid, api_name="/timeline")
    _refused_everywhere(_client(app["url"], session_hash=keys[0]), app["pid"])


def test_an_old_style_owner_token_works_once_for_its_browser_and_never_after(app: dict) -> None:
    url, fns = app["url"], app["fns"]
    # the owner's browser comes back with the token an older version kept in clear: it gets a
    # new token and its project
    owner = _queue(url, fns["init_session"], [LEGACY_TOKEN], uuid.uuid4().hex[:11])
    new_token, _, choices, _ = owner["output"]["data"]
    assert new_token != LEGACY_TOKEN and len(new_token) == 32
    assert [c[1] for c in choices["choices"]] == [LEGACY_ID]
    # an outsider presenting the old token afterwards gets an empty session of its own
    for _ in range(2):
        outsider = _queue(url, fns["init_session"], [LEGACY_TOKEN], uuid.uuid4().hex[:11])
        token, _, choices, _ = outsider["output"]["data"]
        assert token not in (LEGACY_TOKEN, new_token) and choices["choices"] == []
    # a token sent in place of the server-side session state is ignored
    session = uuid.uuid4().hex[:11]
    for token in (LEGACY_TOKEN, new_token, "u-" + new_token):
        res = _queue(url, fns["timeline"], [token, LEGACY_ID], session)
        assert not res["success"] and "no project" in res["output"]["error"]
    assert "c" * 32 not in (app["root"] / LEGACY_ID / "manifest.json").read_text()


def test_the_log_never_has_an_owner_token_nor_a_project_id_at_info(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ui.handlers import StudioHandlers
    models = ModelManager("tiny")
    ui = StudioHandlers(build_studio(tmp_path / "projects", models), models)
    token = "d" * 32
    caplog.set_level("DEBUG")
    pid, _, _ = ui.create_project(token, REF, "custom", 64, 64, "crop", "logged")
    ui.load_pose_file(token, pid, [DANCE], 0, 0, 1, True)
    ui.generate_candidates(token, pid, None, 3, 1, 2.5, 949, 0, 1)
    ui.choose(token, pid, "s0", "c0")
    ui.export(token, pid, 20, False, False, True)
    with pytest.raises(gr.Error):
        ui.timeline("e" * 32, pid)                           # someone else's attempt
    assert caplog.records
    for rec in caplog.records:
        text = rec.getMessage()
        assert token not in text and ui.studio.store.owner_key(f"u-{token}") not in text
        if rec.levelno >= 20:
            assert pid not in text, text


def test_a_refused_request_leaves_no_traceback_in_the_log(app: dict, capfd) -> None:
    c = _client(app["url"])
    capfd.readouterr()
    with pytest.raises(AppError, match="no project"):
        c.predict(app["pid"], api_name="/timeline")
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
