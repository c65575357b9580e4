"""A small, exact-resume training loop: AdamW, EMA, gradient accumulation, autocast, checkpoints,
progress with ETA, a loss log (CSV) and a loss-curve PNG.

The loop knows nothing about diffusion: a ``loss_fn(model, batch_index, generator)`` returns a scalar
loss for micro-batch ``batch_index`` (the data position), drawing every random number from
``generator``. A checkpoint stores the model, the EMA, the optimiser, the step, the data position, the
generator's state and torch's global RNG state (dropout), so ``resume`` continues bit for bit as an
uninterrupted run would.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unianimate.errors import InputError
from unianimate.utils import atomic_write_bytes, check_known_keys

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, int, torch.Generator], torch.Tensor]
CHECKPOINT_PREFIX = "ckpt-"


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, EMA and bookkeeping settings of one training stage."""

    lr: float = 1e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    grad_clip: float = 1.0
    grad_accum: int = 1
    ema_decay: float = 0.999
    max_steps: int = 1000
    save_every: int = 100
    log_every: int = 10
    keep_checkpoints: int = 3
    amp: str = "none"  # "none", "bf16" or "fp16" (CUDA autocast)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.amp not in ("none", "bf16", "fp16"):
            raise InputError(f"amp={self.amp!r} must be 'none', 'bf16' or 'fp16'")
        for name in ("grad_accum", "max_steps", "save_every", "log_every", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name}={getattr(self, name)!r} must be a positive integer")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OptimConfig":
        """Build from a dict; unknown keys raise."""
        check_known_keys(cls, data)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


class EMA:
    """Exponential moving average of the trainable parameters (decay warmed up as (1+n)/(10+n))."""

    def __init__(self, params: dict[str, nn.Parameter], decay: float) -> None:
        self.decay = float(decay)
        self.shadow = {k: p.detach().float().clone() for k, p in params.items()}
        self.updates = 0

    @torch.no_grad()
    def update(self, params: dict[str, nn.Parameter]) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, p in params.items():
            self.shadow[k].lerp_(p.detach().float(), 1.0 - d)

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": self.shadow, "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shadow = {k: v.float().clone() for k, v in state["shadow"].items()}
        self.updates = int(state["updates"])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged values into ``model``'s parameters of the same names."""
        named = dict(model.named_parameters())
        for k, v in self.shadow.items():
            named[k].copy_(v.to(named[k].dtype))


def _format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


class Trainer:
    """Trains ``model``'s parameters that require grad with ``loss_fn`` (see the module docstring)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, out_dir: str | os.PathLike, config: OptimConfig,
                 name: str = "train", meta: dict[str, Any] | None = None) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.out_dir = Path(out_dir)
        self.config = config
        self.name = name
        self.meta = dict(meta or {})
        self.params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        if not self.params:
            raise InputError("nothing to train: no parameter of the model requires grad")
        decay, no_decay = [], []
        for k, p in self.params.items():
            (no_decay if p.ndim < 2 else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr, betas=config.betas)
        self.ema = EMA(self.params, config.ema_decay)
        self.generator = torch.Generator().manual_seed(int(config.seed))
        self.step = 0       # optimiser steps done
        self.position = 0   # micro-batches consumed (the data position)
        self.scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
        self.loss_log = self.out_dir / f"{name}_loss.csv"

    # ------------------------------------------------------------------ one step
    def _autocast(self):
        dev = next(iter(self.params.values())).device
        if self.config.amp == "none" or dev.type != "cuda":
            return torch.autocast("cpu", enabled=False)
        return torch.autocast("cuda", dtype=torch.bfloat16 if self.config.amp == "bf16" else torch.float16)

    def _lr(self) -> float:
        w = self.config.warmup_steps
        return self.config.lr * (min(1.0, (self.step + 1) / w) if w > 0 else 1.0)

    def train_step(self) -> float:
        """One optimiser step over ``grad_accum`` micro-batches; returns the mean loss."""
        cfg = self.config
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(cfg.grad_accum):
            with self._autocast():
                loss = self.loss_fn(self.model, self.position, self.generator)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{self.name}: loss is {loss.item()} at step {self.step} "
                                         f"(data position {self.position}); lower the learning rate")
            scaled = loss.float() / cfg.grad_accum
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total += float(loss.detach()) / cfg.grad_accum
            self.position += 1
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), cfg.grad_clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.ema.update(self.params)
        self.step += 1
        return total

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly."""
        return {"name": self.name, "step": self.step, "position": self.position,
                "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "config": self.config.to_dict(), "meta": self.meta}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the model, optimiser and every RNG)."""
        if state.get("name") != self.name:
            raise InputError(f"checkpoint is of stage {state.get('name')!r}, not {self.name!r}")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.position = int(state["step"]), int(state["position"])

    def checkpoint_path(self, step: int) -> Path:
        return self.out_dir / f"{self.name}-{CHECKPOINT_PREFIX}{step:07d}.pt"

    def save(self) -> Path:
        """Atomically write a checkpoint (keeping the newest ``keep_checkpoints``) and the loss curve."""
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        path = self.checkpoint_path(self.step)
        atomic_write_bytes(path, buf.getvalue())
        old = sorted(self.out_dir.glob(f"{self.name}-{CHECKPOINT_PREFIX}*.pt"))
        for p in old[:-self.config.keep_checkpoints]:
            p.unlink(missing_ok=True)
        try:
            write_loss_curve(self.loss_log, self.out_dir / f"{self.name}_loss.png", title=self.name)
        except (OSError, ValueError) as exc:
            logger.warning("could not draw the loss curve: %s", exc)
        logger.info("%s: saved %s", self.name, path.name)
        return path

    def latest_checkpoint(self) -> Path | None:
        found = sorted(self.out_dir.glob(f"{self.name}-{CHECKPOINT_PREFIX}*.pt"))
        return found[-1] if found else None

    def resume(self, path: str | os.PathLike | None = None) -> bool:
        """Load ``path`` or the newest checkpoint of this stage; False when there is none."""
        path = Path(path) if path is not None else self.latest_checkpoint()
        if path is None:
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.load_state_dict(state)
        self._truncate_log()
        logger.info("%s: resumed from %s (step %d, data position %d)", self.name, path.name, self.step,
                    self.position)
        return True

    def _truncate_log(self) -> None:
        """Drop loss-log rows written after the checkpoint (a run killed between saves)."""
        if not self.loss_log.is_file():
            return
        rows = read_loss_log(self.loss_log)
        keep = [r for r in rows if r[0] <= self.step]
        if len(keep) != len(rows):
            self._write_log_rows(keep)

    def _write_log_rows(self, rows: list[tuple[int, float, float, float]]) -> None:
        text = io.StringIO()
        w = csv.writer(text)
        w.writerow(["step", "loss", "lr", "seconds"])
        w.writerows(rows)
        atomic_write_bytes(self.loss_log, text.getvalue().encode())

    # ------------------------------------------------------------------ the run
    def run(self, steps: int | None = None, should_stop: Callable[[], bool] | None = None,
            on_save: Callable[["Trainer"], None] | None = None) -> float:
        """Train until ``max_steps`` (or ``steps`` more); saves every ``save_every`` and at the end.

        Returns the mean loss of the last logging window.
        """
        cfg = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        end = cfg.max_steps if steps is None else min(cfg.max_steps, self.step + int(steps))
        if not self.loss_log.is_file():
            self._write_log_rows([])
        t0, s0 = time.monotonic(), self.step
        window: list[float] = []
        last = float("nan")
        while self.step < end:
            if should_stop is not None and should_stop():
                if self.step != s0 and self.step % cfg.save_every:
                    self.save()  # stopping between saves keeps the work done
                    if on_save is not None:
                        on_save(self)
                logger.info("%s: stopped at step %d", self.name, self.step)
                break
            ts = time.monotonic()
            loss = self.train_step()
            window.append(loss)
            with self.loss_log.open("a", newline="") as fh:
                csv.writer(fh).writerow([self.step, f"{loss:.6f}", f"{self._lr():.3g}",
                                         f"{time.monotonic() - ts:.3f}"])
            if self.step % cfg.log_every == 0 or self.step == end:
                rate = (time.monotonic() - t0) / max(1, self.step - s0)
                last = float(np.mean(window))
                logger.info("%s step %d/%d loss %.4f (%.2f s/step, ETA %s)", self.name, self.step, end, last,
                            rate, _format_eta(rate * (end - self.step)))
                window = []
            if self.step % cfg.save_every == 0 or self.step == end:
                self.save()
                if on_save is not None:
                    on_save(self)
        return last


def read_loss_log(path: str | os.PathLike) -> list[tuple[int, float, float, float]]:
    """Rows (step, loss, lr, seconds) of a loss log."""
    rows = []
    with Path(path).open(newline="") as fh:
        for r in csv.DictReader(fh):
            rows.append((int(r["step"]), float(r["loss"]), float(r["lr"]), float(r["seconds"])))
    return rows


def smooth(values: Iterable[float], window: int) -> np.ndarray:
    """Running mean over ``window`` values (shorter at the start)."""
    v = np.asarray(list(values), dtype=np.float64)
    if len(v) == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def write_loss_curve(log: str | os.PathLike, png: str | os.PathLike, title: str = "loss",
                     size: tuple[int, int] = (640, 360)) -> Path:
    """Draw the loss log (raw in grey, running mean in blue, log-scale y) as a PNG with PIL."""
    from PIL import Image, ImageDraw

    rows = read_loss_log(log)
    w, h = size
    img = Image.new("RGB", (w, h), (255, 255, 255))
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 56, 12, 24, 28
    d.rectangle([left, top, w - right, h - bottom], outline=(0, 0, 0))
    if rows:
        steps = np.array([r[0] for r in rows], dtype=np.float64)
        loss = np.maximum(np.array([r[1] for r in rows]), 1e-8)
        ylo, yhi = math.log10(loss.min()), math.log10(loss.max())
        yhi = yhi if yhi > ylo else ylo + 1.0
        xhi = max(steps.max(), steps.min() + 1)

        def pt(s: float, v: float) -> tuple[float, float]:
            x = left + (s - steps.min()) / (xhi - steps.min()) * (w - left - right)
            y = top + (yhi - math.log10(v)) / (yhi - ylo) * (h - top - bottom)
            return x, y

        d.line([pt(s, v) for s, v in zip(steps, loss)], fill=(190, 190, 190))
        sm = smooth(loss, max(1, len(loss) // 50))
        d.line([pt(s, v) for s, v in zip(steps, sm)], fill=(30, 80, 200), width=2)
        d.text((4, top), f"{10 ** yhi:.3g}", fill=(0, 0, 0))
        d.text((4, h - bottom - 10), f"{10 ** ylo:.3g}", fill=(0, 0, 0))
        d.text((left, h - bottom + 6), f"step {int(steps.min())}", fill=(0, 0, 0))
        d.text((w - right - 90, h - bottom + 6), f"step {int(steps.max())}", fill=(0, 0, 0))
        title = f"{title}: last {sm[-1]:.4f} (running mean)"
    d.text((left, 6), title, fill=(0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(png, buf.getvalue())
    return Path(png)
