"""bench/sampler_quality.py: the image metrics of the --demo hook and the hook itself on a tiny folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import sampler_quality as sq
from tests.test_pipeline import _write_tiny_weights


def test_psnr_and_ssim() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 32, 40, 3), dtype=np.uint8)
    assert sq.psnr(a, a) == float("inf") and sq.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    shifted = np.full_like(a, 128)
    assert sq.psnr(shifted, shifted + 1) == pytest.approx(10 * np.log10(255 ** 2), rel=1e-12)
    noisy = [np.clip(a + rng.normal(0, s, a.shape), 0, 255).astype(np.uint8) for s in (5, 20, 60)]
    scores = [sq.ssim(a, n) for n in noisy]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert sq.ssim(a, noisy[0]) == pytest.approx(sq.ssim(noisy[0], a), rel=1e-12)  # symmetric


def test_demo_hook_on_a_tiny_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "demo"
    assert sq.main(["--demo", str(folder)]) == 2  # absent: says so
    assert "no demo model" in capsys.readouterr().err
    _write_tiny_weights(folder)
    rng = np.random.default_rng(1)
    clip = folder / "eval" / "clip0"
    for sub in ("poses", "frames"):
        (clip / sub).mkdir(parents=True)
    img = lambda: Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))  # noqa: E731
    img().save(clip / "reference.png")
    img().save(clip / "ref_pose.png")
    for i in range(3):
        img().save(clip / "poses" / f"{i:04d}.png")
        img().save(clip / "frames" / f"{i:04d}.png")
    out = tmp_path / "q.json"
    assert sq.main(["--demo", str(folder), "--steps", "2", "--samplers", "ddim,unipc", "--reference-steps", "3",
                    "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "PSNR (dB)" in table and "unipc" in table
    import json
    rows = json.loads(out.read_text())["rows"]
    assert [(r["sampler"], r["steps"], r["unet evals"]) for r in rows] == [("ddim", 3, 4), ("ddim", 2, 3),
                                                                          ("unipc", 2, 2)]
    assert all(np.isfinite(r["PSNR (dB)"]) and -1 < r["SSIM"] < 1 for r in rows)
