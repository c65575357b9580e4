"""Shared benchmark helpers: timing with warmup, peak memory (CPU and CUDA), a printed table, JSON.

Peak memory method:
  * CPU: :class:`PeakMemory` reads VmRSS from ``/proc/self/status``, resets the kernel's peak-RSS
    counter (writes "5" to ``/proc/self/clear_refs``, Linux >= 4.0, so VmHWM restarts at the
    current RSS), runs the measured code, then reads VmHWM. ``growth`` = VmHWM - RSS before: what
    the measured code added at its peak (weights and inputs built before are excluded, every
    temporary is included). When clear_refs cannot be written the counter is not reset and
    ``peak_reset`` is False (the peak may then include earlier work; run each measurement in a
    fresh process, as the bench scripts do).
  * CUDA: ``torch.cuda.reset_peak_memory_stats`` before; ``growth`` = max_memory_allocated -
    memory_allocated before (the caching allocator's view, not nvidia-smi).
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
MIB = 1024 * 1024


def _proc_status_kib(field_name: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM) in KiB, or None where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    """Current resident set size of this process."""
    kib = _proc_status_kib("VmRSS")
    return None if kib is None else kib * 1024


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS counter at the current RSS; False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def sync(device: torch.device) -> None:
    """Wait for queued device work so wall times are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class PeakMemory:
    """Context manager measuring the peak memory growth of the code inside it (see module doc)."""

    device: torch.device
    before: int = 0
    peak: int = 0
    peak_reset: bool = True

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            self.peak_reset = reset_peak_rss()
            self.before = rss_bytes() or 0
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            hwm = _proc_status_kib("VmHWM")
            self.peak = 0 if hwm is None else hwm * 1024

    @property
    def growth(self) -> int:
        """Bytes added at the peak over what was in use at entry."""
        return max(0, self.peak - self.before)


@dataclass
class Timing:
    """Wall times (seconds) of the measured repeats, warmup excluded, and the CPU time (user + system,
    all threads of the process) each repeat used: on a shared machine the wall time also counts the
    time other processes held the cores, the CPU time does not."""

    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def mean(self) -> float:
        return sum(self.seconds) / len(self.seconds)


def time_fn(fn: Callable[[], Any], device: torch.device, repeat: int = 3, warmup: int = 1) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeat`` times timed (device-synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    timing = Timing()
    for _ in range(max(1, repeat)):
        cpu_start = time.process_time()
        start = time.perf_counter()
        fn()
        sync(device)
        timing.seconds.append(time.perf_counter() - start)
        timing.cpu_seconds.append(time.process_time() - cpu_start)
    return timing


def environment() -> dict[str, Any]:
    """Where the numbers came from (recorded in every JSON)."""
    env: dict[str, Any] = {
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        env["loadavg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name(0)
    return env


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain Markdown table of ``rows`` restricted to ``columns``."""
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join(lines)


def write_json(name: str, payload: dict[str, Any], path: str | os.PathLike | None = None) -> Path:
    """Write ``payload`` (plus the environment) to ``path`` or bench/results/<name>.json."""
    out = Path(path) if path is not None else RESULTS_DIR / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": environment(), **payload}, indent=2) + "\n", encoding="utf-8")
    return out


def mib(n_bytes: int | float) -> str:
    """Human-readable MiB/GiB."""
    return f"{n_bytes / MIB / 1024:.2f} GiB" if n_bytes >= 1024 * MIB else f"{n_bytes / MIB:.0f} MiB"
