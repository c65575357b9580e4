"""The model side of a studio: the animator and the pose detector, each built on first use
from the factories the composition root gave (:mod:`unianimate.studio.ports`)."""
from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

from unianimate.errors import UniAnimateError
from unianimate.studio.jobs import Progress, ProgressFn, report
from unianimate.studio.ports import Animator, AnimatorFactory, PoseDetector, PoseDetectorFactory

log = logging.getLogger(__name__)


class Engines:
    """Lazy animator and pose detector. Factory errors (e.g. WeightsMissingError) propagate with
    their message; a later call tries again."""

    def __init__(self, animator_factory: AnimatorFactory | None = None,
                 detector_factory: PoseDetectorFactory | None = None) -> None:
        self.animator_factory = animator_factory
        self.detector_factory = detector_factory
        self._animator: Animator | None = None
        self._precision = "auto"          # what the animator was built for
        self._lock = threading.Lock()
        self._detector: PoseDetector | None = None

    def pipeline(self, progress: ProgressFn | None = None, precision: str = "auto") -> Animator:
        """The animator in ``precision`` ("auto": the factory's default), built on first call
        and built again when another precision is asked for (the old one is dropped first, so
        two copies never share the memory; loading progress goes to ``progress``)."""
        with self._lock:
            current = self._animator
            if current is not None and (precision == self._precision or (
                    precision != "auto" and getattr(current, "precision", None) == precision)):
                return current
            if self.animator_factory is None:
                raise UniAnimateError("no model is configured: start the app with --model tiny or "
                                      "a model repo/folder")
            if current is not None:
                log.info("precision %s asked for (the model runs in %s): rebuilding it",
                         precision, getattr(current, "precision", "?"))
                self._animator = current = None
                gc.collect()
            report(progress, Progress("loading", message="loading model weights"))

            def say(message: str) -> None:
                log.info("model: %s", message)
                report(progress, Progress("loading", message=str(message)))

            t0 = time.monotonic()
            self._animator = (self.animator_factory(say) if precision == "auto"
                              else self.animator_factory(say, precision))
            self._precision = precision
            log.info("pipeline %s ready in %.1f s", self._animator.model_name,
                     time.monotonic() - t0)
            return self._animator

    def drop(self) -> bool:
        """Forget the built animator (the next :meth:`pipeline` call builds it again from the
        factory, e.g. after the model's LoRA adapter changed); True when one was built."""
        with self._lock:
            had = self._animator is not None
            self._animator = None
            self._precision = "auto"
        if had:
            gc.collect()
            log.info("model dropped: the next generation loads it again")
        return had

    def pipeline_info(self) -> dict[str, Any]:
        """{"loaded": bool, "model_name": str | None, "is_tiny": bool | None} (loads nothing)."""
        pipe = self._animator
        if pipe is None:
            return {"loaded": False, "model_name": None, "is_tiny": None}
        return {"loaded": True, "model_name": pipe.model_name, "is_tiny": bool(pipe.is_tiny)}

    def detector(self) -> PoseDetector | None:
        """The pose detector, built on first call, or None when no factory was given."""
        if self._detector is None and self.detector_factory is not None:
            self._detector = self.detector_factory()
        return self._detector


__all__ = ["Engines"]
