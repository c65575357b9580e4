"""Hugging Face ZeroGPU Spaces: the GPU boundary of the app.

How ``spaces.GPU`` runs a function (spaces 0.5x, ``spaces/zero/wrappers.py``): the first call forks
a worker process from the main one (``multiprocessing`` 'fork' context) that gets the GPU; every
call pickles its arguments into that worker and pickles the results back; a *generator* function's
items come back one by one, and when the main process closes the generator the worker closes its
copy at the next item. The worker sees the main process as it was when it was forked, never later
changes (locks held at that moment stay held in it). Hence the rules this module follows:

* The pipeline is built once on the CPU in the main process, before the first GPU call
  (:func:`load_cpu_pipeline`, called by ``app.py`` at start-up when ``SPACE_ID`` is set; the ZeroGPU
  documentation asks for the model at start-up, not inside GPU time). The worker moves it to CUDA
  once (:func:`_device_pipeline`) and keeps it while it lives.
* The GPU entry point, :func:`generate_on_gpu`, is a module-level generator function whose
  arguments are plain values: uint8 numpy arrays, numbers, a tuple of seeds. No lock, closure,
  service object or model crosses the boundary. Its ``duration`` is computed per call from frames
  x steps x candidates x resolution (:func:`gpu_seconds`).
* Progress and cancel stay in the main process: :class:`SpacePipeline` (what the studio service
  gets as its pipeline) forwards each yielded step to the service's callback and, when the
  service's ``should_cancel()`` turns true, closes the generator; the worker then stops between
  two denoising steps. Errors of the project (:class:`~unianimate.errors.UniAnimateError`) come
  back as items, so their messages survive the trip (``spaces`` would only keep the class name).
* Pose extraction, project bookkeeping, saving and exporting never enter GPU time.

Without the ``spaces`` package (any machine but a Space) :func:`gpu` leaves the function as it is
and everything runs in this process. Importing this module loads nothing.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from . import errors
from .errors import GenerationCancelled, UniAnimateError

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: seconds of GPU time per frame x denoising step at 768x512 (the reference reports about one
#: minute for 32 frames on an A100; ZeroGPU's half-H200 is at least as fast): a margin, not a
#: promise
SECONDS_PER_FRAME_STEP = 0.08
#: fixed cost of a call: moving the weights to the GPU in a fresh worker, encoding, decoding
SECONDS_OVERHEAD = 40
REFERENCE_PIXELS = 768 * 512

_CPU_PIPELINE: Any = None       # main process: built at start-up (inherited by the forked worker)
_DEVICE_PIPELINE: Any = None    # worker: the same weights on the GPU, built on the first call
_DEVICE_PRECISION = ["auto"]    # worker: the precision _DEVICE_PIPELINE was asked for
_BUILD_LOCK = threading.Lock()     # main process: the start-up build
_DEVICE_LOCK = threading.Lock()    # worker: never taken by the main process under spaces, so a
                                   # fork cannot copy it in the held state


def on_space() -> bool:
    """True on a Hugging Face Space (``SPACE_ID`` is set there)."""
    return bool(os.environ.get("SPACE_ID"))


def gpu(fn: F | None = None, *, duration: Callable[..., int] | int = 120) -> Any:
    """``spaces.GPU(duration=...)`` when the ``spaces`` package imports (ZeroGPU), else the
    function unchanged. Usable as ``@gpu`` or ``@gpu(duration=callable_or_seconds)``."""
    def wrap(f: F) -> F:
        try:
            import spaces  # type: ignore[import-not-found]
        except ImportError:
            return f
        return spaces.GPU(duration=duration)(f)  # type: ignore[no-any-return]
    return wrap if fn is None else wrap(fn)


def gpu_seconds(num_frames: int, steps: int, candidates: int, width: int = 768,
                height: int = 512) -> int:
    """GPU seconds to ask ZeroGPU for: frames x steps x candidates, scaled by resolution."""
    scale = max(1.0, (int(width) * int(height)) / REFERENCE_PIXELS)
    work = int(num_frames) * int(steps) * max(1, int(candidates)) * SECONDS_PER_FRAME_STEP * scale
    return int(SECONDS_OVERHEAD + round(work))


def load_cpu_pipeline(source: str | os.PathLike | None = None, tiny: bool = False,
                      progress: Callable[[str, float], None] | None = None,
                      lora: str | os.PathLike | None = None) -> Any:
    """Build the pipeline on the CPU in this (main) process, once; the GPU worker inherits it.
    ``lora``: an adapter file folded into the UNet (its name and hash join the model name)."""
    global _CPU_PIPELINE
    with _BUILD_LOCK:
        if _CPU_PIPELINE is None:
            from .pipeline import UniAnimatePipeline
            if tiny:
                _CPU_PIPELINE = UniAnimatePipeline.tiny(seed=0, device="cpu")
            else:
                pipe = UniAnimatePipeline.from_pretrained(source, device="cpu",
                                                          progress=progress)
                if lora is not None:
                    from .training.lora import fold_lora_into_pipeline
                    fold_lora_into_pipeline(pipe, lora)
                _CPU_PIPELINE = pipe
            logger.info("ZeroGPU: %s built on the CPU at start-up", _CPU_PIPELINE.model_name)
        return _CPU_PIPELINE


def _device_pipeline(precision: str = "auto") -> Any:
    """In the GPU worker: the start-up pipeline on CUDA in ``precision`` (built on the first
    call, and again when another precision is asked for), or the CPU one where there is no CUDA
    (tests, CPU Spaces; another precision then gets a CPU copy). The start-up pipeline's fp32
    CPU UNet stays as it is: every device copy is cast from it, so switching loses nothing."""
    global _DEVICE_PIPELINE
    import torch

    with _DEVICE_LOCK:
        cpu = _CPU_PIPELINE
        if cpu is None:
            raise UniAnimateError("the model was not loaded at start-up (load_cpu_pipeline); "
                                  "restart the Space")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and precision in ("auto", cpu.precision):
            _DEVICE_PIPELINE = cpu
            return cpu
        if _DEVICE_PIPELINE is not None and _DEVICE_PIPELINE is not cpu and \
                _DEVICE_PRECISION[0] == precision:
            return _DEVICE_PIPELINE
        _DEVICE_PIPELINE = None          # the old copy goes before the new one is made
        if device == "cuda":
            torch.cuda.empty_cache()
        # ZeroGPU's GPU holds everything: no offload there (as before precision was a choice)
        _DEVICE_PIPELINE = cpu.with_precision(precision, device, offload=False)
        _DEVICE_PRECISION[0] = precision
        return _DEVICE_PIPELINE


def _duration(reference: np.ndarray, poses: np.ndarray, ref_pose: np.ndarray,
              first_frame: np.ndarray | None, seeds: Sequence[int], num_frames: int, steps: int,
              guidance: float, noise_prior_t: int | None, sampler: str = "ddim",
              options: tuple[Any, ...] = ()) -> int:
    """``spaces.GPU``'s duration: called with the GPU entry point's own arguments (long mode:
    the frames of every window, overlaps counted twice)."""
    height, width = reference.shape[:2]
    opts = dict(zip(OPTION_NAMES, options))
    frames = int(num_frames)
    if opts.get("window") is not None:
        from .pipeline import sliding_windows
        frames = sum(len(w) for w in sliding_windows(frames, int(opts["window"]),
                                                     int(opts["overlap"])))
    return gpu_seconds(frames, steps, len(seeds), width, height)


#: the order of ``generate_on_gpu``'s ``options`` tuple (plain values only)
OPTION_NAMES = ("precision", "batch_guidance", "decode_chunk", "offload", "window", "overlap")


@gpu(duration=_duration)
def generate_on_gpu(reference: np.ndarray, poses: np.ndarray, ref_pose: np.ndarray,
                    first_frame: np.ndarray | None, seeds: Sequence[int], num_frames: int,
                    steps: int, guidance: float, noise_prior_t: int | None,
                    sampler: str = "ddim",
                    options: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """GPU entry point: one segment for each seed. Yields plain tuples:
    ``("step", candidate, step, total, preview)``, ``("frames", candidate, uint8 (F,H,W,3))``,
    ``("error", class name, message)`` for a project error (then stops).

    ``options``: the VRAM / speed and long-mode values in :data:`OPTION_NAMES` order
    (``window`` None: one segment, else the sliding-window long mode); empty: the defaults.
    Closing the generator (the main process cancelled) stops the generation between two steps.
    """
    opts = dict(zip(OPTION_NAMES, options))
    window = opts.pop("window", None)
    overlap = opts.pop("overlap", None)
    pipe = _device_pipeline(str(opts.pop("precision", "auto")))
    for index, seed in enumerate(seeds):
        events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        stop = threading.Event()

        def run(seed: int = int(seed), index: int = index) -> None:
            try:
                kw: dict[str, Any] = dict(
                    first_frame=first_frame, seed=seed, num_inference_steps=steps,
                    guidance_scale=guidance, noise_prior_t=noise_prior_t, sampler=sampler,
                    should_cancel=stop.is_set,
                    callback=lambda s, t, p=None: events.put(("step", index, int(s), int(t), p)),
                    **opts)
                if window is None:
                    frames = pipe.generate_segment(reference, poses, ref_pose,
                                                   num_frames=num_frames, **kw)
                else:
                    frames = pipe.generate_long(reference, poses, ref_pose, window=window,
                                                overlap=overlap, **kw)
                events.put(("frames", index, np.asarray(frames)))
            except UniAnimateError as err:
                events.put(("error", type(err).__name__, str(err)))
            except BaseException as err:  # noqa: BLE001 - handed to the generator, raised there
                events.put(("raise", err))

        worker = threading.Thread(target=run, name=f"unianimate-gpu-{index}", daemon=True)
        worker.start()
        try:
            while True:
                event = events.get()
                if event[0] == "raise":
                    raise event[1]
                yield event
                if event[0] in ("frames", "error"):
                    break
        finally:
            stop.set()       # closed early (cancel): the pipeline stops at its next step
            worker.join()
        if event[0] == "error":
            return


def _error_class(name: str) -> type[UniAnimateError]:
    cls = getattr(errors, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, UniAnimateError) else UniAnimateError


class SpacePipeline:
    """What the studio service gets as its pipeline on a Space: the same ``generate_segment``
    and ``generate_long`` as :class:`~unianimate.pipeline.UniAnimatePipeline`, run through
    :func:`generate_on_gpu` in ``precision``, with progress and cancel handled here, in the
    main process."""

    def __init__(self, cpu_pipeline: Any, precision: str = "auto") -> None:
        self.model_name = str(cpu_pipeline.model_name)
        self.is_tiny = bool(cpu_pipeline.is_tiny)
        self.sampler = str(cpu_pipeline.sampler)
        #: what the worker runs the UNet in ("auto": fp16 on its GPU)
        self.precision = str(precision)

    def generate_segment(self, reference_image: Any, poses: Any, ref_pose: Any,
                         first_frame: Any = None, num_frames: int | None = None, seed: int = 0,
                         num_inference_steps: int = 30, guidance_scale: float = 2.5,
                         noise_prior_t: int | None = 949,
                         callback: Callable[..., None] | None = None,
                         should_cancel: Callable[[], bool] | None = None,
                         sampler: str | None = None, *, batch_guidance: bool | None = None,
                         decode_chunk: int | None = None,
                         offload: bool | None = None) -> np.ndarray:
        """Animate ``reference_image`` along ``poses`` on the GPU -> uint8 (F,H,W,3)."""
        return self._run(reference_image, poses, ref_pose, first_frame, num_frames, seed,
                         num_inference_steps, guidance_scale, noise_prior_t, callback,
                         should_cancel, sampler, (batch_guidance, decode_chunk, offload, None,
                                                  None))

    def generate_long(self, reference_image: Any, poses: Any, ref_pose: Any,
                      first_frame: Any = None, seed: int = 0, num_inference_steps: int = 30,
                      guidance_scale: float = 2.5, noise_prior_t: int | None = 939,
                      window: int = 32, overlap: int = 8,
                      callback: Callable[..., None] | None = None,
                      should_cancel: Callable[[], bool] | None = None,
                      sampler: str | None = None, *, batch_guidance: bool | None = None,
                      decode_chunk: int | None = None,
                      offload: bool | None = None) -> np.ndarray:
        """The sliding-window long mode on the GPU -> uint8 (F,H,W,3)."""
        return self._run(reference_image, poses, ref_pose, first_frame, None, seed,
                         num_inference_steps, guidance_scale, noise_prior_t, callback,
                         should_cancel, sampler, (batch_guidance, decode_chunk, offload,
                                                  int(window), int(overlap)))

    def _run(self, reference_image: Any, poses: Any, ref_pose: Any, first_frame: Any,
             num_frames: int | None, seed: int, num_inference_steps: int, guidance_scale: float,
             noise_prior_t: int | None, callback: Callable[..., None] | None,
             should_cancel: Callable[[], bool] | None, sampler: str | None,
             switches: tuple[Any, ...]) -> np.ndarray:
        from .imaging import to_rgb_array

        pose_arr = np.stack([to_rgb_array(p) for p in poses])
        frames_n = int(num_frames if num_frames is not None else len(pose_arr))
        batch_guidance, decode_chunk, offload, window, overlap = switches
        options = (self.precision, None if batch_guidance is None else bool(batch_guidance),
                   None if decode_chunk is None else int(decode_chunk),
                   None if offload is None else bool(offload), window, overlap)
        args = (to_rgb_array(reference_image), pose_arr, to_rgb_array(ref_pose),
                None if first_frame is None else to_rgb_array(first_frame), (int(seed),),
                frames_n, int(num_inference_steps), float(guidance_scale),
                None if noise_prior_t is None else int(noise_prior_t),
                str(sampler or self.sampler), options)
        if should_cancel is not None and should_cancel():
            raise GenerationCancelled("generation cancelled before it started")
        events = generate_on_gpu(*args)
        try:
            for event in events:
                if event[0] == "step" and callback is not None:
                    callback(event[2], event[3], event[4])
                elif event[0] == "frames":
                    return np.asarray(event[2])
                elif event[0] == "error":
                    raise _error_class(event[1])(event[2])
                if should_cancel is not None and should_cancel():
                    raise GenerationCancelled("generation cancelled")
        finally:
            events.close()   # on cancel: the worker stops between two steps
        raise UniAnimateError("the GPU worker ended without returning frames; try again")


def pipeline_factory(report: Callable[[str], None] | None = None,
                     precision: str = "auto") -> SpacePipeline:
    """For the studio service on a Space (an ``AnimatorFactory``): the GPU proxy of the start-up
    pipeline, which is already built, so ``report`` has nothing to say; the worker makes its
    ``precision`` copy (checked there against its GPU)."""
    if _CPU_PIPELINE is None:
        raise UniAnimateError("the model was not loaded at start-up; see the Space's log")
    from .studio.settings import PRECISIONS
    if precision not in PRECISIONS:
        raise errors.InputError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                                f"{precision!r}")
    return SpacePipeline(_CPU_PIPELINE, precision)


__all__ = ["SpacePipeline", "generate_on_gpu", "gpu", "gpu_seconds", "load_cpu_pipeline",
           "on_space", "pipeline_factory"]
