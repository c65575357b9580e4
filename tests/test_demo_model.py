"""Shipping the demo model (issue 13): a tiny demo run made by the training code's own stages,
exported with ``python -m unianimate.train export --half`` into a temporary assets folder, loaded
with ``--model demo`` through the composition root, the app's defaults and labels, the CLI.

The run uses 8 latent channels, so nothing on the way may assume SD's 4.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from unianimate import hub
from unianimate.compose import ModelManager, build_studio, choose_model
from unianimate.demo_model import (DEFAULT_DEMO_DIR, DEMO_DIR_ENV, DEMO_MODEL_NAME, MAX_BYTES,
                                   example_files, has_demo_model,
                                   read_defaults)
from unianimate.errors import InputError, WeightsMissingError
from unianimate.models.config import UNetConfig
from unianimate.models.vae import VaeConfig
from unianimate.pipeline import CONFIG_FILENAME, UniAnimatePipeline, _LATENT_RGB, latent_preview

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_REF = REPO / "assets" / "example_reference.png"
EXAMPLE_DANCE = REPO / "assets" / "example_dance.json"
LATENT_CHANNELS = 8


def _tiny_recipe():
    from unianimate.training.demo import DemoRecipe
    from unianimate.training.diffusion import DiffusionConfig
    from unianimate.training.trainer import OptimConfig

    one_step = dict(max_steps=1, save_every=1, log_every=1, warmup_steps=0)
    return DemoRecipe(
        width=64, height=64, frames=2, seed=0,
        vae=VaeConfig(block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=LATENT_CHANNELS,
                      mid_block_add_attention=False, sample_size=64, scaling_factor=1.0),
        unet=UNetConfig.tiny(in_dim=LATENT_CHANNELS, out_dim=LATENT_CHANNELS, dim=16, context_dim=16,
                             head_dim=8, num_heads=2, norm_groups=8),
        clip_width=16, vae_batch=1,
        vae_optim=OptimConfig(lr=1e-3, **one_step), unet_optim=OptimConfig(lr=1e-3, **one_step),
        diffusion=DiffusionConfig(batch_size=1))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo run folder after one VAE step and one UNet step (the real stages, tiny configs)."""
    from unianimate.training.demo import load_or_write_recipe, run_unet_stage, run_vae_stage

    run = tmp_path_factory.mktemp("demo-run")
    recipe = load_or_write_recipe(run, _tiny_recipe())
    assert run_vae_stage(run, recipe, torch.device("cpu"))
    run_unet_stage(run, recipe, torch.device("cpu"), steps=1)
    return run


def _export(run: Path, dest: Path, *extra: str) -> int:
    from unianimate.train import main
    return main(["export", "--run-dir", str(run), "--dest", str(dest), *extra])


@pytest.fixture(scope="module")
def demo_dir(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("assets") / "demo"
    assert _export(run_dir, dest, "--half") == 0
    return dest


@pytest.fixture()
def no_released(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty Hugging Face cache, offline: the released weights are absent."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


def test_latent_preview_takes_any_channel_count() -> None:
    g = torch.Generator().manual_seed(0)
    z4 = torch.randn(1, 4, 3, 5, 6, generator=g)
    # four channels: SD's matrix, exactly as before
    rgb = torch.einsum("cfhw,cr->fhwr", z4[0], _LATENT_RGB)
    before = ((rgb + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(latent_preview(z4), before)
    for c in (1, 3, LATENT_CHANNELS):
        out = latent_preview(torch.randn(1, c, 3, 5, 6, generator=g))
        assert out.shape == (3, 5, 6, 3) and out.dtype == np.uint8
    # eight channels: channel k feeds colour k mod 3; each colour the mean of its channels
    z8 = torch.zeros(1, 8, 1, 2, 2)
    z8[0, 1] = 1.0                      # green has channels 1, 4, 7: mean 1/3
    px = latent_preview(z8)[0, 0, 0]
    assert tuple(px) == (128, round((1 / 3 + 1) * 127.5), 128)


def test_export_writes_half_safetensors_card_and_defaults(run_dir: Path, demo_dir: Path) -> None:
    names = {p.relative_to(demo_dir).as_posix() for p in demo_dir.rglob("*") if p.is_file()}
    assert names == {"unianimate_unet.safetensors", "open_clip_model.safetensors", "vae/config.json",
                     "vae/diffusion_pytorch_model.safetensors", CONFIG_FILENAME, "recipe.json",
                     "trained.json", "defaults.json", "MODEL_CARD.md", "example_reference.png",
                     "example_dance.json"}
    for name in ("unianimate_unet.safetensors", "open_clip_model.safetensors",
                 "vae/diffusion_pytorch_model.safetensors"):
        with safe_open(str(demo_dir / name), "pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        assert "F16" in dtypes and "F32" not in dtypes, (name, dtypes)
    assert sum(p.stat().st_size for p in demo_dir.rglob("*") if p.is_file()) <= MAX_BYTES
    assert json.loads((demo_dir / "trained.json").read_text())["unet_step"] == 1
    card = (demo_dir / "MODEL_CARD.md").read_text()
    assert card.startswith(f"# {DEMO_MODEL_NAME}\n") and "not UniAnimate" in card
    assert "--half --steps 10 --guidance 1`" in card     # the export command that reproduces it
    assert json.loads((demo_dir / CONFIG_FILENAME).read_text())["model_name"] == DEMO_MODEL_NAME
    assert has_demo_model(demo_dir)
    d = read_defaults(demo_dir)
    assert (d.width, d.height, d.frames, d.steps, d.guidance) == (64, 64, 2, 10, 1.0)
    assert not list(demo_dir.parent.glob(".demo*"))      # no staging folder left behind


def test_export_draws_an_in_domain_example_at_the_native_size(demo_dir: Path) -> None:
    """The app's example figure is outside the training domain: the export draws a held-out
    person in the example dance's first pose, and the UI's example row uses it."""
    from unianimate.pose import load_pose_sequence
    from unianimate.training.people import example_for_size

    ref_path, dance_path = demo_example = example_files(demo_dir)
    dance = load_pose_sequence(dance_path)
    with Image.open(ref_path) as im:
        ref = np.asarray(im.convert("RGB"))
    assert ref.shape == (64, 64, 3) and (dance.width, dance.height) == (64, 64)
    again, fitted = example_for_size(load_pose_sequence(EXAMPLE_DANCE), 64, 64)
    assert np.array_equal(ref, again) and len(fitted.poses) == len(dance.poses)
    assert len(np.unique(ref.reshape(-1, 3), axis=0)) > 4        # a drawn person, not a blank
    models = ModelManager("demo", demo_dir=demo_dir)
    assert models.demo_example == demo_example
    assert models.demo_example == (demo_dir / "example_reference.png", demo_dir / "example_dance.json")


def test_from_pretrained_loads_the_export_key_for_key(run_dir: Path, demo_dir: Path) -> None:
    pipe = UniAnimatePipeline.from_pretrained(demo_dir, device="cpu", dtype="fp32")
    assert pipe.model_name == DEMO_MODEL_NAME and pipe.dtype == torch.float32
    ckpt = torch.load(sorted(run_dir.glob("unet-ckpt-*.pt"))[-1], map_location="cpu", weights_only=True)
    weights = {**ckpt["model"], **ckpt["ema"]["shadow"]}
    own = pipe.unet.state_dict()
    assert set(own) == set(weights)
    for key, value in own.items():     # float16 on disk -> float32 in the model, value for value
        assert value.dtype == torch.float32, key
        torch.testing.assert_close(value, weights[key].half().float(), rtol=0, atol=0)
    assert pipe.vae.model.config.latent_channels == LATENT_CHANNELS


def test_export_fails_clearly_over_budget_and_keeps_the_previous_export(
        run_dir: Path, demo_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = (demo_dir / "unianimate_unet.safetensors").read_bytes()
    assert _export(run_dir, demo_dir, "--half", "--max-mb", "0.01") == 2
    assert "budget" in caplog.text and "unianimate_unet.safetensors" in caplog.text
    assert (demo_dir / "unianimate_unet.safetensors").read_bytes() == before
    assert not list(demo_dir.parent.glob(".demo*"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert _export(run_dir, other, "--half") == 2
    assert "not an exported model folder" in caplog.text and (other / "notes.txt").is_file()


def test_a_folder_without_the_safetensors_names_both_files(tmp_path: Path, no_released: None) -> None:
    with pytest.raises(WeightsMissingError) as err:
        hub.resolve_unet(tmp_path)
    assert "unianimate_16f_32f_non_ema_223000.pth" in str(err.value)
    assert "unianimate_unet.safetensors" in str(err.value)
    with pytest.raises(WeightsMissingError) as err:      # the default repos: the released file only
        hub.resolve_unet(None)
    assert "safetensors" not in str(err.value) and len(err.value.tried) == 1


def _example_candidate(models: ModelManager, root: Path) -> np.ndarray:
    """One candidate of the example person and dance at the demo model's size and settings."""
    d = models.demo_defaults
    ref, dance = models.demo_example or (EXAMPLE_REF, EXAMPLE_DANCE)
    studio = build_studio(root, models)
    project = studio.create_project(ref, width=d.width, height=d.height, fit="crop")
    studio.set_settings(project.id, candidates=1, **models.project_settings())
    studio.set_poses_from_file(project.id, dance, frame_interval=1, align=False)
    seg = studio.ensure_root(project.id).id
    [cand] = studio.generate_candidates(project.id, seg)
    assert studio.pipeline_info()["model_name"] == DEMO_MODEL_NAME
    assert cand.status == "done" and cand.model == DEMO_MODEL_NAME
    assert (cand.settings.steps, cand.settings.guidance) == (d.steps, d.guidance)
    frames = studio.candidate_frames(project.id, seg, cand.id)
    assert frames.shape == (d.frames, d.height, d.width, 3) and frames.dtype == np.uint8
    return frames


def test_model_demo_loads_the_folder_and_labels_it(demo_dir: Path, tmp_path: Path) -> None:
    models = ModelManager("demo", demo_dir=demo_dir)
    assert models.is_demo and not models.is_tiny and models.label == DEMO_MODEL_NAME
    assert models.project_settings() == {"frames_per_segment": 2, "steps": 10, "guidance": 1.0}
    assert models.missing() == [] and DEMO_MODEL_NAME in models.status_markdown()
    frames = _example_candidate(models, tmp_path / "projects")
    assert frames.shape == (2, 64, 64, 3) and frames.std() > 0


@pytest.mark.skipif(not has_demo_model(DEFAULT_DEMO_DIR), reason="no demo model shipped in assets/demo")
def test_the_shipped_demo_model_is_within_budget_and_animates_the_example(tmp_path: Path) -> None:
    shipped = [p for p in DEFAULT_DEMO_DIR.rglob("*") if p.is_file() and
               not p.name.startswith("unianimate_zero_y.")]      # the cache is .gitignored
    assert sum(p.stat().st_size for p in shipped) <= MAX_BYTES
    assert (DEFAULT_DEMO_DIR / "MODEL_CARD.md").read_text().startswith(f"# {DEMO_MODEL_NAME}\n")
    models = ModelManager("demo", demo_dir=DEFAULT_DEMO_DIR)
    frames = _example_candidate(models, tmp_path / "projects")
    # ground truth: the example's held-out person drawn in each driving pose
    from unianimate.pose import load_pose_sequence
    from unianimate.training.metrics import moving_psnr
    from unianimate.training.people import example_look, render_person

    d, (ref_path, dance_path) = models.demo_defaults, models.demo_example
    poses = load_pose_sequence(dance_path).poses[:d.frames]
    truth = np.stack([render_person(p, example_look(), d.width, d.height) for p in poses])
    with Image.open(ref_path) as im:
        ref = np.asarray(im.convert("RGB"))
    repeated = np.repeat(ref[None], d.frames, axis=0)
    assert moving_psnr(frames, truth, ref) > moving_psnr(repeated, truth, ref) + 1.0


def test_demo_is_the_default_only_when_shipped_and_released_weights_are_absent(
        demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_released: None) -> None:
    monkeypatch.setenv(DEMO_DIR_ENV, str(demo_dir))
    assert choose_model("auto") == "demo" and ModelManager("auto").is_demo
    assert choose_model("real") == "real" and choose_model("tiny") == "tiny"
    empty = tmp_path / "no-demo"
    empty.mkdir()
    monkeypatch.setenv(DEMO_DIR_ENV, str(empty))
    models = ModelManager("auto")
    assert models.spec == "real" and not models.is_demo and models.label == "UniAnimate"
    with pytest.raises(InputError, match="no demo model in the folder 'no-demo'"):
        ModelManager("demo")
    # the released weights in the cache win over the demo model
    monkeypatch.setenv(DEMO_DIR_ENV, str(demo_dir))
    monkeypatch.setattr("unianimate.compose.released_weights_present", lambda: True)
    assert choose_model("auto") == "real"


def test_app_starts_the_demo_model_on_its_example_at_its_size(demo_dir: Path, tmp_path: Path) -> None:
    from ui.blocks import _examples, _first_inputs
    from ui.handlers import StudioHandlers

    models = ModelManager("demo", demo_dir=demo_dir)
    ref, dance = demo_dir / "example_reference.png", demo_dir / "example_dance.json"   # its own example
    [row] = _examples(models)
    assert row == [str(ref), [str(dance)], "custom", 64, 64, "crop"]
    first = _first_inputs(models)
    assert (first["reference"], first["pose_files"], first["width"], first["height"]) == \
        (str(ref), [str(dance)], 64, 64)
    assert _first_inputs(ModelManager("tiny"))["reference"] is None
    h = StudioHandlers(build_studio(tmp_path / "p", models), models)
    assert h.model_line() == f"**Model:** {DEMO_MODEL_NAME}."
    assert h.new_project_settings == {"frames_per_segment": 2, "steps": 10, "guidance": 1.0}
    tiny = ModelManager("tiny")
    assert "output is noise" in StudioHandlers(build_studio(tmp_path / "t", tiny), tiny).model_line()


def test_cli_model_demo_uses_its_native_size(demo_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from unianimate.__main__ import EXIT_OK, main
    from unianimate.video.writer import probe_media

    monkeypatch.setenv(DEMO_DIR_ENV, str(demo_dir))
    out = tmp_path / "o.mp4"
    code = main(["--reference", str(EXAMPLE_REF), "--driving", str(EXAMPLE_DANCE), "--out", str(out),
                 "--model", "demo", "--max-segments", "1", "--frame-interval", "1", "--no-align",
                 "--projects-root", str(tmp_path / "projects")])
    assert code == EXIT_OK
    info = probe_media(out)
    assert (info.width, info.height, info.frames) == (64, 64, 2)


def test_sampler_bench_scores_the_export_on_heldout_clips(demo_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """bench/sampler_quality.py --demo on an exported model without eval/: the generator's held-out
    clips at the model's native size, with the demo model's own measures."""
    from bench import sampler_quality as sq

    out = tmp_path / "q.json"
    assert sq.main(["--demo", str(demo_dir), "--clips", "1", "--steps", "2", "--samplers", "ddim",
                    "--reference-steps", "2", "--json", str(out)]) == 0
    assert "pose following" in capsys.readouterr().out
    (row,) = json.loads(out.read_text())["rows"]
    assert row["clips"] == 1 and 0.0 <= row["pose following"] <= 1.0
    assert np.isfinite(row["moving PSNR (dB)"]) and np.isfinite(row["PSNR (dB)"])


def test_demo_quality_bench_runs_every_table_on_a_tiny_export(demo_dir: Path, tmp_path: Path) -> None:
    """``bench/demo_quality.py`` end to end (held-out table, steps sweep, long videos) on the tiny
    export: every number it reports is finite and the JSON holds each table."""
    from bench import demo_quality

    out = tmp_path / "q.json"
    assert demo_quality.main(["--model", str(demo_dir), "--clips", "1", "--steps", "2", "--threads", "1",
                              "--sheet", str(tmp_path / "sheet.png"), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["model"] for r in res["table"]][0] == "reference repeated" and len(res["table"]) == 4
    assert [r["steps"] for r in res["steps_sweep"]] == [5, 10, 20, 30]
    assert [r["method"] for r in res["long"]] == ["continuation, guard off", "continuation, guard on",
                                                  "sliding window"]
    for row in res["table"] + res["steps_sweep"] + res["long"]:
        assert all(np.isfinite(v) for v in row.values() if isinstance(v, float)), row
    assert (tmp_path / "sheet.png").is_file()
