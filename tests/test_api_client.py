"""gradio_client drives the app launched in-process on 127.0.0.1 (tiny model, tiny sizes)."""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from ui.blocks import build_ui, launch_kwargs  # noqa: E402
from ui.runtime import ModelManager, build_studio  # noqa: E402
from tests._net import free_port

ASSETS = Path(__file__).resolve().parent.parent / "assets"
REF = str(ASSETS / "example_reference.png")
DANCE = str(ASSETS / "example_dance.json")
ENDPOINTS = {"/model_status", "/load_model", "/list_projects", "/open_project", "/create_project",
             "/set_reference", "/load_pose_file", "/extract_poses", "/generate_candidates",
             "/reroll", "/cancel", "/choose", "/continue_segment", "/select_branch", "/timeline",
             "/export", "/rerender", "/delete_project",
             "/download_weights", "/download_status"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("projects")
    models = ModelManager("tiny")
    demo = build_ui(build_studio(root, models), models)
    kwargs = launch_kwargs(root, port=free_port(), max_file_size="2mb")
    demo.launch(prevent_thread_lock=True, quiet=True, **kwargs)
    try:
        yield f"http://127.0.0.1:{kwargs['server_port']}/", root
    finally:
        demo.close()


def _client(url: str) -> Client:
    return Client(url, verbose=False, download_files=False)


def _new_project(c: Client, name: str) -> str:
    pid, _, data = c.predict(handle_file(REF), "custom", 64, 64, "crop", name,
                             api_name="/create_project")
    msg, data = c.predict(pid, [handle_file(DANCE)], 0, 0, 1, True, api_name="/load_pose_file")
    assert data["poses"] == 40, msg
    return pid


def test_every_action_is_a_named_endpoint(server: tuple[str, Path]) -> None:
    info = _client(server[0]).view_api(return_format="dict", print_info=False)
    assert set(info["named_endpoints"]) == ENDPOINTS
    params = {k: [p["parameter_name"] for p in v["parameters"]]
              for k, v in info["named_endpoints"].items()}
    assert params["/choose"] == ["project_id", "segment_id", "candidate_id"]
    assert params["/generate_candidates"][:2] == ["project_id", "segment_id"]
    doc = (Path(__file__).resolve().parent.parent / "docs" / "API.md").read_text()
    assert all(f"`{name}`" in doc for name in ENDPOINTS), "docs/API.md lists every endpoint"


def test_round_trip_of_a_whole_project(server: tuple[str, Path]) -> None:
    url, root = server
    c = _client(url)
    assert "tiny" in c.predict(api_name="/model_status").lower()
    pid = _new_project(c, "round trip")
    seg, msg, cands = c.predict(pid, None, 3, 2, 2.5, 949, 0, 2, api_name="/generate_candidates")
    assert seg == "s0" and [x["seed"] for x in cands] == [0, 1], msg
    msg, tl = c.predict(pid, seg, "c1", api_name="/choose")
    assert tl["path"][0]["chosen"] == "c1"
    seg1, msg, tl = c.predict(pid, api_name="/continue_segment")
    assert seg1 == "s1" and tl["active_leaf"] == "s1"
    seg1_, msg, cands1 = c.predict(pid, seg1, 1, api_name="/reroll")
    assert [x["seed"] for x in cands1] == [1000] and cands1[0]["measures"]["seam"] is not None
    c.predict(pid, seg1, "c0", api_name="/choose")
    tl = c.predict(pid, api_name="/timeline")
    assert [s["id"] for s in tl["path"]] == ["s0", "s1"] and tl["total_frames"] == 5
    video, files, msg = c.predict(pid, 20, False, True, True, api_name="/export")
    assert "5 frames" in msg and len(files) == 2
    names = sorted(Path(f["path"] if isinstance(f, dict) else f).suffix for f in files)
    assert names == [".mp4", ".zip"]
    view = c.predict(pid, None, api_name="/open_project")
    assert any("s1" in str(v) for v in view)
    exported = list((root / pid / "exports").glob("*.mp4"))
    assert len(exported) == 1 and exported[0].stat().st_size > 0


def test_two_clients_at_once_get_their_own_results_and_projects(server: tuple[str, Path]) -> None:
    url, _ = server
    clients = [_client(url), _client(url)]
    pids = [_new_project(c, f"client {i}") for i, c in enumerate(clients)]
    results: dict[int, object] = {}

    def generate(i: int) -> None:
        results[i] = clients[i].predict(pids[i], None, 2, 2, 2.5, 949, 100 * i, 1,
                                        api_name="/generate_candidates")

    threads = [threading.Thread(target=generate, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for i in range(2):
        seg, msg, cands = results[i]
        assert [x["seed"] for x in cands] == [100 * i], msg
    for i, c in enumerate(clients):
        _, rows = c.predict(api_name="/list_projects")
        assert [r["id"] for r in rows] == [pids[i]]
        with pytest.raises(AppError, match="no project"):
            c.predict(pids[1 - i], api_name="/timeline")


def test_bad_uploads_are_refused_and_the_app_keeps_serving(server: tuple[str, Path],
                                                           tmp_path: Path) -> None:
    c = _client(server[0])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(AppError, match="(?i)empty"):
        c.predict(handle_file(str(empty)), "512x768", 0, 0, "crop", "", api_name="/create_project")
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + os.urandom(3 * 1024 * 1024))
    with pytest.raises(Exception):          # over --max-file-size: refused at upload
        c.predict(handle_file(str(big)), "512x768", 0, 0, "crop", "", api_name="/create_project")
    with pytest.raises(AppError, match="minimum value 1"):
        c.predict("ffffffffffff", [handle_file(DANCE)], 0, 0, 0, True,
                  api_name="/load_pose_file")
    with pytest.raises(AppError, match="no project"):
        c.predict("ffffffffffff", 18, False, False, True, api_name="/export")
    pid, msg, _ = c.predict(handle_file(REF), "512x768", 0, 0, "pad", "", api_name="/create_project")
    assert "512x768" in msg
