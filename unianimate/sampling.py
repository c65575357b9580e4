"""Diffusion schedule, samplers, initial latents and guidance of the released model (spec §4).

The released model was trained with scaled-linear betas rescaled to zero terminal SNR and predicts
``v``. Sampling is DDIM with eta 0 over the reference's timesteps
``(1 + arange(0, 1000, 1000 // n)).clamp(0, 999).flip(0)`` (31 timesteps 991 ... 1 for n = 30),
stepping from ``t`` to ``t - 1000 // n`` and, on the last step, to ``alpha_bar(0)`` (not 1).

We use ``diffusers.DDIMScheduler`` for the step itself. Two things differ from a stock scheduler,
which is why :class:`ReferenceDDIMScheduler` subclasses it:

* ``set_timesteps(n)`` sets the reference's timesteps (diffusers' "leading" spacing with
  ``steps_offset=1`` gives only 30 of the 31 values for n = 30);
* ``alphas_cumprod`` is computed in float64, as the reference does (diffusers computes it in
  float32, which is off by up to 4e-5 relative near t = 999). The step arithmetic then runs in the
  sample's dtype, again as in the reference.

diffusers' own ``step`` already uses ``prev_t = t - num_train_timesteps // num_inference_steps``
(= t - 33 for 30 steps) and ``final_alpha_cumprod = alphas_cumprod[0]`` with
``set_alpha_to_one=False``; ``tests/test_sampling.py`` checks every step against the spec formulas.

Faster samplers (``make_scheduler(n, sampler=...)``, measured in docs/SAMPLERS.md): ``"dpmpp_2m"``
(``DPMSolverMultistepScheduler``, DPM-Solver++ 2M) and ``"unipc"`` (``UniPCMultistepScheduler``, bh2),
configured for the same model: v-prediction, the same float64 zero-terminal-SNR ``alphas_cumprod``
(diffusers' own ``2**-24`` kept at t = 999 so sigma stays finite), ``timestep_spacing="trailing"``
and a last step to ``alpha_bar(0)`` like the reference's DDIM (``final_sigmas_type="sigma_min"``).
They start where the reference's default run starts: the initial latent is the same noise-prior
latent (built at ``noise_prior_t``, 949) and their first timestep is the 30-step DDIM's first, 991
(:data:`SOLVER_START_T`), so their first model evaluation is the reference's; the n timesteps are
diffusers' trailing spacing over [0, 991] instead of [0, 999] (``solver_timesteps``).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

logger = logging.getLogger(__name__)

NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012
SAMPLERS = ("ddim", "dpmpp_2m", "unipc")
SOLVER_START_T = 991  # the first timestep of the reference's default 30-step DDIM run


def reference_alphas_cumprod(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """alpha_bar(t) of spec §4 in float64: scaled-linear betas, rescaled to zero terminal SNR."""
    betas = torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, num_train_timesteps,
                           dtype=torch.float64) ** 2
    sqrt_ab = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    # shift so sqrt(alpha_bar_T) = 0, scale so sqrt(alpha_bar_0) keeps its value
    sqrt_ab = (sqrt_ab - last) * (first / (first - last))
    return sqrt_ab ** 2


def reference_timesteps(num_inference_steps: int = 30,
                        num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """The reference's DDIM timesteps, descending: 31 values 991 ... 1 for 30 steps (int64)."""
    if not 1 <= int(num_inference_steps) <= num_train_timesteps:
        raise ValueError(f"num_inference_steps must be in 1..{num_train_timesteps}, "
                         f"got {num_inference_steps}")
    stride = num_train_timesteps // int(num_inference_steps)
    steps = 1 + torch.arange(0, num_train_timesteps, stride, dtype=torch.int64)
    return steps.clamp(0, num_train_timesteps - 1).flip(0)


class ReferenceDDIMScheduler(DDIMScheduler):
    """``DDIMScheduler`` with the reference's timesteps and a float64 ``alphas_cumprod``.

    ``step()`` is diffusers' own. ``num_inference_steps`` keeps the value the caller asked for, so
    diffusers' stride ``1000 // n`` equals the reference's even though there are n + 1 timesteps
    when n does not divide 1000.
    """

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Set the reference's timesteps for ``num_inference_steps`` (see module docstring)."""
        n_train = int(self.config.num_train_timesteps)
        self.num_inference_steps = int(num_inference_steps)
        self.timesteps = reference_timesteps(num_inference_steps, n_train).to(device)
        if (self.config.beta_schedule == "scaled_linear" and self.config.rescale_betas_zero_snr
                and self.config.trained_betas is None
                and (self.config.beta_start, self.config.beta_end) == (BETA_START, BETA_END)):
            ab = reference_alphas_cumprod(n_train)
            self.alphas_cumprod = ab
            self.alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
            self.betas = 1.0 - self.alphas
            self.final_alpha_cumprod = (torch.tensor(1.0, dtype=torch.float64)
                                        if self.config.set_alpha_to_one else ab[0])


def solver_timesteps(num_inference_steps: int, start: int = SOLVER_START_T) -> torch.Tensor:
    """n descending timesteps for the multistep solvers: diffusers' "trailing" spacing over
    [0, start] (``start = 999`` gives diffusers' own values): start, ..., (start + 1) / n - 1."""
    n = int(num_inference_steps)
    if not 1 <= n <= start + 1:
        raise ValueError(f"num_inference_steps must be in 1..{start + 1}, got {num_inference_steps}")
    ratio = (start + 1) / n
    steps = np.round(np.arange(start + 1, 0, -ratio)).astype(np.int64)[:n] - 1
    return torch.from_numpy(steps)


class _ReferenceScheduleMixin:
    """For diffusers' multistep solvers: the reference's float64 ``alphas_cumprod`` and
    :func:`solver_timesteps` (see module docstring). ``step()`` is diffusers' own."""

    config: Any
    alphas_cumprod: torch.Tensor

    def _use_reference_alphas(self) -> None:
        ab = reference_alphas_cumprod(int(self.config.num_train_timesteps)).clone()
        ab[-1] = 2.0 ** -24  # as diffusers does with rescale_betas_zero_snr: the first sigma stays finite
        self.alphas_cumprod = ab
        self.alpha_t = ab.sqrt()
        self.sigma_t = (1.0 - ab).sqrt()
        self.lambda_t = self.alpha_t.log() - self.sigma_t.log()

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Set :func:`solver_timesteps` and their sigmas (plus the final sigma of alpha_bar(0))."""
        super().set_timesteps(num_inference_steps=num_inference_steps, device=device)  # type: ignore[misc]
        steps = solver_timesteps(num_inference_steps)
        ab = self.alphas_cumprod.double().numpy()
        sigmas = np.sqrt((1.0 - ab) / ab)[steps.numpy()]
        last = float(self.sigmas[-1])  # final_sigmas_type="sigma_min": sigma of alpha_bar(0)
        self.sigmas = torch.from_numpy(np.concatenate([sigmas, [last]]).astype(np.float32))
        self.timesteps = steps.to(device)
        self.num_inference_steps = len(steps)


class ReferenceDPMSolverScheduler(_ReferenceScheduleMixin, DPMSolverMultistepScheduler):
    """DPM-Solver++ 2M on the reference's schedule."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._use_reference_alphas()


class ReferenceUniPCScheduler(_ReferenceScheduleMixin, UniPCMultistepScheduler):
    """UniPC (bh2) on the reference's schedule."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._use_reference_alphas()


def make_scheduler(num_inference_steps: int = 30, sampler: str = "ddim") -> Any:
    """A scheduler for the released model (spec §4) with its timesteps already set.

    ``sampler="ddim"`` (default): the reference's DDIM. ``"dpmpp_2m"`` / ``"unipc"``: diffusers'
    multistep solvers on the same schedule and start (module docstring). All take
    ``step(v, t, x).prev_sample``.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    common = dict(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_start=BETA_START, beta_end=BETA_END,
                  beta_schedule="scaled_linear", rescale_betas_zero_snr=True, prediction_type="v_prediction")
    sched: Any
    if sampler == "ddim":
        sched = ReferenceDDIMScheduler(**common, set_alpha_to_one=False, clip_sample=False, thresholding=False,
                                       timestep_spacing="leading", steps_offset=1)
    else:
        solver = dict(solver_order=2, timestep_spacing="trailing", final_sigmas_type="sigma_min",
                      lower_order_final=True, thresholding=False)
        if sampler == "dpmpp_2m":
            # euler_at_final: the last step (to alpha_bar(0)) first-order at every step count, as
            # UniPC's lower_order_final does (diffusers' DPM-Solver does it only below 15 steps)
            sched = ReferenceDPMSolverScheduler(**common, **solver, algorithm_type="dpmsolver++",
                                                solver_type="midpoint", euler_at_final=True)
        else:
            sched = ReferenceUniPCScheduler(**common, **solver, predict_x0=True, solver_type="bh2")
    sched.set_timesteps(num_inference_steps)
    return sched


def predict_original(x: torch.Tensor, v: torch.Tensor, t: int) -> torch.Tensor:
    """x0 = sqrt(ab_t) x_t - sqrt(1 - ab_t) v (spec §4), for previews of the multistep solvers."""
    ab = reference_alphas_cumprod()[int(t)]
    return float(ab.sqrt()) * x - float((1.0 - ab).sqrt()) * v


def initial_latents(shape: tuple[int, int, int, int, int], ref_latent: torch.Tensor | None,
                    generator: torch.Generator, noise_prior_t: int | None = 949,
                    offset_noise: float = 0.1, offset_after_prior: bool = False,
                    device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Initial latent x_T of shape (B,4,F,h,w) as the reference builds it (spec §4).

    ``n = randn(B,4,F,h,w)`` then ``o = randn(B,4,F,1,1)``, both drawn in that order from
    ``generator`` in float32 on the generator's device (a CPU generator gives the same noise on any
    target device). Default: ``x_T = sqrt(ab_p) ref + sqrt(1 - ab_p) (n + offset_noise * o)``.
    ``offset_after_prior=True`` (the reference's long-video script):
    ``x_T = sqrt(ab_p) ref + sqrt(1 - ab_p) n + offset_noise * o``.
    ``noise_prior_t=None`` or ``ref_latent=None`` skips the prior (pure noise).
    """
    if len(shape) != 5:
        raise ValueError(f"latent shape must be (B,4,F,h,w), got {tuple(shape)}")
    b, c, f, h, w = (int(s) for s in shape)
    gen_device = generator.device
    noise = torch.randn((b, c, f, h, w), generator=generator, device=gen_device, dtype=torch.float32)
    offset = torch.randn((b, c, f, 1, 1), generator=generator, device=gen_device, dtype=torch.float32)
    target = torch.device(device) if device is not None else (
        ref_latent.device if ref_latent is not None else gen_device)
    noise = noise.to(target)
    offset = offset.to(target)
    if not offset_after_prior:
        noise = noise + offset_noise * offset
    if noise_prior_t is not None and ref_latent is not None:
        if ref_latent.shape != (b, c, h, w):
            raise ValueError(f"ref_latent must be (B,4,h,w) = {(b, c, h, w)}, got {tuple(ref_latent.shape)}")
        t = int(noise_prior_t)
        if not 0 <= t < NUM_TRAIN_TIMESTEPS:
            raise ValueError(f"noise_prior_t must be in 0..{NUM_TRAIN_TIMESTEPS - 1}, got {t}")
        ab = reference_alphas_cumprod()[t]
        a = ab.sqrt().to(target, torch.float32)  # float64 value rounded to float32, as the reference
        s = (1.0 - ab).sqrt().to(target, torch.float32)
        ref = ref_latent.to(target, torch.float32).unsqueeze(2)  # (B,4,h,w) -> (B,4,1,h,w), broadcast over F
        noise = a * ref + s * noise
    if offset_after_prior:
        noise = noise + offset_noise * offset
    return noise.to(dtype)


def apply_guidance(v_uncond: torch.Tensor, v_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``v_uncond + scale * (v_cond - v_uncond)`` (spec §4)."""
    return v_uncond + scale * (v_cond - v_uncond)
