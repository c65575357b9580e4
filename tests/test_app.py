"""app.py: command line, launch settings (local bind, upload limit, served folder), ZeroGPU
decorator, and a real start with no weights and no network."""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
pytest.importorskip("gradio")

import app  # noqa: E402
from ui.blocks import GPU_ID, build_ui, launch_kwargs  # noqa: E402
from ui.runtime import ModelManager, build_studio  # noqa: E402
from unianimate.space import gpu  # noqa: E402
from tests._net import running_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_bind_locally_and_share_is_opt_in() -> None:
    args = app.parse_args([])
    assert args.host == "127.0.0.1" and args.port == 7860 and args.share is False
    assert args.model == "auto" and args.max_file_size == "200mb"
    assert not args.shared_sessions
    args = app.parse_args(["--model", "tiny", "--share", "--port", "9000", "--host", "0.0.0.0",
                           "--projects-dir", "/data/p", "--max-file-size", "1gb"])
    assert (args.model, args.share, args.port, args.host) == ("tiny", True, 9000, "0.0.0.0")
    assert (args.projects_dir, args.max_file_size) == ("/data/p", "1gb")


def test_launch_never_serves_the_projects_folder(tmp_path: Path) -> None:
    kw = launch_kwargs(tmp_path / "projects", max_file_size="5mb")
    assert kw["allowed_paths"] == []
    assert kw["blocked_paths"] == [str((tmp_path / "projects").resolve())]
    assert kw["server_name"] == "127.0.0.1" and kw["share"] is False
    assert kw["max_file_size"] == "5mb"


def test_gpu_work_shares_one_queue_slot(tmp_path: Path) -> None:
    models = ModelManager("tiny")
    demo = build_ui(build_studio(tmp_path, models), models)
    deps = {d.api_name: d for d in demo.fns.values() if d.api_name}
    for name in ("generate_candidates", "reroll", "extract_poses", "load_model"):
        assert deps[name].concurrency_id == GPU_ID and deps[name].concurrency_limit == 1, name
    assert deps["cancel"].concurrency_limit is None
    assert deps["choose"].concurrency_id != GPU_ID


def test_spaces_gpu_applies_on_zerogpu_and_is_a_no_op_otherwise(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def work(x: int) -> int:
        return x + 1
    monkeypatch.setitem(sys.modules, "spaces", None)        # "import spaces" fails
    assert gpu(work) is work and gpu(duration=5)(work) is work
    seen: list[int] = []
    fake = types.SimpleNamespace(GPU=lambda duration: (seen.append(duration) or (lambda f: f)))
    monkeypatch.setitem(sys.modules, "spaces", fake)
    assert gpu(duration=42)(work)(1) == 2 and seen == [42]


def test_app_starts_without_weights_and_says_what_is_missing(tmp_path: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    env.pop("HF_HUB_CACHE", None)
    # --model real: the default (auto) would start the demo model once assets/demo ships
    with running_app(tmp_path, env, "--model", "real") as (url, log):
        from gradio_client import Client
        status = Client(url, verbose=False).predict(api_name="/model_status")
        assert "unianimate_16f_32f_non_ema_223000.pth" in status
        assert "hf download camenduru/unianimate" in status and "--model tiny" in status
    assert "missing unianimate_16f_32f_non_ema_223000.pth" in log.read_text()
