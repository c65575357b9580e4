"""The composition root: which model the app or the CLI runs on (lazy animator and pose detector
factories, one tiny-model cache, status text) and the studio built on it. No Gradio here;
``ui/runtime.py`` (the app) and ``unianimate/__main__.py`` (the CLI) both build through it.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from unianimate import demo_model
from unianimate.demo_model import DEMO_MODEL_NAME, DemoDefaults
from unianimate.errors import InputError, UniAnimateError
from unianimate.hub import BUNDLE_REPO
from unianimate.studio import Studio, StudioRuntime, default_runtime

log = logging.getLogger(__name__)

#: the released weights' repository (the app's and the CLI's default model, ``"real"``)
DEFAULT_MODEL_SOURCE = BUNDLE_REPO
#: the tiny model's project settings: short, cheap segments (it runs on a CPU and paints noise)
TINY_PROJECT_SETTINGS: dict[str, Any] = {"frames_per_segment": 8, "steps": 4}
_TINY_CACHE: dict[str, Any] = {}
#: the LoRA adapter choice meaning "no adapter"
NO_LORA = "none"
_TINY_LOCK = threading.Lock()


def released_weights_present() -> bool:
    """Whether the released UNet, CLIP and VAE are on this machine (the Hugging Face cache; no
    network). The DWPose files do not count: the model runs without them."""
    from unianimate import hub
    try:
        missing = hub.missing_files(None)
    except (UniAnimateError, OSError, ValueError) as err:
        log.warning("cannot check the weights files: %s", err)
        return False
    return not any(not f.key.startswith("dwpose") for f in missing)


def choose_model(model: str | None, demo_dir: str | os.PathLike | None = None) -> str:
    """The model spec to run: ``auto`` (or empty) becomes ``real`` when the released weights are on
    this machine, else ``demo`` when the demo folder holds a model, else ``real`` (the app then
    offers the download, as before the demo model existed); anything else is returned as is."""
    spec = str(model or "auto").strip()
    if spec.lower() != "auto":
        return spec
    if released_weights_present():
        return "real"
    return "demo" if demo_model.has_demo_model(demo_dir) else "real"


class ModelManager:
    """The model the app uses: ``"tiny"``, ``"real"`` (the released weights), ``"demo"`` (the demo
    model trained on drawn people, ``assets/demo`` or ``demo_dir``), ``"auto"`` (see
    :func:`choose_model`) or a repo/folder.

    Builds nothing at construction; :meth:`pipeline_factory` and :meth:`detector_factory` are
    handed to :class:`unianimate.studio.Studio`, which calls them on first use.
    """

    def __init__(self, model: str = "real", device: str = "auto", dtype: str = "auto",
                 dwpose: str | None = None, detector_local_only: bool | None = None,
                 lora: str | os.PathLike | None = None,
                 demo_dir: str | os.PathLike | None = None,
                 lora_dir: str | os.PathLike | None = None) -> None:
        model = choose_model(model or "real", demo_dir)
        self.spec = model
        self.is_tiny = model.lower() == "tiny"
        self.is_demo = model.lower() == "demo"
        #: the demo model's native size and sampler settings (None for other models)
        self.demo_defaults: DemoDefaults | None = None
        #: the demo folder's own example (reference image, pose JSON), when it has one
        self.demo_example: tuple[Path, Path] | None = None
        if self.is_demo:
            folder = demo_model.demo_dir(demo_dir)
            if not demo_model.has_demo_model(folder):
                raise InputError(
                    f"--model demo: no demo model in the folder {folder.name!r} (it needs the files "
                    "`python -m unianimate.train export --run-dir RUN --dest assets/demo --half` "
                    "writes); use --model tiny or the released weights")
            self.demo_defaults = demo_model.read_defaults(folder)
            self.demo_example = demo_model.example_files(folder)
            model = str(folder.resolve())
        #: weights source for the hub module: None = each file's default Hub repository
        self.source: str | None = None if self.is_tiny or model.lower() == "real" else model
        self.device = device
        self.dtype = dtype
        #: where the DWPose ONNX files come from (a folder or repo); None = with the model
        self.dwpose = dwpose
        #: True: use the DWPose files only when already here (never wait on a download, e.g. the
        #: CLI with a pose file); None: the default below
        self.detector_local_only = detector_local_only
        #: the folder of LoRA adapter files the app may choose from (:meth:`select_lora`)
        self.lora_dir: Path | None = None
        if lora_dir is not None:
            if self.is_tiny:
                raise InputError("--lora-dir needs the released weights (or a model folder), "
                                 "not --model tiny")
            self.lora_dir = Path(lora_dir).expanduser()
            if not self.lora_dir.is_dir():
                raise InputError(f"--lora-dir: {self.lora_dir.name!r} is not a folder")
        #: LoRA adapters (``python -m unianimate.train finetune --lora-rank N``) folded into the
        #: UNet once the weights are loaded; not for the tiny model (its pipeline is shared)
        self.lora: Path | None = None
        if lora is not None:
            if self.is_tiny:
                raise InputError("--lora needs the released weights (or a model folder), not "
                                 "--model tiny")
            self.lora = self._start_lora(Path(lora).expanduser())
        self.last_error: str | None = None
        self._lock = threading.Lock()

    # ---- LoRA adapters ---------------------------------------------------------------------
    def _start_lora(self, path: Path) -> Path:
        """The ``--lora`` file, checked; with ``--lora-dir`` it is one of that folder's files
        (its name alone is enough)."""
        if self.lora_dir is not None:
            if not path.is_file() and path.name == str(path):
                path = self.lora_dir / path.name
            if path.name not in self.lora_choices()[1:] or \
                    path.resolve() != (self.lora_dir / path.name).resolve():
                raise InputError(f"--lora: {path.name!r} is not an adapter file of --lora-dir; "
                                 "with --lora-dir, give the name of one of its .safetensors files")
        elif not path.is_file():
            raise InputError(f"--lora: no adapter file {path.name!r}")
        return path

    @property
    def lora_name(self) -> str | None:
        """The file name of the adapter folded into the UNet (None: no adapter)."""
        return None if self.lora is None else self.lora.name

    def lora_choices(self) -> list[str]:
        """``"none"`` and the adapter file names (``.safetensors`` directly in ``lora_dir``);
        only ``"none"`` without a folder. Names only, never paths."""
        names: list[str] = []
        if self.lora_dir is not None:
            try:
                names = sorted(p.name for p in self.lora_dir.iterdir()
                               if p.suffix == ".safetensors" and p.is_file())
            except OSError as err:
                log.warning("cannot list the LoRA folder: %s", err)
        return [NO_LORA, *names]

    def lora_choice(self) -> str:
        """The dropdown value of the current adapter (``"none"`` without one)."""
        return self.lora_name or NO_LORA

    def lora_path(self, name: Any) -> Path | None:
        """The adapter file of a choice from :meth:`lora_choices` (None for ``"none"``);
        InputError naming the field for anything else (a path, a name not in the folder)."""
        if self.is_tiny:
            raise InputError("LoRA adapter: not for --model tiny (random weights); start the app "
                             "with the released weights or a model folder")
        if self.lora_dir is None:
            raise InputError("LoRA adapter: none can be chosen here (start the app with "
                             "--lora-dir FOLDER to choose from the adapters in it)")
        if name is None or name == "" or name == NO_LORA:
            return None
        choices = self.lora_choices()
        if not isinstance(name, str) or name not in choices[1:]:
            shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
            raise InputError(f"LoRA adapter must be one of {', '.join(choices)}; got {shown}")
        return self.lora_dir / name

    def select_lora(self, name: Any) -> bool:
        """Use the adapter ``name`` of ``lora_dir`` (``"none"``: no adapter) from the next load
        on; True when that changes the model (the caller drops the loaded pipeline)."""
        path = self.lora_path(name)
        if path == self.lora:
            return False
        log.info("LoRA adapter: %s (was %s)", path.name if path else NO_LORA, self.lora_choice())
        self.lora = path
        self.last_error = None
        return True

    def _lora_note(self) -> str:
        """A sentence naming the adapter for the status text ("" without one)."""
        if self.lora is None:
            return ""
        return (f" LoRA adapter: `{self.lora.name}` (folded into the UNet when the weights "
                "load).")

    # ---- factories handed to the studio ----------------------------------------------------
    def pipeline_factory(self, report: Callable[[str], None] | None = None,
                         precision: str = "auto") -> Any:
        """Build the pipeline (tiny random weights, or the released weights from ``source``)
        with the UNet in ``precision`` ("auto": the manager's ``dtype``; see
        :func:`unianimate.pipeline.check_precision` for what each device supports)."""
        from unianimate.pipeline import UniAnimatePipeline, check_precision
        dtype = self.dtype if precision == "auto" else check_precision(precision, self.device)
        lora = self.lora                   # one adapter for this build, even if switched meanwhile
        try:
            if self.is_tiny:
                device = "cpu" if self.device == "auto" else self.device
                with _TINY_LOCK:      # one tiny pipeline per process, device and precision
                    pipe = _TINY_CACHE.get((device, dtype))
                    if pipe is None:
                        log.warning("TINY pipeline with random weights: its output is noise")
                        pipe = _TINY_CACHE[(device, dtype)] = UniAnimatePipeline.tiny(
                            seed=0, device=device, dtype=dtype)
            else:
                if report is not None and self.is_demo:
                    report(f"loading the {DEMO_MODEL_NAME} ({self.where})")
                elif report is not None:
                    report(f"loading the UniAnimate weights from {self.where} (downloading what "
                           "is missing; several GB on first use)")

                def stage(message: str, fraction: float) -> None:
                    if report is not None:
                        report(f"{message} ({fraction:.0%})")

                pipe = UniAnimatePipeline.from_pretrained(self.source, device=self.device,
                                                          dtype=dtype, progress=stage)
                if lora is not None:
                    from unianimate.training.lora import fold_lora_into_pipeline
                    if report is not None:
                        report(f"folding the LoRA adapter {lora.name} into the UNet")
                    # the model name candidates record gets the adapter and its hash
                    layers = fold_lora_into_pipeline(pipe, lora)
                    log.info("LoRA adapters %s folded into %d layers", lora.name, layers)
        except UniAnimateError as err:
            self.last_error = str(err)
            raise
        self.last_error = None
        return pipe

    def detector_factory(self) -> Any:
        """The DWPose detector (from ``dwpose`` when given, else with the model's weights). With
        the tiny model and no ``dwpose`` it is used only when its files are already on this
        machine (no download); otherwise they are fetched like the other weights."""
        from unianimate import hub
        from unianimate.pose import DWPoseDetector
        offline_model = self.is_tiny or self.is_demo     # weights that never need the Hub
        local_only = self.detector_local_only
        if local_only is None and offline_model and self.dwpose is None:
            local_only = True
        source = self.dwpose if self.dwpose is not None else (None if offline_model else self.source)
        det = hub.resolve_file("dwpose_det", source, local_files_only=local_only)
        pose = hub.resolve_file("dwpose_pose", source, local_files_only=local_only)
        return DWPoseDetector.from_files(det, pose)

    # ---- VRAM / speed --------------------------------------------------------------------
    def vram_bytes(self) -> int | None:
        """Memory of the GPU the model runs on (None: it runs on the CPU). On a ZeroGPU Space
        the main process sees no GPU; ``UNIANIMATE_VRAM_GB`` tells it what the worker gets."""
        told = os.environ.get("UNIANIMATE_VRAM_GB", "").strip()
        if told:
            try:
                return int(float(told) * 1024 ** 3)
            except ValueError:
                raise InputError(f"UNIANIMATE_VRAM_GB must be a number of GB, got {told!r}") \
                    from None
        import torch
        from unianimate.utils import resolve_device
        device = resolve_device(self.device)
        if device.type != "cuda":
            return None
        return int(torch.cuda.get_device_properties(device).total_memory)

    def precision_choices(self) -> tuple[str, ...]:
        """The precisions the model's device supports ("auto" first)."""
        from unianimate.pipeline import supported_precisions
        if os.environ.get("UNIANIMATE_VRAM_GB", "").strip():     # a ZeroGPU Space's worker
            return ("auto", "fp32", "fp16", "bf16")
        return supported_precisions(self.device)

    # ---- status ----------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """The model's name for the UI's one-line status (never calls noise or the demo model
        UniAnimate)."""
        if self.is_tiny:
            return "tiny random-weight test pipeline (output is noise)"
        if self.is_demo:
            return DEMO_MODEL_NAME
        return "UniAnimate"

    def project_settings(self) -> dict[str, Any]:
        """Generation settings every new project of this model starts with (empty: the studio's
        defaults): short cheap segments for the tiny model, the demo model's native segment
        length and sampler settings."""
        if self.is_tiny:
            return dict(TINY_PROJECT_SETTINGS)
        if self.demo_defaults is not None:
            return self.demo_defaults.settings()
        return {}

    @property
    def where(self) -> str:
        """Where the weights come from, for messages."""
        if self.is_demo:
            return f"`{Path(str(self.source)).name}`"
        if self.source is None:
            return f"the Hugging Face Hub (`{DEFAULT_MODEL_SOURCE}` and the repositories below)"
        return f"`{self.source}`"

    def missing(self) -> list[Any]:
        """Weights files not on this machine (never touches the network)."""
        if self.is_tiny or self.is_demo:
            return []
        from unianimate import hub
        try:
            return hub.missing_files(self.source)
        except (UniAnimateError, OSError, ValueError) as err:
            log.warning("cannot check the weights files: %s", err)
            return []

    def status_markdown(self, loaded: dict[str, Any] | None = None) -> str:
        """A human summary: which model, whether it is loaded, what is missing and how to get it."""
        loaded = loaded or {}
        if self.is_tiny:
            state = "loaded" if loaded.get("loaded") else "builds in a second on first use"
            return ("**Model: tiny random-weight pipeline** (`--model tiny`, " + state + "). "
                    "It exercises the whole studio, but its output is noise, not animation. "
                    "Start `python app.py --model real` for the released UniAnimate weights.")
        if self.is_demo:
            d = self.demo_defaults
            state = "loaded" if loaded.get("loaded") else "loads in seconds on first use"
            size = f" at {d.width}x{d.height}, {d.frames} frames a segment" if d else ""
            return (f"**Model: {DEMO_MODEL_NAME}** (`--model demo`, {state}). A small model of "
                    "UniAnimate's architecture trained by this project on procedural drawn people"
                    f"{size}: it animates figures like the example, not photos (see its "
                    "MODEL_CARD.md). For the released UniAnimate weights start "
                    "`python app.py --model real`." + self._lora_note())
        lines = [f"**Model: UniAnimate** from {self.where}"]
        if loaded.get("loaded"):
            lines[0] += f" — loaded ({loaded.get('model_name')})."
            return "\n\n".join(lines)
        note = [f"\n{self._lora_note().strip()}"] if self.lora is not None else []
        from unianimate import hub
        folder = Path(str(self.source)).expanduser() if self.source is not None and (
            hub.is_local_source(self.source) or str(self.source).startswith((".", "/", "~"))) \
            else None
        if folder is not None and not folder.is_dir():
            lines[0] += f" — the weights folder `{folder}` does not exist."
            lines.append("Create it and put the weights files in it (see the README's weights "
                         "table), or start `python app.py` to download them from the Hub. To try "
                         "the studio without weights: `python app.py --model tiny`.")
            return "\n".join(lines + note)
        missing = self.missing()
        if not missing:
            lines[0] += " — all files are on this machine; they load on the first generation " \
                        "(or press *Load model*)."
        else:
            how = ("downloads are off (`HF_HUB_OFFLINE`), so put them in place by hand"
                   if hub.offline() else
                   "they are downloaded into the Hugging Face cache on first use (or press "
                   "*Load model*); without network access get them by hand")
            lines[0] += f" — {len(missing)} file(s) are not on this machine yet; {how}:"
            if folder is not None:
                how = f"put them into `{folder}`"
                lines[0] = lines[0].rsplit(" — ", 1)[0] + \
                    f" — {len(missing)} file(s) are missing in the folder; {how}:"
            for f in missing:
                repo = self.source if self.source and folder is None and f.bundle else f.repo_id
                lines.append(f"- `{f.filename}` ({f.description}, {f.size}) from `{repo}`: "
                             f"`{f.command(repo, local_dir=folder)}`")
            if any(f.key.startswith("vae_") for f in missing):
                lines.append("\n(The VAE files may be replaced by `v2-1_512-ema-pruned.ckpt` from "
                             "`camenduru/unianimate`.)")
            lines.append("\nOr pass a folder holding them: `python app.py --model /path/to/folder`. "
                         "To try the studio without weights: `python app.py --model tiny`.")
        lines += note
        if self.last_error:
            lines.append(f"Last attempt failed: {self.last_error}")
        return "\n".join(lines)

    def status_text(self) -> str:
        """One-line status for the log."""
        if self.is_tiny:
            return "tiny random-weight pipeline (output is noise)"
        lora = f" + LoRA {self.lora.name}" if self.lora is not None else ""
        if self.is_demo:
            return f"{DEMO_MODEL_NAME}{lora} from {self.where}"
        missing = self.missing()
        return (f"UniAnimate{lora} from {self.where}; " +
                (f"missing {', '.join(f.filename for f in missing)}" if missing else
                 "all files present"))


def build_studio(projects_dir: str | os.PathLike, models: ModelManager,
                 runtime: StudioRuntime | None = None,
                 detector_factory: Callable[[], Any] | None = None) -> Studio:
    """The app service on ``projects_dir`` with the model manager's lazy factories and the
    process's runtime (GPU queue, jobs, locks); ``detector_factory`` replaces the manager's
    (the CLI hands over a detector it built before creating the project)."""
    return Studio(Path(projects_dir), pipeline_factory=models.pipeline_factory,
                  detector_factory=detector_factory or models.detector_factory,
                  runtime=runtime or default_runtime())


__all__ = ["DEFAULT_MODEL_SOURCE", "NO_LORA", "ModelManager", "build_studio", "choose_model",
           "released_weights_present"]
