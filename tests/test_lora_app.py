"""LoRA adapters in the app (issue 13): ``app.py --lora/--lora-dir``, the model name that records
the adapter and its hash (so candidates say which adapter made them), the UI's "LoRA adapter"
choice switching the model, and no adapter = today's name and frames bit for bit. Tiny real
components: a tiny weights folder and adapters written by the real ``save_lora``."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")
pytest.importorskip("peft")

import app  # noqa: E402
from ui.blocks import GPU_ID, build_ui  # noqa: E402
from ui.handlers import StudioHandlers  # noqa: E402
from ui.runtime import ModelManager, build_studio  # noqa: E402
from unianimate.errors import InputError  # noqa: E402
from unianimate.models.config import UNetConfig  # noqa: E402
from unianimate.models.unet import UniAnimateUNet  # noqa: E402
from unianimate.pipeline import UniAnimatePipeline  # noqa: E402

ASSETS = Path(__file__).resolve().parent.parent / "assets"
REF = str(ASSETS / "example_reference.png")
DANCE = str(ASSETS / "example_dance.json")
ALICE = "a" * 32
BASE_NAME = "tiny test files"         # the model name of tests.test_pipeline's weights folder
FRAMES, STEPS = 3, 2


def _write_adapter(path: Path, seed: int) -> Path:
    """A rank-2 adapter for the tiny UNet, written by the real ``save_lora``, with non-zero
    ``lora_B`` (a freshly injected adapter is zero: it would change nothing)."""
    from unianimate.training.lora import add_lora, save_lora
    unet = UniAnimateUNet(UNetConfig.tiny())
    add_lora(unet, rank=2)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return save_lora(unet, path)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.test_pipeline import _write_tiny_weights
    root = tmp_path_factory.mktemp("lora")
    _write_tiny_weights(root / "weights")
    adapters = root / "adapters"
    adapters.mkdir()
    _write_adapter(adapters / "style_a.safetensors", seed=1)
    _write_adapter(adapters / "style_b.safetensors", seed=2)
    (adapters / "notes.txt").write_text("not an adapter")
    (adapters / "nested").mkdir()
    _write_adapter(adapters / "nested" / "deep.safetensors", seed=3)
    return {"weights": root / "weights", "adapters": adapters}


def _sha12(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _frames(pipe: UniAnimatePipeline) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # noqa: E731
    ref, poses, ref_pose = img(), [img() for _ in range(FRAMES)], img()
    return pipe.generate_segment(ref, poses, ref_pose, num_inference_steps=STEPS, seed=3)


def test_adapter_changes_the_model_name_and_the_output(files: dict[str, Path]) -> None:
    weights, a = str(files["weights"]), files["adapters"] / "style_a.safetensors"
    plain = ModelManager(weights, device="cpu").pipeline_factory()
    # no adapter: today's name and today's frames, bit for bit
    assert plain.model_name == BASE_NAME
    today = UniAnimatePipeline.from_pretrained(weights, device="cpu")
    base_frames = _frames(plain)
    np.testing.assert_array_equal(base_frames, _frames(today))

    with_a = ModelManager(weights, device="cpu", lora=a).pipeline_factory()
    assert with_a.model_name == f"{BASE_NAME} + LoRA style_a.safetensors (sha256 {_sha12(a)})"
    assert not np.array_equal(_frames(with_a), base_frames)
    # another adapter file (other bytes) is another model
    b = files["adapters"] / "style_b.safetensors"
    with_b = ModelManager(weights, device="cpu", lora=b).pipeline_factory()
    assert _sha12(b) in with_b.model_name and with_b.model_name != with_a.model_name


def test_app_flags_are_validated(files: dict[str, Path], tmp_path: Path) -> None:
    args = app.parse_args([])
    assert args.lora is None and args.lora_dir is None
    weights, adapters = str(files["weights"]), files["adapters"]

    def models(*argv: str) -> ModelManager:
        return app.build_models(app.parse_args(["--model", weights, *argv]))

    assert models("--lora", str(adapters / "style_a.safetensors")).lora_name == "style_a.safetensors"
    with pytest.raises(InputError, match=r"--lora: no adapter file 'gone.safetensors'") as info:
        models("--lora", str(tmp_path / "gone.safetensors"))
    assert str(tmp_path) not in str(info.value)          # no server path in the message
    with pytest.raises(InputError, match=r"--lora-dir: 'nowhere' is not a folder"):
        models("--lora-dir", str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="--lora-dir needs the released weights.*not --model tiny"):
        app.build_models(app.parse_args(["--model", "tiny", "--lora-dir", str(adapters)]))
    with pytest.raises(InputError, match="--lora needs the released weights.*not --model tiny"):
        app.build_models(app.parse_args(["--model", "tiny", "--lora",
                                         str(adapters / "style_a.safetensors")]))
    # with --lora-dir, --lora names one of its files (a bare name is enough) ...
    m = models("--lora-dir", str(adapters), "--lora", "style_b.safetensors")
    assert m.lora_choice() == "style_b.safetensors"
    assert m.lora_choices() == ["none", "style_a.safetensors", "style_b.safetensors"]
    # ... and nothing outside it
    with pytest.raises(InputError, match="--lora: 'deep.safetensors' is not an adapter file of "
                                         "--lora-dir"):
        models("--lora-dir", str(adapters), "--lora", str(adapters / "nested" / "deep.safetensors"))
    with pytest.raises(SystemExit, match="app.py: --lora-dir: 'nowhere' is not a folder"):
        app.main(["--model", weights, "--lora-dir", str(tmp_path / "nowhere"),
                  "--projects-dir", str(tmp_path / "p")])


def _ui(files: dict[str, Path], tmp_path: Path, **kw: object) -> StudioHandlers:
    models = ModelManager(str(files["weights"]), device="cpu", lora_dir=files["adapters"], **kw)
    studio = build_studio(tmp_path / "projects", models, detector_factory=lambda: None)
    return StudioHandlers(studio, models)


def _error(fn, *args) -> str:  # noqa: ANN001
    with pytest.raises(gr.Error) as info:
        fn(*args)
    return str(info.value.message)


def test_a_bad_adapter_name_from_the_ui_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    ui = _ui(files, tmp_path)
    for bad in ("nested/deep.safetensors", "../adapters/style_a.safetensors", "notes.txt",
                str(files["adapters"] / "style_a.safetensors"), "missing.safetensors", 3):
        msg = _error(ui.select_lora, bad)
        assert msg.startswith("LoRA adapter must be one of none, style_a.safetensors, "
                              "style_b.safetensors; got"), msg
        assert str(files["adapters"].parent) not in msg
    assert ui.models.lora is None
    # without --lora-dir there is nothing to choose; the tiny model takes no adapter
    plain = ModelManager(str(files["weights"]), device="cpu")
    ui2 = StudioHandlers(build_studio(tmp_path / "p2", plain), plain)
    assert "start the app with --lora-dir" in _error(ui2.select_lora, "style_a.safetensors")
    tiny = ModelManager("tiny")
    ui3 = StudioHandlers(build_studio(tmp_path / "p3", tiny), tiny)
    assert "not for --model tiny" in _error(ui3.select_lora, "style_a.safetensors")


def test_the_dropdown_is_there_only_with_lora_dir(files: dict[str, Path], tmp_path: Path) -> None:
    ui = _ui(files, tmp_path, lora="style_a.safetensors")
    demo = build_ui(ui.studio, ui.models, handlers=ui)
    picks = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "lora-adapter"]
    assert len(picks) == 1 and picks[0].label == "LoRA adapter"
    assert [c[1] for c in picks[0].choices] == ["none", "style_a.safetensors",
                                               "style_b.safetensors"]
    assert picks[0].value == "style_a.safetensors"
    dep = next(d for d in demo.fns.values() if d.api_name == "select_lora")
    assert dep.concurrency_id == GPU_ID and dep.concurrency_limit == 1
    # "Refresh status" lists the folder again: a file copied in later shows up
    own = tmp_path / "own"
    own.mkdir()
    shutil.copy(files["adapters"] / "style_a.safetensors", own / "one.safetensors")
    mine = ModelManager(str(files["weights"]), device="cpu", lora_dir=own)
    h = StudioHandlers(build_studio(tmp_path / "p1", mine), mine)
    shutil.copy(files["adapters"] / "style_b.safetensors", own / "two.safetensors")
    assert h.lora_choices() == {"__type__": "update", "value": "none",
                                "choices": ["none", "one.safetensors", "two.safetensors"]}
    plain = ModelManager(str(files["weights"]), device="cpu")
    demo2 = build_ui(build_studio(tmp_path / "p2", plain), plain)
    assert not [b for b in demo2.blocks.values() if getattr(b, "elem_id", None) == "lora-adapter"]
    assert not any(d.api_name == "select_lora" for d in demo2.fns.values())


def _models(ui: StudioHandlers, pid: str) -> list[str | None]:
    """The ``model`` each candidate of the first segment recorded (the project file's)."""
    project = ui.studio.store.load(pid, ui.owner_of(ALICE))
    return [c.model for c in project.segments[0].candidates]


def test_switching_the_adapter_reloads_and_candidates_record_it(
        files: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ui = _ui(files, tmp_path)
    a = files["adapters"] / "style_a.safetensors"
    with_a = f"{BASE_NAME} + LoRA style_a.safetensors (sha256 {_sha12(a)})"
    pid, _, _ = ui.create_project(ALICE, REF, "custom", 64, 64, "crop", "t")
    ui.load_pose_file(ALICE, pid, [DANCE], 0, 0, 1, True)
    assert "LoRA" not in ui.model_line()

    ui.generate_candidates(ALICE, pid, None, FRAMES, STEPS, 2.5, 949, 5, 1)
    assert _models(ui, pid) == [BASE_NAME]             # no adapter: today's name
    plain_pipe = ui.studio.engines._animator
    assert ui.studio.pipeline_info()["model_name"] == BASE_NAME

    status = ui.select_lora("style_a.safetensors")
    assert "style_a.safetensors" in status and ui.models.lora_choice() == "style_a.safetensors"
    assert not ui.studio.pipeline_info()["loaded"]     # dropped: the next use loads it again
    assert "+ LoRA adapter `style_a.safetensors`" in ui.model_line()
    ui.reroll(ALICE, pid, "s0", 1)
    assert _models(ui, pid) == [BASE_NAME, with_a]     # folded in by the next load
    assert ui.studio.engines._animator is not plain_pipe
    assert f"({with_a}), loaded" in ui.model_line()
    assert with_a in (ui.studio.root / pid / "manifest.json").read_text()  # in the project file

    # choosing the same adapter again keeps the loaded model
    loaded = ui.studio.engines._animator
    ui.select_lora("style_a.safetensors")
    assert ui.studio.engines._animator is loaded
    # a re-render of the candidate made without the adapter says the model differs
    with caplog.at_level(logging.WARNING, logger="unianimate.studio.generation"):
        ui.studio.rerender(pid, "s0", "c0", owner=ui.owner_of(ALICE))
    assert any("it was made with tiny test files" in r.getMessage() for r in caplog.records)
    # back to none: today's name and frames again
    ui.select_lora("none")
    assert ui.models.lora is None and not ui.studio.pipeline_info()["loaded"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="unianimate.studio.generation"):
        again = ui.studio.rerender(pid, "s0", "c0", owner=ui.owner_of(ALICE))
    assert not [r for r in caplog.records if "frames will differ" in r.getMessage()]
    assert ui.studio.pipeline_info()["model_name"] == BASE_NAME
    np.testing.assert_array_equal(again, ui.studio.candidate_frames(pid, "s0", "c0",
                                                                     owner=ui.owner_of(ALICE)))


def test_a_space_builds_its_start_up_model_with_the_adapter(
        files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from unianimate import space
    monkeypatch.setattr(space, "_CPU_PIPELINE", None)
    a = files["adapters"] / "style_a.safetensors"
    pipe = space.load_cpu_pipeline(str(files["weights"]), lora=a)
    assert pipe.model_name == f"{BASE_NAME} + LoRA style_a.safetensors (sha256 {_sha12(a)})"
    assert space.SpacePipeline(pipe).model_name == pipe.model_name
    # --lora-dir cannot switch a model built once at start-up: refused on a Space
    monkeypatch.setenv("SPACE_ID", "someone/studio")
    with pytest.raises(InputError, match="--lora-dir is not available on a ZeroGPU Space"):
        app.build_models(app.parse_args(["--model", str(files["weights"]),
                                         "--lora-dir", str(files["adapters"])]))
