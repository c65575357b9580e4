"""The install files say what the code needs: floors that match the APIs used, the GPU path
ending with onnxruntime-gpu alone, nothing required that is never imported."""
from __future__ import annotations

import ast
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _requirements(name: str) -> dict[str, Requirement]:
    """Every requirement of a file, following ``-r`` includes."""
    out: dict[str, Requirement] = {}
    for raw in (ROOT / name).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r"):
            out.update(_requirements(line[2:].strip()))
            continue
        req = Requirement(line)
        out[req.name.lower().replace("_", "-")] = req
    return out


def _imported_top_level() -> set[str]:
    names: set[str] = set()
    files = [ROOT / "app.py", *(ROOT / "unianimate").rglob("*.py"), *(ROOT / "ui").rglob("*.py"),
             *(ROOT / "bench").rglob("*.py")]
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def test_cpu_and_gpu_paths_have_one_onnx_runtime_each() -> None:
    cpu, gpu = _requirements("requirements.txt"), _requirements("requirements-gpu.txt")
    assert "onnxruntime" in cpu and "onnxruntime-gpu" not in cpu
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu
    assert set(cpu) - {"onnxruntime"} == set(gpu) - {"onnxruntime-gpu", "mamba-ssm",
                                                     "causal-conv1d"}


def test_floors_match_the_apis_used() -> None:
    req = _requirements("requirements.txt")
    # launch(theme=, css=, footer_links=), api_visibility: Gradio 6 (checked: 6.0.0 serves the
    # app, 5.49.1 fails at start with a TypeError)
    assert req["gradio"].specifier.contains("6.0.0") and not req["gradio"].specifier.contains("5.49.1")
    # hf_hub_download(tqdm_class=...): huggingface_hub 1.1 (1.0.0 raises a TypeError)
    assert req["huggingface-hub"].specifier.contains("1.1.0")
    assert not req["huggingface-hub"].specifier.contains("1.0.0")
    # Pillow 10.0-12.x resample the CLIP input as 10.2 did; 13.0 does not
    pillow = req["pillow"].specifier
    assert all(pillow.contains(v) for v in ("10.2.0", "12.3.0")) and not pillow.contains("13.0.0")


def test_nothing_required_that_is_never_imported() -> None:
    imported = _imported_top_level()
    req = _requirements("requirements.txt")
    assert "imageio" not in req and "imageio" not in imported
    assert "imageio-ffmpeg" in req and "imageio_ffmpeg" in imported


def test_dwpose_says_which_provider_it_got(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    import onnxruntime as ort

    from unianimate.pose.dwpose import DWPoseDetector, provider_warning
    from unianimate.pose.synthetic import export_tiny_dwpose

    det_path, pose_path = export_tiny_dwpose(tmp_path, boxes=[(10, 10, 50, 90)], det_scores=[0.9])
    with caplog.at_level(logging.INFO, logger="unianimate.pose.dwpose"):
        det = DWPoseDetector.from_files(det_path, pose_path, providers=["CPUExecutionProvider"])
    assert det.providers[0] == "CPUExecutionProvider"
    assert any("providers CPUExecutionProvider" in r.getMessage() for r in caplog.records)
    # CUDA present but only the CPU provider loaded: a warning that says what to do
    msg = provider_warning(["CPUExecutionProvider"], cuda_present=True)
    assert msg is not None and "requirements-gpu.txt" in msg and "pip uninstall -y onnxruntime" in msg
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "no CUDA provider" in msg
    assert provider_warning(["CPUExecutionProvider"], cuda_present=False) is None
    assert provider_warning(["CUDAExecutionProvider", "CPUExecutionProvider"], True) is None
