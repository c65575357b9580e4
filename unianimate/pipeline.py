"""UniAnimatePipeline: reference image + drawn poses -> video frames, with the released model.

The pipeline owns the UNet, the CLIP encoder (image embedding + cached ``zero_y``), the VAE and the
sampler settings. It turns PIL/uint8 frames into the UNet's conditions, encodes them once per
segment (per window in long mode; they depend on no timestep), runs DDIM (or a multistep solver,
``sampler=``) with classifier-free guidance (spec §4) and decodes uint8 frames.

Conditions per mode (``v_cond``; the unconditional pass drops EVERY condition, only ``zero_y`` stays):

* reference mode (``first_frame=None``): CLIP image embedding of the reference, reference latent,
  reference pose, driving poses. This is the reference's default condition set.
* first-frame mode (``first_frame`` given; paper §5 "unified noised input" continuation): the same
  four (CLIP embedding, reference latent, reference pose, driving poses) PLUS the first-frame
  condition (``first_frame`` repeated over the F frames). Frame 0 of the output corresponds to the
  given first frame, so ``poses[0]`` should be that frame's pose. The noise prior still uses the
  reference latent.

Randomness: every draw comes from CPU ``torch.Generator``s seeded from ``seed`` (so CPU and CUDA
draw the same numbers): the initial noise from ``seed`` and the VAE posterior sample of the
reference from a second seed derived from it (:func:`derive_seed`). ``latents=`` replaces the
initial noisy latent x_T (the noise prior is NOT applied again); with the same ``seed`` (hence the
same reference latent) it reproduces a run exactly.

Switches (constructor defaults, most also per call): ``batch_guidance`` (conditional and
unconditional passes in one forward via ``drop_conditions``, or two calls as the reference),
``offload`` (CLIP and VAE live on the CPU and visit the GPU only to encode/decode; default on for
CUDA), ``decode_chunk`` (frames per VAE decode), ``compile`` (``torch.compile`` the UNet),
``channels_last`` (UNet memory format), ``sampler`` (``"ddim"``, the reference's, or the multistep
``"dpmpp_2m"`` / ``"unipc"``; see :mod:`unianimate.sampling` and docs/SAMPLERS.md),
``reuse_cpu_memory`` (opt-in, CPU device: glibc keeps freed memory for reuse instead of unmapping it,
:func:`unianimate.utils.reuse_freed_cpu_memory`; same numbers, 5-11% less CPU time per full-size
step, but +30-36% peak memory per step at 256x384 from heap fragmentation, and the process keeps
its peak after sampling; measured in /work/notes/i12c.md). UNet dtype: fp16
on CUDA by default (bf16 on request), fp32 on CPU; CLIP and VAE stay fp32.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import hub
from .errors import GenerationCancelled, InputError
from .imaging import ImageLike, check_size, to_rgb_array
from .models.clip import ClipConfig, ClipEncoder
from .models.config import UNetConfig
from .models.unet import ConditionEmbeddings
from .models.vae import LatentVAE, VaeConfig
from .sampling import (SAMPLERS, SOLVER_START_T, apply_guidance, initial_latents, make_scheduler,
                       predict_original)
from .utils import check_known_keys, make_generator, resolve_device, resolve_dtype, reuse_freed_cpu_memory

logger = logging.getLogger(__name__)

CONFIG_FILENAME = "unianimate_config.json"
RELEASED_MODEL_NAME = "UniAnimate (unianimate_16f_32f_non_ema_223000)"
TINY_MODEL_NAME = "TINY RANDOM WEIGHTS (not UniAnimate)"
CUSTOM_MODEL_NAME = "CUSTOM UNet config (not the released UniAnimate)"
Callback = Callable[[int, int, "np.ndarray | None"], None]
Progress = Callable[[str, float], None]

# Approximate linear map from SD-VAE latents (scaled) to RGB in [-1, 1], for cheap previews only.
_LATENT_RGB = torch.tensor([[0.298, 0.207, 0.208],
                            [0.187, 0.286, 0.173],
                            [-0.158, 0.189, 0.264],
                            [-0.184, -0.271, -0.473]])


def latent_rgb_matrix(channels: int) -> torch.Tensor:
    """(C,3) map from scaled latents to RGB for previews: SD's for 4 channels; for any other count
    (a small trained VAE, e.g. the demo model's) channel c feeds colour c mod 3, each colour the
    mean of its channels, a rough but stable picture of where things are."""
    if channels == _LATENT_RGB.shape[0]:
        return _LATENT_RGB
    if channels < 1:
        raise InputError(f"latents need at least one channel, got {channels}")
    m = torch.zeros(channels, 3)
    for c in range(channels):
        m[c, c % 3] = 1.0
    return m / m.sum(0).clamp(min=1.0)


@dataclass(frozen=True)
class ModelConfigs:
    """Architectures of the three networks; read from ``unianimate_config.json`` when present.

    File format (every part optional, unknown keys raise)::

        {"unet": {...UNetConfig fields...}, "clip": {...ClipConfig fields...},
         "vae": {...VaeConfig fields...}, "model_name": "shown to the user"}

    A folder without the file holds the released model (all defaults).
    """

    unet: UNetConfig = UNetConfig()
    clip: ClipConfig = ClipConfig()
    vae: VaeConfig = VaeConfig()
    model_name: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfigs":
        """Parse the JSON form; unknown keys raise ``InputError``."""
        check_known_keys(cls, data, CONFIG_FILENAME)
        try:
            return cls(unet=UNetConfig.from_dict(data.get("unet") or {}),
                       clip=ClipConfig.from_dict(data.get("clip") or {}),
                       vae=VaeConfig.from_dict(data.get("vae") or {}),
                       model_name=data.get("model_name"))
        except (TypeError, ValueError) as exc:
            raise InputError(f"bad model config in {CONFIG_FILENAME}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ModelConfigs":
        """Read ``unianimate_config.json``."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read model config {path}: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(f"{path} must hold a JSON object")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``from_dict(to_dict())`` round-trips)."""
        return {"unet": self.unet.to_dict(), "clip": self.clip.to_dict(),
                "vae": self.vae.to_dict(), "model_name": self.model_name}


@dataclass
class _Conditions:
    """The UNet's conditions for one sample (B = 1), on the UNet's device."""

    image_embedding: torch.Tensor  # (1,C)
    ref_latent: torch.Tensor  # (1,C,h,w), C latent channels
    ref_pose: torch.Tensor  # (1,3,H,W) in [0,1]
    pose: torch.Tensor  # (1,3,F,H,W) in [0,1]
    first_frame: torch.Tensor | None  # (1,3,H,W) in [0,1]

    def kwargs(self, frames: slice | None = None) -> dict[str, torch.Tensor | None]:
        pose = self.pose if frames is None else self.pose[:, :, frames]
        return dict(image_embedding=self.image_embedding, ref_latent=self.ref_latent,
                    ref_pose=self.ref_pose, pose=pose, first_frame=self.first_frame)


@dataclass
class _Encoded:
    """The UNet's encoded conditions of one segment (or one long-mode window), used at every step:
    ``cond`` holds 2 rows (conditional, unconditional) when ``batched``; else ``uncond`` is the
    separate unconditional pass (None without guidance)."""

    cond: ConditionEmbeddings
    uncond: ConditionEmbeddings | None
    batched: bool


def derive_seed(seed: int, stream: int = 1) -> int:
    """A second, decorrelated 63-bit seed from ``seed`` (used for the VAE posterior sample)."""
    return (int(seed) * 6364136223846793005 + 1442695040888963407 * (2 * stream + 1)) % (2 ** 63)


def latent_preview(latents: torch.Tensor) -> np.ndarray:
    """Cheap RGB approximation of scaled latents (B,C,F,h,w) -> uint8 (F,h,w,3) of sample 0
    (any channel count C: :func:`latent_rgb_matrix`)."""
    z = latents[0].detach().float().cpu()  # (C,F,h,w)
    rgb = torch.einsum("cfhw,cr->fhwr", z, latent_rgb_matrix(z.shape[0]))  # (F,h,w,3) in ~[-1,1]
    return ((rgb + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8).numpy()


def sliding_windows(num_frames: int, window: int = 32, overlap: int = 8) -> list[range]:
    """The reference's long-video windows: starts 0, w-o, 2(w-o), ... while < F - o; the last
    window is replaced by the final ``window`` frames. F <= window gives one window."""
    if window < 1 or overlap < 0 or overlap >= window:
        raise InputError(f"need window >= 1 and 0 <= overlap < window; got window={window}, overlap={overlap}")
    if num_frames <= window:
        return [range(0, num_frames)]
    starts = list(range(0, num_frames - overlap, window - overlap))
    wins = [range(s, s + window) for s in starts]
    wins[-1] = range(num_frames - window, num_frames)
    return wins


def _release_failed_load(exc: BaseException) -> None:
    """Free what a failed load had built (CLIP, VAE, a UNet on the GPU, a state dict).

    The exception's traceback, and those of the exceptions chained to it (``raise ... from None``
    still keeps ``__context__``), reference the frames of the loading functions and hence their
    locals: a caller that keeps the exception (a UI's error record, ``sys.last_exc`` in a REPL or
    notebook) would keep gigabytes alive. The finished frames are cleared (their line numbers stay
    for the traceback), then the garbage collector and the CUDA cache are run.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        tb = err.__traceback__
        while tb is not None:
            try:
                tb.tb_frame.clear()
            except RuntimeError:  # a frame still executing (the caller's): its locals are its own
                pass
            tb = tb.tb_next
        todo.extend((err.__cause__, err.__context__))
    import gc

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def supported_precisions(device: str | torch.device = "auto") -> tuple[str, ...]:
    """The precisions the UNet can run in on ``device``: "auto" and fp32 everywhere, bf16 on the
    CPU and on GPUs that support it, fp16 on CUDA (CPU fp16 convolutions are not supported)."""
    dev = resolve_device(device)
    if dev.type != "cuda":
        return ("auto", "fp32", "bf16")
    return ("auto", "fp32", "fp16") + (("bf16",) if torch.cuda.is_bf16_supported() else ())


def check_precision(precision: str, device: str | torch.device = "auto") -> str:
    """``precision`` when ``device`` supports it; InputError naming the choices otherwise."""
    choices = supported_precisions(device)
    if precision not in choices:
        where = "this GPU" if resolve_device(device).type == "cuda" else "the CPU"
        raise InputError(f"precision {precision!r} is not supported on {where}; use one of "
                         f"{', '.join(choices)}")
    return precision


def _offload_on(device: torch.device, offload: bool | None) -> bool:
    """Whether CLIP and the VAE wait on the CPU between uses: ``offload``, by default on for CUDA."""
    return device.type == "cuda" if offload is None else bool(offload)


def _seed_int(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {seed!r}")
    if not 0 <= int(seed) < 2 ** 63:
        raise InputError(f"seed must be in 0 .. 2**63-1, got {seed}")
    return int(seed)


class UniAnimatePipeline:
    """Owns the UNet, CLIP encoder, VAE and sampler settings; see the module docstring."""

    def __init__(self, unet: torch.nn.Module, clip: ClipEncoder, vae: LatentVAE,
                 device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None,
                 model_name: str = RELEASED_MODEL_NAME, is_tiny: bool = False,
                 batch_guidance: bool = True, offload: bool | None = None, decode_chunk: int = 2,
                 compile: bool | str = False, channels_last: bool = False, sampler: str = "ddim",
                 reuse_cpu_memory: bool = False) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model_name = model_name
        self.is_tiny = bool(is_tiny)
        self.batch_guidance = bool(batch_guidance)
        self.offload = _offload_on(self.device, offload)
        self.decode_chunk = int(decode_chunk)
        self.channels_last = bool(channels_last)
        self.compiled = bool(compile)
        self.reuse_cpu_memory = bool(reuse_cpu_memory) and self.device.type == "cpu"
        if self.reuse_cpu_memory:
            self.reuse_cpu_memory = reuse_freed_cpu_memory()
        self._check_sampler(sampler, 1)
        self.sampler = sampler
        self.unet = unet.eval().requires_grad_(False).to(self.device, self.dtype)
        if self.channels_last:
            self.unet.to_channels_last_()
        # compile: True or a torch.compile mode ("reduce-overhead", "max-autotune"); lazy, the
        # first call per input shape pays the compilation
        self._unet_call: Callable[..., torch.Tensor] = self.unet
        if compile:
            mode = compile if isinstance(compile, str) else None
            self._unet_call = torch.compile(self.unet, mode=mode)  # type: ignore[assignment]
        self.clip = clip
        self.vae = vae
        self._lock = threading.RLock()  # one generation at a time (components move between devices)
        home = torch.device("cpu") if self.offload else self.device
        self.clip.to(home)
        self.vae.to(home)
        self._zero_y = self.clip.zero_y.to(self.device, self.dtype)  # (1,77,C)

    # ------------------------------------------------------------------------------ building
    @classmethod
    def from_pretrained(cls, source: str | os.PathLike | None = None, device: str | torch.device = "auto",
                        dtype: str | torch.dtype = "auto", revision: str | None = None,
                        local_files_only: bool | None = None, progress: Progress | None = None,
                        tqdm_class: Any = None, configs: ModelConfigs | None = None,
                        **options: Any) -> "UniAnimatePipeline":
        """Load the released model from a local folder or a Hub repo id (see :mod:`unianimate.hub`).

        Architectures: ``configs`` if given, else ``<folder>/unianimate_config.json`` when the source
        is a local folder holding one (tiny or custom models, used by the tests), else the released
        configs. ``progress(message, fraction)`` is called at each loading stage; ``tqdm_class``
        replaces huggingface_hub's download bars. Checkpoints are read with ``weights_only=True``.
        ``options``: the constructor's switches (batch_guidance, offload, decode_chunk, compile,
        channels_last, sampler, reuse_cpu_memory). Raises ``WeightsMissingError`` / ``CheckpointError``. On any failure
        nothing half-loaded stays in memory, even while the caller keeps the exception (see
        :func:`_release_failed_load`).
        """
        try:
            return cls._load_pretrained(source, device, dtype, revision, local_files_only, progress,
                                        tqdm_class, configs, options)
        except BaseException as exc:
            _release_failed_load(exc)
            raise

    @classmethod
    def _load_pretrained(cls, source: str | os.PathLike | None, device: str | torch.device,
                         dtype: str | torch.dtype, revision: str | None, local_files_only: bool | None,
                         progress: Progress | None, tqdm_class: Any, configs: ModelConfigs | None,
                         options: dict[str, Any]) -> "UniAnimatePipeline":
        """The body of :meth:`from_pretrained` (its frame is cleared when loading fails)."""
        from .models.checkpoint import load_state_dict_file
        from .models.unet import UniAnimateUNet

        def report(msg: str, frac: float) -> None:
            logger.info("%s", msg)
            if progress is not None:
                progress(msg, frac)

        if configs is None:
            cfg_file = Path(source) / CONFIG_FILENAME if hub.is_local_source(source) else None
            configs = ModelConfigs.from_file(cfg_file) if cfg_file and cfg_file.is_file() else ModelConfigs()
        unet_cfg = configs.unet
        released = unet_cfg == UNetConfig()
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)

        report("locating weights files", 0.0)
        kw = dict(revision=revision, local_files_only=local_files_only, tqdm_class=tqdm_class,
                  check_size=released)  # the released files' sizes are known (hub.MIN_BYTES)
        unet_path = hub.resolve_unet(source, **kw)   # released .pth or an exported .safetensors
        clip_path = hub.resolve_clip(source, **kw)
        vae_path = hub.resolve_vae(source, **kw)

        # CLIP first: open_clip reads its whole state dict before copying it (a transient second
        # copy), and its text tower is freed once zero_y is cached; the peak stays lower this way
        home = torch.device("cpu") if _offload_on(dev, options.get("offload")) else dev
        report(f"loading CLIP from {clip_path.name}", 0.05)
        clip = ClipEncoder.from_file(clip_path, configs.clip, device=home)
        report(f"loading VAE from {vae_path.name}", 0.3)
        vae = LatentVAE.load(vae_path, configs.vae, device=home)

        report(f"loading UNet from {unet_path.name}", 0.4)
        with torch.device("meta"):
            unet = UniAnimateUNet(unet_cfg)
        unet = unet.to(dt).to_empty(device=dev)  # allocated in the target dtype, filled below
        state = load_state_dict_file(unet_path, mmap=True)  # memory-mapped: no second copy
        unet.load_official_state_dict(state)  # key for key; a float16 file becomes ``dt``
        del state
        name = configs.model_name or (RELEASED_MODEL_NAME if released else CUSTOM_MODEL_NAME)
        if not released:
            logger.warning("UNet config differs from the released UniAnimate config: %s", name)
        pipe = cls(unet, clip, vae, device=dev, dtype=dt, model_name=name, is_tiny=not released, **options)
        report("model ready", 1.0)
        return pipe

    @classmethod
    def tiny(cls, seed: int = 0, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None,
             unet_config: UNetConfig | None = None, **options: Any) -> "UniAnimatePipeline":
        """Tiny configs of the same classes with seeded random weights: for tests, CI, smoke runs.

        Produces noise-like videos; ``is_tiny`` is True and ``model_name`` says so. ``unet_config``
        replaces the tiny UNet config (e.g. ``UNetConfig()``: the full-size UNet with random weights
        beside the tiny CLIP and VAE, as bench/sampler_quality.py uses it).
        """
        import open_clip
        from diffusers import AutoencoderKL

        from .models.unet import UniAnimateUNet

        seed = _seed_int(seed)
        unet_cfg = UNetConfig.tiny() if unet_config is None else unet_config
        clip_cfg = ClipConfig.tiny(width=unet_cfg.context_dim)
        vae_cfg = VaeConfig.tiny()
        with torch.random.fork_rng(devices=[]):  # library initialisers use the global RNG
            torch.manual_seed(seed)
            clip_model = open_clip.model.CLIP(**clip_cfg.model_kwargs())  # the class ViT-H-14 uses
            vae_model = AutoencoderKL(**vae_cfg.diffusers_kwargs())
        with torch.device("meta"):  # every parameter is drawn below: no default init to pay for
            unet = UniAnimateUNet(unet_cfg)
        unet = unet.to_empty(device="cpu").init_random_weights_(seed, scale=0.5)
        clip = ClipEncoder(clip_model, name="tiny open_clip")
        clip.release_text_tower()
        vae = LatentVAE(vae_model)
        logger.warning("*** %s: a tiny random model for tests and smoke runs; it produces noise, "
                       "not animations. Load the released weights with from_pretrained(). ***",
                       TINY_MODEL_NAME)
        return cls(unet, clip, vae, device=device, dtype=dtype, model_name=TINY_MODEL_NAME,
                    is_tiny=True, **options)

    # ------------------------------------------------------------------------------ switches
    @property
    def precision(self) -> str:
        """The UNet's precision as the studio names it: "fp32", "fp16" or "bf16"."""
        return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(
            self.dtype, str(self.dtype).replace("torch.", ""))

    def set_offload(self, offload: bool | None) -> None:
        """Switch CPU offload of CLIP and the VAE (None: on for CUDA); moves them now."""
        with self._lock:
            self.offload = _offload_on(self.device, offload)
            home = torch.device("cpu") if self.offload else self.device
            self.clip.to(home)
            self.vae.to(home)
            if self.offload and self.device.type == "cuda":
                torch.cuda.empty_cache()

    def with_precision(self, precision: str, device: str | torch.device | None = None,
                       offload: bool | None = None) -> "UniAnimatePipeline":
        """A pipeline sharing CLIP and the VAE with a copy of this UNet in ``precision``
        ("auto", "fp32", "fp16", "bf16") on ``device`` (default: this one). This pipeline's UNet
        is left as it is (the ZeroGPU worker keeps its fp32 CPU copy as the master this way);
        ``offload`` as in the constructor.
        Copying up from fp16/bf16 cannot restore the lost bits: reload the weights for that."""
        from .models.unet import UniAnimateUNet

        dev = self.device if device is None else resolve_device(device)
        check_precision(precision, dev)
        dt = resolve_dtype(precision, dev)
        with torch.device("meta"):
            unet = UniAnimateUNet(self.unet.config)
        unet = unet.to(dt).to_empty(device=dev)
        unet.load_state_dict(self.unet.state_dict())
        return type(self)(unet, self.clip, self.vae, device=dev, dtype=dt,
                          model_name=self.model_name, is_tiny=self.is_tiny,
                          batch_guidance=self.batch_guidance, offload=offload,
                          decode_chunk=self.decode_chunk,
                          channels_last=self.channels_last, sampler=self.sampler)

    # ------------------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def _visiting(self, component: ClipEncoder | LatentVAE) -> Iterator[None]:
        """With offload, bring CLIP/VAE to the GPU for one use and send it back afterwards."""
        if not self.offload or self.device.type == "cpu":
            yield
            return
        component.to(self.device)
        try:
            yield
        finally:
            component.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _pixels(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (N,H,W,3) -> float (N,3,H,W) in [0,1] on the UNet device."""
        t = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        return t.permute(0, 3, 1, 2).float().div_(255.0)  # (N,H,W,3) -> (N,3,H,W)

    @staticmethod
    def _frames(poses: Sequence[ImageLike] | np.ndarray, what: str) -> np.ndarray:
        if isinstance(poses, np.ndarray) and poses.ndim == 4:
            items: Sequence[ImageLike] = list(poses)
        elif isinstance(poses, (list, tuple)):
            items = poses
        else:
            raise InputError(f"{what} must be a list of images or a uint8 array (F,H,W,3); "
                             f"got {type(poses).__name__}")
        if len(items) == 0:
            raise InputError(f"{what} is empty; give at least one pose frame.")
        arrs = [to_rgb_array(p) for p in items]
        shapes = {a.shape for a in arrs}
        if len(shapes) != 1:
            raise InputError(f"all {what} must have the same size; got {sorted(shapes)}")
        return np.stack(arrs)  # (F,H,W,3)

    def _validate(self, reference_image: ImageLike, poses: Any, ref_pose: ImageLike,
                  first_frame: ImageLike | None, num_frames: int | None,
                  num_inference_steps: int, guidance_scale: float,
                  noise_prior_t: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        ref = to_rgb_array(reference_image)
        pose_arr = self._frames(poses, "poses")
        rpose = to_rgb_array(ref_pose)
        first = to_rgb_array(first_frame) if first_frame is not None else None
        h, w = ref.shape[:2]
        for name, arr in (("poses", pose_arr[0]), ("ref_pose", rpose), ("first_frame", first)):
            if arr is not None and arr.shape[:2] != (h, w):
                raise InputError(f"{name} is {arr.shape[1]}x{arr.shape[0]} but the reference image is "
                                 f"{w}x{h}; fit every image to the same width x height first.")
        check_size(h, w)
        if num_frames is not None and int(num_frames) != len(pose_arr):
            raise InputError(f"num_frames={num_frames} but {len(pose_arr)} pose frames were given; "
                             "give one pose image per output frame.")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
                or not 1 <= int(num_inference_steps) <= 1000:
            raise InputError(f"num_inference_steps must be an integer in 1..1000, got {num_inference_steps!r}")
        if not isinstance(guidance_scale, (int, float)) or not math.isfinite(float(guidance_scale)):
            raise InputError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        if noise_prior_t is not None and not 0 <= int(noise_prior_t) <= 999:
            raise InputError(f"noise_prior_t must be in 0..999 (or None), got {noise_prior_t}")
        return ref, pose_arr, rpose, first

    @staticmethod
    def _check_output_type(output_type: str) -> None:
        if output_type not in ("uint8", "latent"):
            raise InputError(f"output_type must be 'uint8' or 'latent', got {output_type!r}")

    def _resolve_sampler(self, sampler: str | None, num_inference_steps: int) -> str:
        """The sampler a run uses (None: the pipeline's), checked against the step count."""
        sampler = self.sampler if sampler is None else sampler
        self._check_sampler(sampler, num_inference_steps)
        return sampler

    @staticmethod
    def _check_sampler(sampler: str, num_inference_steps: int) -> None:
        if sampler not in SAMPLERS:
            raise InputError(f"sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
        if sampler != "ddim" and int(num_inference_steps) > SOLVER_START_T + 1:
            raise InputError(f"num_inference_steps must be at most {SOLVER_START_T + 1} with sampler "
                             f"{sampler!r}; got {num_inference_steps}")

    @torch.no_grad()
    def encode_reference(self, reference_image: ImageLike, seed: int) -> torch.Tensor:
        """Scaled VAE latent (1,4,h,w) of the reference, posterior noise from ``derive_seed(seed)``."""
        ref = to_rgb_array(reference_image)
        gen = make_generator(derive_seed(_seed_int(seed)))
        with self._visiting(self.vae):
            lat = self.vae.encode(self._pixels(ref[None]).to(self.vae.device), gen)
        return lat.to(self.device)

    def prepare_latents(self, ref_latent: torch.Tensor, num_frames: int, seed: int,
                        noise_prior_t: int | None = 949, offset_after_prior: bool = False) -> torch.Tensor:
        """The initial noisy latent x_T (1,4,F,h,w) float32 a run with ``seed`` starts from."""
        _, c, h, w = ref_latent.shape
        return initial_latents((1, c, int(num_frames), h, w), ref_latent, make_generator(_seed_int(seed)),
                               noise_prior_t=noise_prior_t, offset_after_prior=offset_after_prior,
                               device=self.device)

    def _conditions(self, ref: np.ndarray, pose_arr: np.ndarray, rpose: np.ndarray,
                    first: np.ndarray | None, ref_latent: torch.Tensor) -> _Conditions:
        with self._visiting(self.clip):
            emb = self.clip.encode_image(ref)  # (1,C)
        dt = self.dtype
        pose = self._pixels(pose_arr).to(dt).permute(1, 0, 2, 3).unsqueeze(0)  # (F,3,H,W) -> (1,3,F,H,W)
        return _Conditions(image_embedding=emb.to(self.device, dt), ref_latent=ref_latent.to(dt),
                           ref_pose=self._pixels(rpose[None]).to(dt),
                           pose=pose, first_frame=None if first is None else self._pixels(first[None]).to(dt))

    def _encode(self, cond: _Conditions, latent_shape: tuple[int, ...], frames: slice | None,
                batch_guidance: bool, need_uncond: bool) -> _Encoded:
        """Encode the conditions once for latents of ``latent_shape`` (1,4,F',h,w) (frames: window)."""
        kw = cond.kwargs(frames)
        unet = self.unet
        if need_uncond and batch_guidance:
            # two rows: row 0 conditional, row 1 unconditional (every condition dropped)
            kw2 = {k: (v.expand(2, *v.shape[1:]) if v is not None else None) for k, v in kw.items()}
            drop = torch.tensor([False, True], device=self.device)
            both = unet.encode_conditions((2, *latent_shape[1:]), self._zero_y, drop_conditions=drop, **kw2)
            return _Encoded(both, None, True)
        cond_emb = unet.encode_conditions(latent_shape, self._zero_y, **kw)
        uncond = unet.encode_conditions(latent_shape, self._zero_y) if need_uncond else None
        return _Encoded(cond_emb, uncond, False)

    def _v_pair(self, x: torch.Tensor, t: int, enc: _Encoded) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(v_cond, v_uncond) float32 for x (1,4,F',h,w); v_uncond None without guidance."""
        x_in = x.to(self.dtype)
        if self.channels_last:
            x_in = x_in.contiguous()
        if enc.batched:
            x2 = torch.cat([x_in, x_in], dim=0)  # (2,4,F',h,w): row 0 conditional, row 1 unconditional
            tt = torch.full((2,), t, device=self.device, dtype=torch.long)
            v = self._unet_call(x2, tt, conditions=enc.cond).float()
            return v[:1], v[1:]
        tt = torch.full((1,), t, device=self.device, dtype=torch.long)
        v_cond = self._unet_call(x_in, tt, conditions=enc.cond).float()
        if enc.uncond is None:
            return v_cond, None
        return v_cond, self._unet_call(x_in, tt, conditions=enc.uncond).float()

    @staticmethod
    def _poll_cancel(should_cancel: Callable[[], bool] | None, done: int, total: int) -> None:
        if should_cancel is not None and should_cancel():
            raise GenerationCancelled(f"generation cancelled after {done} of {total} denoising steps")

    def _sample(self, x: torch.Tensor, cond: _Conditions, num_inference_steps: int, guidance_scale: float,
                batch_guidance: bool, callback: Callback | None, should_cancel: Callable[[], bool] | None,
                windows: list[range] | None = None, sampler: str = "ddim") -> torch.Tensor:
        sched = make_scheduler(int(num_inference_steps), sampler)
        timesteps = sched.timesteps.tolist()
        total = len(timesteps)
        need_uncond = float(guidance_scale) != 1.0
        # the conditions' embeddings depend on no timestep: encoded once here, used at every step
        if windows is None:
            encoded = self._encode(cond, tuple(x.shape), None, batch_guidance, need_uncond)
        else:  # per window (its own frames, as the UNet sees them); windows per frame counted once
            count = torch.zeros((1, 1, x.shape[2], 1, 1), device=x.device)
            slices = []
            for win in windows:
                count[:, :, win.start:win.stop] += 1
                sl = slice(win.start, win.stop)
                shape = (*x.shape[:2], len(win), *x.shape[3:])
                slices.append((sl, self._encode(cond, shape, sl, batch_guidance, need_uncond)))
        for i, t in enumerate(timesteps):
            self._poll_cancel(should_cancel, i, total)
            if windows is None:
                v_c, v_u = self._v_pair(x, t, encoded)
            else:
                # every window's prediction is summed per frame and averaged; guidance after averaging
                v_c = torch.zeros_like(x)
                v_u = torch.zeros_like(x) if need_uncond else None
                for sl, enc in slices:
                    wc, wu = self._v_pair(x[:, :, sl], t, enc)
                    v_c[:, :, sl] += wc
                    if v_u is not None and wu is not None:
                        v_u[:, :, sl] += wu
                v_c = v_c / count
                v_u = v_u / count if v_u is not None else None
            v = apply_guidance(v_u, v_c, float(guidance_scale)) if v_u is not None else v_c
            out = sched.step(v, t, x)
            if callback is not None:
                x0 = getattr(out, "pred_original_sample", None)  # DDIM gives it; the solvers do not
                callback(i + 1, total, latent_preview(x0 if x0 is not None else predict_original(x, v, t)))
            x = out.prev_sample
        self._poll_cancel(should_cancel, total, total)
        return x

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, decode_chunk: int | None = None) -> np.ndarray:
        """Scaled latents (1,4,F,h,w) -> uint8 (F,H,W,3)."""
        z = latents[0].transpose(0, 1)  # (4,F,h,w) -> (F,4,h,w)
        with self._visiting(self.vae):
            px = self.vae.decode(z.to(self.vae.device), chunk=decode_chunk or self.decode_chunk)  # (F,3,H,W)
        return (px.permute(0, 2, 3, 1) * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()

    def _check_latents(self, latents: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != shape:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise InputError(f"latents must be a tensor of shape {shape}, got {got}")
        return latents.to(self.device, torch.float32)

    def _generate(self, ref: np.ndarray, pose_arr: np.ndarray, rpose: np.ndarray, first: np.ndarray | None,
                  seed: int, num_inference_steps: int, guidance_scale: float, noise_prior_t: int | None,
                  latents: torch.Tensor | None, callback: Callback | None,
                  should_cancel: Callable[[], bool] | None, batch_guidance: bool | None,
                  decode_chunk: int | None, output_type: str, sampler: str,
                  windows: list[range] | None = None,
                  offset_after_prior: bool = False,
                  offload: bool | None = None) -> np.ndarray | torch.Tensor:
        """The run both generate methods share, on validated inputs (``windows``: long mode)."""
        f = len(pose_arr)
        with self._lock:
            if offload is not None:
                self.set_offload(offload)
            ref_latent = self.encode_reference(ref, seed)  # (1,4,h,w)
            cond = self._conditions(ref, pose_arr, rpose, first, ref_latent)
            if latents is None:
                x = self.prepare_latents(ref_latent, f, seed, noise_prior_t, offset_after_prior)
            else:
                x = self._check_latents(latents, (1, ref_latent.shape[1], f, *ref_latent.shape[2:]))
            bg = self.batch_guidance if batch_guidance is None else bool(batch_guidance)
            x = self._sample(x, cond, num_inference_steps, guidance_scale, bg, callback, should_cancel,
                             windows, sampler)
            return x if output_type == "latent" else self.decode(x, decode_chunk)

    # ------------------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate_segment(self, reference_image: ImageLike, poses: Sequence[ImageLike] | np.ndarray,
                         ref_pose: ImageLike, first_frame: ImageLike | None = None,
                         num_frames: int | None = None, seed: int = 0, num_inference_steps: int = 30,
                         guidance_scale: float = 2.5, noise_prior_t: int | None = 949,
                         latents: torch.Tensor | None = None, callback: Callback | None = None,
                         should_cancel: Callable[[], bool] | None = None, *,
                         batch_guidance: bool | None = None, decode_chunk: int | None = None,
                         output_type: str = "uint8", sampler: str | None = None,
                         offload: bool | None = None) -> np.ndarray | torch.Tensor:
        """Animate ``reference_image`` along ``poses`` -> uint8 (F,H,W,3).

        All images are PIL or uint8 (H,W,3) at the same size (multiples of 64).

        Conditional pass, reference mode (``first_frame=None``): CLIP embedding of
        ``reference_image``, its VAE latent, ``ref_pose``, ``poses``. First-frame mode
        (``first_frame`` given): the same four PLUS ``first_frame`` (repeated over F), so the segment
        continues from that frame (paper §5); frame 0 of the output corresponds to it. The
        unconditional pass drops all of them (only ``zero_y``); v = v_u + guidance_scale (v_c - v_u).
        The initial latent uses the noise prior at ``noise_prior_t`` on the reference latent.
        ``callback(step, total, preview)`` after each step (preview: uint8 (F,h,w,3) latent-space
        approximation of the predicted clean video); ``should_cancel()`` is polled between steps
        and raises ``GenerationCancelled``. ``output_type="latent"`` returns the final scaled
        latents (1,4,F,h,w) float32 instead of decoding them. ``sampler``: ``"ddim"`` (the
        reference's) or ``"dpmpp_2m"`` / ``"unipc"`` (fewer steps; quality measured in
        docs/SAMPLERS.md), all from the same noise-prior latent; None = the pipeline's (``"ddim"``
        unless constructed otherwise). ``batch_guidance``, ``decode_chunk``, ``offload``: the
        constructor's switches for this call (None: as constructed; ``offload`` stays as set).
        """
        ref, pose_arr, rpose, first = self._validate(reference_image, poses, ref_pose, first_frame,
                                                     num_frames, num_inference_steps, guidance_scale,
                                                     noise_prior_t)
        self._check_output_type(output_type)
        sampler = self._resolve_sampler(sampler, num_inference_steps)
        return self._generate(ref, pose_arr, rpose, first, _seed_int(seed), num_inference_steps,
                              guidance_scale, noise_prior_t, latents, callback, should_cancel,
                              batch_guidance, decode_chunk, output_type, sampler, offload=offload)

    @torch.no_grad()
    def generate_long(self, reference_image: ImageLike, poses: Sequence[ImageLike] | np.ndarray,
                      ref_pose: ImageLike, first_frame: ImageLike | None = None, seed: int = 0,
                      num_inference_steps: int = 30, guidance_scale: float = 2.5,
                      noise_prior_t: int | None = 939, window: int = 32, overlap: int = 8,
                      latents: torch.Tensor | None = None, callback: Callback | None = None,
                      should_cancel: Callable[[], bool] | None = None, *,
                      batch_guidance: bool | None = None, decode_chunk: int | None = None,
                      output_type: str = "uint8", sampler: str | None = None,
                      offload: bool | None = None) -> np.ndarray | torch.Tensor:
        """The reference's sliding-window long video -> uint8 (F,H,W,3) for any number of poses.

        At every step the UNet runs on each ``window``-frame window (see :func:`sliding_windows`);
        overlapping conditional and unconditional predictions are averaged uniformly per frame and
        guidance is applied after averaging. As the reference's long script: noise prior at t=939
        with the offset noise added after the prior. (The released script passes the configured
        ``context_overlap`` to its window scheduler, whose keyword default of 4 goes unused; the
        released YAML sets 8, our default.) ``sampler`` and the switches as in
        :meth:`generate_segment`.
        """
        ref, pose_arr, rpose, first = self._validate(reference_image, poses, ref_pose, first_frame, None,
                                                     num_inference_steps, guidance_scale, noise_prior_t)
        self._check_output_type(output_type)
        sampler = self._resolve_sampler(sampler, num_inference_steps)
        seed = _seed_int(seed)
        windows = sliding_windows(len(pose_arr), int(window), int(overlap))
        return self._generate(ref, pose_arr, rpose, first, seed, num_inference_steps, guidance_scale,
                              noise_prior_t, latents, callback, should_cancel, batch_guidance,
                              decode_chunk, output_type, sampler, windows=windows, offset_after_prior=True,
                              offload=offload)

    def info(self) -> dict[str, Any]:
        """What is loaded and how it runs (for status displays and manifests)."""
        return {"model_name": self.model_name, "is_tiny": self.is_tiny, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "offload": self.offload,
                "batch_guidance": self.batch_guidance, "decode_chunk": self.decode_chunk,
                "compile": self.compiled, "channels_last": self.channels_last, "sampler": self.sampler,
                "reuse_cpu_memory": self.reuse_cpu_memory,
                "unet_parameters": sum(p.numel() for p in self.unet.parameters())}

    def __repr__(self) -> str:
        return (f"UniAnimatePipeline(model_name={self.model_name!r}, device={self.device}, dtype={self.dtype}, "
                f"offload={self.offload}, batch_guidance={self.batch_guidance})")
