"""Issue 11: the VRAM / speed controls (offload, sequential guidance, VAE decode chunk,
precision, the "auto" preset) and the sliding-window long mode as generation options: the
pure preset, the settings' limits, older manifests, the pipeline's per-call switches (output
unchanged by offload and the decode chunk), the studio storing and re-rendering them, and the
ZeroGPU worker carrying them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_studio_flow import new_project, tiny_pipeline
from unianimate.errors import InputError, ProjectError
from unianimate.pipeline import UniAnimatePipeline, check_precision, supported_precisions
from unianimate.studio import (GenerationSettings, SpeedOptions, Studio, speed_preset)
from unianimate.studio.manifest import load_project

GiB = 1024 ** 3
H = W = 64
F = 5


@pytest.fixture(scope="module")
def images() -> dict[str, object]:
    rng = np.random.default_rng(3)
    img = lambda: rng.integers(0, 256, (H, W, 3), dtype=np.uint8)  # noqa: E731
    return {"ref": img(), "poses": [img() for _ in range(F)], "ref_pose": img()}


def _run(pipe: UniAnimatePipeline, im: dict, **kw: object) -> np.ndarray:
    kw.setdefault("num_inference_steps", 2)
    return pipe.generate_segment(im["ref"], im["poses"], im["ref_pose"], seed=4, **kw)


# ---- the pure preset and the settings ---------------------------------------------------------
@pytest.mark.parametrize("vram_gib, expected", [
    (None, ("fp32", False, "off", 8)),
    (6, ("fp16", True, "on", 1)),
    (11.9, ("fp16", True, "on", 1)),
    (12, ("fp16", False, "on", 2)),
    (16, ("fp16", False, "on", 2)),
    (24, ("fp16", False, "off", 4)),
    (40, ("fp16", False, "off", 4)),
    (48, ("fp16", False, "off", 8)),
    (80, ("fp16", False, "off", 8)),
])
def test_auto_preset_from_gpu_memory(vram_gib: float | None, expected: tuple) -> None:
    p = speed_preset(None if vram_gib is None else int(vram_gib * GiB))
    assert (p.precision, p.sequential_guidance, p.offload, p.decode_chunk) == expected
    assert p.reason
    # both halves are valid as they are
    GenerationSettings().with_changes(**p.settings_changes())
    assert p.options().validated() == SpeedOptions(offload=expected[2], decode_chunk=expected[3])


def test_preset_never_asks_for_more_memory_as_memory_shrinks() -> None:
    sizes = [None] + [g * GiB for g in (80, 48, 40, 24, 16, 12, 8, 4)]
    presets = [speed_preset(v) for v in sizes[1:]]
    chunks = [p.decode_chunk for p in presets]
    assert chunks == sorted(chunks, reverse=True)
    offload = [p.offload == "on" for p in presets]
    assert offload == sorted(offload)                   # once on, on for every smaller GPU
    with pytest.raises(InputError, match="GPU memory"):
        speed_preset(0)
    with pytest.raises(InputError, match="GPU memory"):
        speed_preset(True)  # type: ignore[arg-type]


def test_settings_limits_and_older_manifests() -> None:
    st = GenerationSettings()
    assert (st.sequential_guidance, st.precision, st.long_mode, st.window, st.overlap) == \
        (False, "auto", False, 32, 8)
    assert GenerationSettings.limit("window").span(ui=True) == "4..64"
    assert GenerationSettings.limit("overlap").span(ui=True) == "0..32"
    changed = st.with_changes(sequential_guidance="on", precision="bf16", long_mode=True,
                              window="24", overlap=6.0)
    assert (changed.sequential_guidance, changed.precision, changed.window, changed.overlap) == \
        (True, "bf16", 24, 6)
    with pytest.raises(InputError, match="overlap=8 .must be below window=8"):
        st.with_changes(window=8)
    with pytest.raises(InputError, match="precision='fp8'"):
        st.with_changes(precision="fp8")
    with pytest.raises(InputError, match="window=1 "):
        st.with_changes(window=1)
    # a manifest written before these fields: the defaults, i.e. exactly how it was made
    old = {k: v for k, v in st.__dict__.items()
           if k not in ("sequential_guidance", "precision", "long_mode", "window", "overlap")}
    assert GenerationSettings.from_dict(old) == st
    with pytest.raises(ProjectError):
        GenerationSettings.from_dict({**old, "offload": "on"})    # a run option, not a setting


def test_speed_options_are_checked() -> None:
    assert SpeedOptions().pipeline_kwargs() == {"offload": None, "decode_chunk": 2}
    assert SpeedOptions("off", 1).pipeline_kwargs() == {"offload": False, "decode_chunk": 1}
    with pytest.raises(InputError, match="VAE decode chunk .frames. must be a whole number in "
                                         "1..128"):
        SpeedOptions(decode_chunk=0).validated()
    with pytest.raises(InputError, match="offload must be one of auto, on, off"):
        SpeedOptions(offload="yes").validated()


def test_cpu_precisions() -> None:
    assert supported_precisions("cpu") == ("auto", "fp32", "bf16")
    assert check_precision("bf16", "cpu") == "bf16"
    with pytest.raises(InputError, match="precision 'fp16' is not supported on the CPU"):
        check_precision("fp16", "cpu")


# ---- the pipeline's per-call switches (fp32, CPU, tiny model) ------------------------------
def test_offload_and_decode_chunk_leave_the_output_unchanged(images: dict) -> None:
    pipe = tiny_pipeline()
    base = _run(pipe, images)
    assert not pipe.offload
    np.testing.assert_array_equal(_run(pipe, images, offload=True), base)
    assert pipe.offload                       # the switch stays as set for later calls
    np.testing.assert_array_equal(_run(pipe, images, offload=False), base)
    # the decode chunk: CPU convolution kernels depend on the batch size, so a frame decoded
    # in a batch of another size may round one channel of a pixel to the next level (measured:
    # at most 1 level, on 0.002 % of the values); the latents are the same. That is why a
    # candidate records its chunk and a re-render reuses it.
    latent = _run(pipe, images, output_type="latent")
    for chunk in (1, 3, 4, F, 16):
        out = _run(pipe, images, decode_chunk=chunk)
        assert np.abs(out.astype(int) - base.astype(int)).max() <= 1
        assert (out != base).mean() < 1e-3
        np.testing.assert_array_equal(_run(pipe, images, decode_chunk=chunk), out)
        torch.testing.assert_close(_run(pipe, images, decode_chunk=chunk, output_type="latent"),
                                   latent, rtol=0, atol=0)


def test_with_precision_copies_the_unet_and_keeps_the_source(images: dict) -> None:
    pipe = tiny_pipeline()
    same = pipe.with_precision("fp32")
    assert same.unet is not pipe.unet and same.clip is pipe.clip
    np.testing.assert_array_equal(_run(same, images), _run(pipe, images))
    bf = pipe.with_precision("bf16")
    assert bf.precision == "bf16" and bf.unet.dtype == torch.bfloat16
    assert pipe.precision == "fp32" and next(pipe.unet.parameters()).dtype == torch.float32
    out = _run(bf, images, output_type="latent")
    ref = _run(pipe, images, output_type="latent")
    assert torch.isfinite(out).all() and not torch.equal(out, ref)
    assert (out - ref).abs().mean() < 0.1 * ref.abs().mean()
    with pytest.raises(InputError, match="not supported on the CPU"):
        pipe.with_precision("fp16")


# ---- the studio: stored with the candidate, re-rendered -------------------------------------
def test_studio_stores_and_rerenders_speed_and_long_mode(tmp_path: Path) -> None:
    built: list[str] = []

    def factory(report, precision: str = "auto"):  # noqa: ANN001 - the port's signature
        built.append(precision)
        return tiny_pipeline(report, precision)

    studio = Studio(tmp_path / "projects", pipeline_factory=factory)
    p = new_project(studio, tmp_path, poses=10, candidates=1, frames_per_segment=7,
                    sequential_guidance=True)
    [seq] = studio.generate_candidates(p.id, speed=SpeedOptions(decode_chunk=1))
    assert seq.settings.sequential_guidance and seq.decode_chunk == 1 and built == ["auto"]
    # the pipeline ran the two guidance passes as two calls, on the project's own inputs
    gen = studio.generation
    project = load_project(studio.store.folder(p.id))
    inputs = gen._segment_inputs(project, project.segment("s0"))
    pipe = tiny_pipeline()
    direct = pipe.generate_segment(inputs["reference"], inputs["poses"], inputs["ref_pose"],
                                   seed=seq.seed, num_inference_steps=2, batch_guidance=False,
                                   decode_chunk=1)
    saved = studio.candidate_frames(p.id, "s0", seq.id)
    np.testing.assert_array_equal(saved, direct)
    np.testing.assert_array_equal(studio.rerender(p.id, "s0", seq.id), saved)

    # long mode: windows of 4 frames overlapping by 2 over the 7 frames of the segment
    studio.set_settings(p.id, sequential_guidance=False, long_mode=True, window=4, overlap=2)
    [long] = studio.reroll(p.id, "s0", n=1)
    assert (long.settings.long_mode, long.settings.window, long.settings.overlap) == (True, 4, 2)
    direct = pipe.generate_long(inputs["reference"], inputs["poses"], inputs["ref_pose"],
                                seed=long.seed, num_inference_steps=2, noise_prior_t=949,
                                window=4, overlap=2)
    saved = studio.candidate_frames(p.id, "s0", long.id)
    np.testing.assert_array_equal(saved, direct)
    again = Studio(studio.root, pipeline_factory=factory).rerender(p.id, "s0", long.id)
    np.testing.assert_array_equal(again, saved)

    # precision: the engines build the model again in bf16; a re-render of the fp32 candidate
    # builds fp32 ("auto" here) again and gives its frames back
    studio.set_settings(p.id, long_mode=False, precision="bf16")
    [bf] = studio.reroll(p.id, "s0", n=1)
    assert bf.settings.precision == "bf16" and built[-1] == "bf16"
    assert bf.decode_chunk == SpeedOptions().decode_chunk
    np.testing.assert_array_equal(studio.rerender(p.id, "s0", seq.id),
                                  studio.candidate_frames(p.id, "s0", seq.id))
    assert built[-1] == "auto"
    with pytest.raises(InputError, match="offload must be one of"):
        studio.generate_candidates(p.id, speed=SpeedOptions(offload="maybe"))


def test_model_manager_builds_the_asked_precision() -> None:
    from unianimate.compose import ModelManager
    models = ModelManager("tiny", device="cpu")
    assert models.vram_bytes() is None and models.precision_choices() == ("auto", "fp32", "bf16")
    assert models.pipeline_factory(None, "bf16").precision == "bf16"
    assert models.pipeline_factory(None).precision == "fp32"
    with pytest.raises(InputError, match="not supported on the CPU"):
        models.pipeline_factory(None, "fp16")


@pytest.mark.gpu
def test_cuda_offload_and_precisions(images: dict) -> None:
    """On a GPU: offload on/off gives the same frames (fp32 and fp16), CLIP and the VAE wait on
    the CPU with offload, and every precision the GPU supports runs (bf16 where supported)."""
    gpu = UniAnimatePipeline.tiny(seed=0, device="cuda", dtype="fp32", offload=False)
    base = _run(gpu, images)
    on = _run(gpu, images, offload=True)
    assert next(gpu.vae.model.parameters()).device.type == "cpu"
    np.testing.assert_array_equal(on, base)
    half = gpu.with_precision("fp16")
    assert half.precision == "fp16" and gpu.precision == "fp32"
    np.testing.assert_array_equal(_run(half, images, offload=True),
                                  _run(half, images, offload=False))
    for precision in supported_precisions("cuda"):
        out = _run(gpu.with_precision(precision), images)
        assert out.shape == base.shape and np.abs(out.astype(int) - base).mean() < 8


def test_gpu_memory_can_be_told_for_a_zerogpu_space(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a ZeroGPU Space the main process sees no GPU: UNIANIMATE_VRAM_GB tells the preset
    what the worker gets, and every precision is offered (the worker checks its GPU)."""
    from unianimate.compose import ModelManager
    models = ModelManager("tiny", device="cpu")
    monkeypatch.setenv("UNIANIMATE_VRAM_GB", "70")
    assert models.vram_bytes() == 70 * GiB
    assert speed_preset(models.vram_bytes()).decode_chunk == 8
    assert models.precision_choices() == ("auto", "fp32", "fp16", "bf16")
    monkeypatch.setenv("UNIANIMATE_VRAM_GB", "lots")
    with pytest.raises(InputError, match="UNIANIMATE_VRAM_GB must be a number of GB"):
        models.vram_bytes()
