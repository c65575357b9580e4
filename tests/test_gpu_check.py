"""bench/gpu_check.sh parses and its Python parts run (the CPU dry-run path; the real check
needs a CUDA machine)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_script_parses() -> None:
    subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_check.sh")], check=True)


def test_python_parts_run_on_cpu(tmp_path: Path) -> None:
    for what in ("mamba", "table"):
        proc = subprocess.run([sys.executable, "bench/gpu_check.py", what, "--device", "cpu",
                               "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert proc.returncode == 0, proc.stderr
    table = proc.stdout
    assert "| mamba pure scan" in table and "| mamba kernel" in table and "skipped" in table
