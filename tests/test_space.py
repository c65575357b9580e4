"""ZeroGPU: the GPU entry point runs in a forked worker with pickled plain arguments (as
``spaces.GPU`` runs it, see tests/_zerogpu.py), with the tiny model on the CPU; progress and
cancel stay in the main process; the studio service generates through it."""
from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tests import _zerogpu
from tests.test_studio_flow import new_project, tiny_pipeline
from unianimate.errors import GenerationCancelled, InputError

FRAMES, STEPS, SIZE = 3, 3, 64


@pytest.fixture()
def zerogpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, Any]]:
    """The spaces stand-in installed; unianimate.space reloaded with the tiny start-up pipeline."""
    mod = _zerogpu.install(monkeypatch)
    import unianimate.space as space
    space._CPU_PIPELINE = tiny_pipeline()     # what load_cpu_pipeline(tiny=True) builds at start-up
    yield mod, space
    monkeypatch.undo()
    _zerogpu.uninstall(mod)


def _inputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = lambda: rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)  # noqa: E731
    return {"ref": img(), "ref_pose": img(), "poses": np.stack([img() for _ in range(FRAMES)])}


def _plain(value: Any) -> bool:
    """Only data: arrays, numbers, strings, None, and tuples/lists of them."""
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (np.ndarray, int, float, str, bool))


def test_gpu_entry_runs_in_a_forked_worker(zerogpu: tuple[ModuleType, Any]) -> None:
    mod, space = zerogpu
    x = _inputs()
    steps: list[tuple[int, int]] = []
    pipe = space.pipeline_factory()
    out = pipe.generate_segment(x["ref"], x["poses"], x["ref_pose"], num_frames=FRAMES, seed=7,
                                num_inference_steps=STEPS,
                                callback=lambda s, t, p=None: steps.append((s, t)))
    call = mod.calls[-1]
    assert call["pid"] != os.getpid()                       # it ran in the forked worker
    assert all(_plain(a) for a in call["args"]) and not call["kwargs"]
    pickle.dumps(call["args"])
    assert call["duration"] == space.gpu_seconds(FRAMES, STEPS, 1, SIZE, SIZE)
    # the same frames as the pipeline itself, progress reported step by step in this process
    ref = tiny_pipeline().generate_segment(x["ref"], x["poses"], x["ref_pose"], num_frames=FRAMES,
                                           seed=7, num_inference_steps=STEPS)
    np.testing.assert_array_equal(out, ref)
    assert [s for s, _ in steps] == list(range(1, len(steps) + 1)) and steps[-1][0] == steps[-1][1]
    # several candidates in one call: the duration grows with them
    gen = space.generate_on_gpu(x["ref"], x["poses"], x["ref_pose"], None, (7, 8), FRAMES, STEPS,
                                2.5, 949)
    frames = [e[2] for e in gen if e[0] == "frames"]
    assert len(frames) == 2 and np.array_equal(frames[0], ref) and not np.array_equal(frames[1], ref)
    assert mod.calls[-1]["duration"] == space.gpu_seconds(FRAMES, STEPS, 2, SIZE, SIZE)
    assert mod.calls[-1]["pid"] == call["pid"]              # the worker is reused


def test_cancel_and_errors_cross_the_boundary(zerogpu: tuple[ModuleType, Any]) -> None:
    mod, space = zerogpu
    x = _inputs(1)
    pipe = space.pipeline_factory()
    seen: list[int] = []
    with pytest.raises(GenerationCancelled):
        pipe.generate_segment(x["ref"], x["poses"], x["ref_pose"], num_frames=FRAMES, seed=1,
                              num_inference_steps=50, callback=lambda s, t, p=None: seen.append(s),
                              should_cancel=lambda: len(seen) >= 1)
    assert 1 <= len(seen) < 50
    # a project error keeps its class and message through the worker
    with pytest.raises(InputError) as err:
        pipe.generate_segment(x["ref"], x["poses"], x["ref_pose"], num_frames=FRAMES + 4,
                              num_inference_steps=2)
    assert "frames" in str(err.value)
    # the worker is still idle and usable
    out = pipe.generate_segment(x["ref"], x["poses"], x["ref_pose"], num_frames=FRAMES,
                                num_inference_steps=1)
    assert out.shape == (FRAMES, SIZE, SIZE, 3)
    assert len({c["pid"] for c in mod.calls}) == 1


def test_studio_generates_and_cancels_through_the_gpu_worker(
        zerogpu: tuple[ModuleType, Any], tmp_path: Path) -> None:
    mod, space = zerogpu
    from unianimate.studio import Studio
    studio = Studio(tmp_path / "projects", pipeline_factory=space.pipeline_factory)
    p = new_project(studio, tmp_path, poses=9, candidates=1)
    reports: list[Any] = []
    made = studio.generate_candidates(p.id, progress=reports.append)
    assert [c.status for c in made] == ["done"]
    assert any(getattr(r, "stage", None) == "generating" for r in reports)
    assert mod.calls and mod.calls[-1]["pid"] != os.getpid()
    # Studio.cancel (its token lives in this process) stops the worker's generation
    def cancel_on_first_step(r: Any) -> None:
        if getattr(r, "stage", None) == "generating":
            studio.cancel(p.id)

    root = studio.ensure_root(p.id).id
    with pytest.raises(GenerationCancelled):
        studio.reroll(p.id, root, n=1, progress=cancel_on_first_step)
    statuses = [c.status for c in studio.get_project(p.id).segment(root).candidates]
    assert statuses == ["done", "interrupted"]


def test_speed_options_long_mode_and_precision_cross_the_boundary(
        zerogpu: tuple[ModuleType, Any], tmp_path: Path) -> None:
    """Issue 11: sequential guidance, the decode chunk, offload, the long mode and another
    precision reach the worker as plain values and give the in-process pipeline's frames."""
    mod, space = zerogpu
    x = _inputs(2)
    pipe = space.pipeline_factory(None, "auto")
    kw = dict(seed=3, num_inference_steps=2, batch_guidance=False, decode_chunk=1, offload=True)
    out = pipe.generate_long(x["ref"], x["poses"], x["ref_pose"], window=2, overlap=1, **kw)
    call = mod.calls[-1]
    assert call["pid"] != os.getpid() and all(_plain(a) for a in call["args"])
    assert call["args"][-1] == ("auto", False, 1, True, 2, 1)
    # 3 frames in windows of 2 overlapping by 1: (0, 1), (1, 2) -> 4 frame evaluations per step
    assert call["duration"] == space.gpu_seconds(4, 2, 1, SIZE, SIZE)
    here = tiny_pipeline()
    np.testing.assert_array_equal(out, here.generate_long(x["ref"], x["poses"], x["ref_pose"],
                                                          window=2, overlap=1, **kw))
    here.set_offload(False)
    bf = space.pipeline_factory(None, "bf16")
    assert bf.precision == "bf16"
    out = bf.generate_segment(x["ref"], x["poses"], x["ref_pose"], num_frames=FRAMES, seed=3,
                              num_inference_steps=2)
    np.testing.assert_array_equal(out, tiny_pipeline().with_precision("bf16").generate_segment(
        x["ref"], x["poses"], x["ref_pose"], seed=3, num_inference_steps=2))
    assert next(tiny_pipeline().unet.parameters()).dtype.is_floating_point
    assert str(next(tiny_pipeline().unet.parameters()).dtype) == "torch.float32"
    with pytest.raises(InputError, match="precision must be one of"):
        space.pipeline_factory(None, "fp8")


def test_no_spaces_package_runs_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    import unianimate.space as space
    monkeypatch.setitem(__import__("sys").modules, "spaces", None)  # import spaces -> ImportError
    importlib.reload(space)
    try:
        fn = space.gpu(duration=10)(len)
        assert fn is len
        assert not space.on_space() or os.environ.get("SPACE_ID")
        assert space.gpu_seconds(32, 30, 2, 768, 512) == space.SECONDS_OVERHEAD + round(
            32 * 30 * 2 * space.SECONDS_PER_FRAME_STEP)
        assert space.gpu_seconds(16, 30, 1, 768, 1216) > space.gpu_seconds(16, 30, 1, 768, 512)
    finally:
        monkeypatch.undo()
        importlib.reload(space)


def test_app_on_a_space_builds_the_model_at_start_up(tmp_path: Path) -> None:
    """``SPACE_ID`` set (here without the spaces package, so the entry point runs in process):
    the pipeline is built on the CPU before the app serves, and the studio uses the GPU proxy."""
    from tests._net import running_app

    env = dict(os.environ, SPACE_ID="someone/unianimate-test", UNIANIMATE_MODEL="tiny",
               HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    with running_app(tmp_path, env) as (url, log):
        text = log.read_text()
        assert "built on the CPU at start-up" in text
        assert text.index("built on the CPU at start-up") < text.index("Running on local URL")
        from gradio_client import Client
        status = Client(url, verbose=False).predict(api_name="/load_model")
        assert "`--model tiny`, loaded" in status   # built through space.pipeline_factory
