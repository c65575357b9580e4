"""Event handlers of the studio UI: plain methods that call :class:`unianimate.studio.Studio`.

Every handler takes the session's owner token (a ``gr.State``, never an API parameter) first,
then the visible inputs, and returns plain values or ``gr.update`` dicts. Service errors become
``gr.Error`` with the service's message, so the app keeps serving. Nothing here touches tensors.

The tuple a "view" handler returns follows :data:`VIEW_FIELDS`; ``ui.blocks`` maps the names to
components, and tests turn it back into a dict with ``dict(zip(VIEW_FIELDS, result))``.
"""
from __future__ import annotations

import functools
import html
import logging
import math
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from unianimate.errors import GenerationCancelled, InputError, UniAnimateError
from unianimate.imaging import check_size
from unianimate.pose.align import USER_MODES, check_parts
from unianimate.pose.importers import IMAGE_FPS_RANGE, KINDS, classify_driving
from unianimate.studio.poses import needs_detector
from unianimate.studio import (OFFLOAD_CHOICES, PRECISIONS, GenerationSettings, SpeedOptions,
                               speed_preset)
from gradio.utils import get_upload_folder

from ui.files import SessionFiles
from ui.runtime import ModelManager, describe_error

log = logging.getLogger(__name__)

#: resolution presets (label -> (width, height)); "custom" uses the width/height boxes
PRESETS: dict[str, tuple[int, int] | None] = {
    "512x768": (512, 768),
    "768x512": (768, 512),
    "768x1216": (768, 1216),
    "custom": None,
}
PRESET_CHOICES = [("512 x 768 (portrait, as trained)", "512x768"),
                  ("768 x 512 (landscape)", "768x512"),
                  ("768 x 1216 (portrait, large)", "768x1216"),
                  ("custom (multiples of 64)", "custom")]
FIT_CHOICES = [("crop (keep aspect, fill)", "crop"), ("pad (keep aspect, letterbox)", "pad"),
               ("stretch (as the reference code)", "stretch")]
#: candidate slots shown side by side (as many as the UI lets one generate at once)
SLOTS = int(GenerationSettings.limit("candidates").ui_hi)
#: the example files (their cached copies are shared by every session: never removed)
ASSETS = Path(__file__).resolve().parent.parent / "assets"
_TOKEN_RE = re.compile(r"^[0-9a-f]{32}$")
_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
_VIDEO_EXT = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"}

#: the bounds of every number the UI takes: (label, minimum, maximum or None, whole number).
#: The components show them (``ui.blocks``); the handlers check them with :func:`check_number`,
#: so an API caller gets a message naming the field and the range.
#: The generation settings' entries come from their field metadata (``GenerationSettings.limit``).
LIMITS: dict[str, tuple[str, float, float | None, bool]] = {
    **{name: (lim.label, lim.ui_lo, lim.ui_hi, lim.whole)
       for name, lim in ((n, GenerationSettings.limit(n)) for n in
                         ("frames_per_segment", "steps", "guidance", "noise_prior_t",
                          "base_seed", "candidates", "window", "overlap"))},
    "decode_chunk": (lambda lim: (lim.label, lim.ui_lo, lim.ui_hi, lim.whole))(
        SpeedOptions.limit("decode_chunk")),
    "frame_interval": ("frame interval", 1, 16, True),
    "trim": ("trim time (seconds)", 0.0, None, False),
    "quality": ("quality (H.264 CRF)", 0, 51, True),
    "smooth": ("smoothing strength", 0.0, 1.0, False),
    "image_fps": ("frame rate of pose images (fps)", *IMAGE_FPS_RANGE, False),
    "person": ("person (index in the first frame)", 0, 16, True),
}


def check_number(field: str, value: Any) -> int | float:
    """``value`` as the number :data:`LIMITS` allows for ``field``; InputError naming the field
    and the allowed range otherwise."""
    label, lo, hi, whole = LIMITS[field]
    span = f"{lo:g}..{hi:g}" if hi is not None else f"{lo:g} or more"
    kind = "a whole number" if whole else "a number"
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{label} must be {kind} in {span}, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(x) or (whole and not x.is_integer()):
        raise InputError(f"{label} must be {kind} in {span}, got {value!r}")
    if x < lo:
        raise InputError(f"{label}: {x:g} is below the minimum value {lo:g} (allowed {span})")
    if hi is not None and x > hi:
        raise InputError(f"{label}: {x:g} is above the maximum value {hi:g} (allowed {span})")
    return int(x) if whole else x


def check_sampler(value: Any) -> str:
    """``value`` as a sampler name (``GenerationSettings.sampler_choices``); InputError naming
    the field and the allowed values otherwise."""
    choices = GenerationSettings.sampler_choices()
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"sampler must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` as one of ``choices``; InputError naming the field and the choices otherwise."""
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{field} must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_flag(field: str, value: Any) -> bool:
    """``value`` as a checkbox's True/False; InputError naming the field otherwise."""
    if not isinstance(value, bool):
        raise InputError(f"{field} must be true or false; got {value!r}")
    return value


def candidate_page(cands: list[Any], page: Any) -> tuple[int, list[Any]]:
    """The page number actually shown (clamped; None: the last page) and its candidates
    (``SLOTS`` per page, oldest first)."""
    last = max(0, (len(cands) - 1) // SLOTS)
    try:
        number = last if page is None or page == "" else min(max(0, int(page)), last)
    except (TypeError, ValueError):
        number = last
    return number, cands[number * SLOTS:(number + 1) * SLOTS]


def pager_text(cands: list[Any], number: int) -> str:
    """The grid's position line: which candidates are shown, of how many, and the chosen one."""
    if not cands:
        return ""
    pages = (len(cands) - 1) // SLOTS + 1
    first, last = number * SLOTS, min(len(cands), (number + 1) * SLOTS) - 1
    chosen = next((c.id for c in cands if c.chosen), None)
    return (f"Candidates {cands[first].id}-{cands[last].id} of {len(cands)} · page "
            f"{number + 1}/{pages}" + (f" · chosen: **{chosen}**" if chosen else ""))


VIEW_FIELDS: tuple[str, ...] = (
    "project", "reference_preview", "pose_video", "pose_overlay", "pose_info",
    "frames_per_segment", "steps", "guidance", "noise_prior", "base_seed", "candidates",
    "segment", *[f"slot{i}_video" for i in range(SLOTS)], *[f"slot{i}_info" for i in range(SLOTS)],
    "measures", "candidate", "timeline_md", "path_gallery", "project_json",
    "sampler",     # last: added after the API's first release (positions of the others kept)
    "cand_page", "cand_pager",   # the candidate grid's page (0-based) and its "c4-c7 of 10" line
    # issue 11: the project's VRAM / speed settings and long mode
    "sequential_guidance", "precision", "long_mode", "window", "overlap",
)
#: the project settings of the "VRAM / speed" section and the long mode, in the order the
#: ``/generate_candidates`` endpoint takes them (after ``sampler``; then the run's ``offload``
#: and ``decode_chunk``)
SPEED_SETTINGS: tuple[str, ...] = ("sequential_guidance", "precision", "long_mode", "window",
                                   "overlap")
OFFLOAD_LABELS = [("auto (on for a GPU)", "auto"), ("on", "on"), ("off", "off")]
#: the Person field's "follow the main dancer" value (as empty or None: the largest, most
#: central person of the first frame), then the indices the first-frame picker numbers
MAIN_PERSON = "main"
PERSON_CHOICES: list[tuple[str, str | int]] = [
    ("the main one (largest, most central)", MAIN_PERSON),
    *[(str(i), i) for i in range(int(LIMITS["person"][1]), int(LIMITS["person"][2]) + 1)]]
#: the measures table's columns and what each means (shown under the table; from
#: ``unianimate.studio.measures``). Lower seam, stability, drift and score are better.
MEASURE_HELP: dict[str, str] = {
    "candidate": "its id in this segment (c0, c1, ...)",
    "seed": "the noise seed it was made with (a re-roll takes the next one)",
    "status": "done, running, interrupted or failed",
    "seam": "0-255, how much its first frame differs from the previous chosen segment's last "
            "frame (lower = smoother join; – for the first segment)",
    "stability": "0-255, mean frame-to-frame change inside it (lower = steadier; compare "
                 "candidates of the same segment only)",
    "drift": "0-255, distance of its mean colour from the reference image's mean colour, the "
             "same for every segment: compare it along the chosen path (a value rising segment "
             "after segment means colours creep; the first segment's value is the model's "
             "baseline: the tiny random model's noise sits far from any reference)",
    "score": "seam + stability: the 'best' rule (lower is better)",
    "seconds": "generation time",
    "chosen": "yes for the candidate on the chosen path",
}
MEASURE_HEADERS = list(MEASURE_HELP)


_ABS_PATH = re.compile(r"(?<![\w.:/~-])/[^\s/'\"]+(?:/[^\s/'\",;()]+)+")


def without_paths(text: str) -> str:
    """A message with every absolute server path cut to its last part (the file name)."""
    return _ABS_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], text)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn service errors into ``gr.Error`` (the service's message); log unexpected ones."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except UniAnimateError as err:
            # an expected user error: one INFO line, no traceback, no ids (the text, which may
            # name a project, only at DEBUG)
            log.info("%s refused (%s)", fn.__name__, type(err).__name__)
            log.debug("%s refused: %s", fn.__name__, without_paths(str(err)))
            raise gr.Error(without_paths(describe_error(err)), title="Cannot do that",
                           print_exception=False) from None
        except Exception as err:  # noqa: BLE001 - the app must keep serving; the log has the trace
            log.exception("%s failed", fn.__name__)
            raise gr.Error(without_paths(f"Unexpected error ({type(err).__name__}: {err}). The "
                                         "app is still running; the server log has the "
                                         "details."), print_exception=False) from None
    return wrapper


def measures_help() -> str:
    """The measures table's column help as Markdown."""
    return "\n".join(f"- **{k}**: {v}" for k, v in MEASURE_HELP.items())


def _upload_name(path: str | Path) -> str:
    """The name the user gave an upload (Gradio keeps it as the file name of its cached copy)."""
    return Path(path).name


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    return f" · ETA {seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f" · ETA {seconds}s"


def parse_size(resolution: str, width: Any, height: Any) -> tuple[int, int]:
    """(width, height) of a preset, or the custom boxes checked to be multiples of 64."""
    if resolution not in PRESETS:
        raise InputError(f"unknown resolution {resolution!r}; use one of {list(PRESETS)}")
    size = PRESETS[resolution]
    if size is not None:
        return size
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError):
        raise InputError("custom width and height must be whole numbers") from None
    if w != float(width) or h != float(height):
        raise InputError("custom width and height must be whole numbers")
    check_size(h, w)
    return w, h


def preset_size(resolution: str, width: Any, height: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Show a preset's width and height in the custom boxes (editable only for "custom")."""
    size = PRESETS.get(resolution)
    if size is None:
        return gr.update(interactive=True), gr.update(interactive=True)
    return gr.update(value=size[0], interactive=False), gr.update(value=size[1], interactive=False)


def markdown_text(message: str) -> str:
    """``message`` for a gr.Markdown: ``<``/``>``/``&`` escaped outside `code spans` (a text such
    as "<weights folder>" must not vanish as an HTML tag), code spans left as written (Markdown
    shows them literally, so an escape there would show as "&lt;")."""
    parts = message.split("`")
    if len(parts) % 2 == 0:                  # an unbalanced backtick: no code spans at all
        return html.escape(message, quote=False)
    return "`".join(p if i % 2 else html.escape(p, quote=False) for i, p in enumerate(parts))


class StudioHandlers:
    """The UI's actions on one :class:`~unianimate.studio.Studio`.

    ``isolate_sessions``: each browser session (owner token) sees only its own projects; when
    False every session shares the projects of owner ``None`` (a single-user machine, and the CLI).
    """

    def __init__(self, studio: Any, models: ModelManager, isolate_sessions: bool = True,
                 files: SessionFiles | None = None) -> None:
        self.studio = studio
        self.models = models
        self.isolate = isolate_sessions
        self.files = files or SessionFiles(
            get_upload_folder(), studio.root / ".studio",
            protected=[p for p in ASSETS.iterdir() if p.is_file()] if ASSETS.is_dir() else [])
        #: settings given to every new project (the tiny CPU model gets short, cheap segments;
        #: the demo model its native segment length and sampler settings)
        self.new_project_settings: dict[str, Any] = models.project_settings()
        #: (owner, project, segment) -> the first candidate of the latest generation / re-roll:
        #: "Candidate to choose" follows it until one is chosen
        self._fresh: dict[tuple[str | None, str, str], str] = {}

    # ---- sessions ----------------------------------------------------------------------
    def owner_of(self, token: str | None, request: gr.Request | None = None) -> str | None:
        """The service owner id of a session: its token, else the Gradio session hash."""
        if not self.isolate:
            return None
        if token and _TOKEN_RE.match(str(token)):
            return f"u-{token}"
        session = getattr(request, "session_hash", None) if request is not None else None
        if session:
            return f"s-{session}"
        raise gr.Error("This request has no session; reload the page.", print_exception=False)

    def init_session(self, stored_token: str | None, request: gr.Request | None = None
                     ) -> tuple[str, str, dict[str, Any], str]:
        """Page load: reuse the browser's stored owner token or make one; list its projects."""
        token = stored_token if stored_token and _TOKEN_RE.match(str(stored_token)) else \
            uuid.uuid4().hex
        owner = self.owner_of(token, request)
        if self.isolate and self.studio.store.is_legacy_owner(owner):
            # a token an older version kept in clear on disk: the browser gets a new one
            token = uuid.uuid4().hex
            self.studio.store.transfer(owner, self.owner_of(token, request))
        choices = self._project_choices(self.owner_of(token, request))
        return token, token, gr.update(choices=choices), self.model_status()

    def reopen_last(self, token: str | None, last_project: str | None,
                    request: gr.Request | None = None) -> Any:
        """Page load, after :meth:`init_session`: select the project this browser had open
        (kept in its storage) when it is still one of this owner's; otherwise nothing."""
        if not last_project:
            return gr.update()
        owner = self.owner_of(token, request)
        if not any(pid == last_project for _, pid in self._project_choices(owner)):
            return gr.update()
        return gr.update(value=last_project)

    @staticmethod
    def remember_project(project_id: str | None) -> str | None:
        """The open project, to keep in the browser's storage for the next page load."""
        return project_id or None

    # ---- model -------------------------------------------------------------------------
    def model_status(self) -> str:
        """Markdown: which model, loaded or not, what is missing and how to get it."""
        return self.models.status_markdown(self.studio.pipeline_info())

    def weights_missing(self) -> bool:
        """Whether released weights files are not on this machine (never for the tiny model)."""
        return bool(self.models.missing())

    def model_line(self) -> str:
        """The model in one short line (the details are in :meth:`model_status`)."""
        info = self.studio.pipeline_info()
        if self.models.is_tiny:
            return "**Model:** tiny random-weight test pipeline (output is noise)."
        lora = self.models.lora_name
        with_lora = f" + LoRA adapter `{lora}`" if lora else ""
        if self.models.is_demo:
            return (f"**Model:** {self.models.label}{with_lora}" +
                    (", loaded." if info.get("loaded") else "."))
        if info.get("loaded"):     # the loaded name has the adapter and its hash in it
            return f"**Model:** UniAnimate ({info.get('model_name')}), loaded."
        missing = self.models.missing()
        if missing:
            return (f"**Model:** UniAnimate{with_lora}, {len(missing)} weights file(s) not on "
                    "this machine yet: see *Model details and weights download*.")
        return (f"**Model:** UniAnimate{with_lora}, weights on this machine (they load on first "
                "use).")

    def lora_choices(self) -> dict[str, Any]:
        """The "LoRA adapter" dropdown: ``none`` and the adapter files of ``--lora-dir`` (names
        only), the current one selected."""
        return gr.update(choices=self.models.lora_choices(), value=self.models.lora_choice())

    @user_errors
    def select_lora(self, name: str | None) -> str:
        """Model details: use the LoRA adapter ``name`` (a file of ``--lora-dir``, or "none").
        The loaded model is dropped (after a running generation) so that the next generation
        loads the weights with that adapter folded in; returns the model status."""
        self.models.lora_path(name)          # refuse a bad name before waiting for the GPU
        if self.studio.switch_model(lambda: self.models.select_lora(name)):
            gr.Info(f"LoRA adapter: {self.models.lora_choice()} (the model loads again on the "
                    "next generation)")
        return self.model_status()

    @user_errors
    def load_model(self, progress: gr.Progress = gr.Progress(track_tqdm=True)) -> str:
        """Load (and download when needed) the model now, with progress."""
        progress(0, desc="Loading the model (downloads show their own progress)")
        try:
            self.studio.pipeline(self._progress_fn(progress))
        except UniAnimateError as err:
            self.models.last_error = str(err)
            gr.Warning(describe_error(err), duration=None)
        return self.model_status()

    # ---- projects ----------------------------------------------------------------------
    def _project_choices(self, owner: str | None) -> list[tuple[str, str]]:
        out = []
        for s in self.studio.list_projects(owner=owner):
            when = time.strftime("%m-%d %H:%M", time.localtime(s.updated))
            label = (f"{s.name} · damaged ({s.error[:60]})" if s.error else
                     f"{s.name} · {s.width}x{s.height} · {s.segments} seg · {when}")
            out.append((label, s.id))
        return out

    @user_errors
    def list_projects(self, token: str | None, request: gr.Request | None = None
                      ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """This session's projects: dropdown choices and a JSON list."""
        owner = self.owner_of(token, request)
        rows = [{"id": s.id, "name": s.name, "width": s.width, "height": s.height,
                 "segments": s.segments, "chosen_frames": s.chosen_frames, "error": s.error}
                for s in self.studio.list_projects(owner=owner)]
        return gr.update(choices=self._project_choices(owner)), rows

    @user_errors
    def create_project(self, token: str | None, reference: str | None, resolution: str,
                       width: float | None, height: float | None, fit: str, name: str | None,
                       request: gr.Request | None = None) -> tuple[str, str, dict[str, Any]]:
        """New project from the reference image, size preset (or custom) and fit mode."""
        owner = self.owner_of(token, request)
        if not reference:
            raise InputError("upload a reference image first (or pick an example)")
        w, h = parse_size(resolution, width, height)
        project = self.studio.create_project(self._upload_path(reference, request),
                                             width=w, height=h,
                                             fit=fit, name=(name or "").strip() or None,
                                             owner=owner)
        if self.new_project_settings:
            self.studio.set_settings(project.id, owner=owner, **self.new_project_settings)
        msg = f"Project **{project.name}** created ({w}x{h}, {fit}). Next: load the driving poses."
        return project.id, msg, self._project_dict(project.id, owner)

    @user_errors
    def set_reference(self, token: str | None, project_id: str | None, reference: str | None,
                      resolution: str, width: float | None, height: float | None, fit: str,
                      request: gr.Request | None = None) -> tuple[str, dict[str, Any]]:
        """Change the reference image, size or fit of a project (before anything is generated)."""
        owner = self.owner_of(token, request)
        pid = self._pid(project_id, owner)
        w, h = parse_size(resolution, width, height)
        self.studio.set_reference(pid, self._upload_path(reference, request) if reference
                                  else None,
                                  width=w, height=h, fit=fit, owner=owner)
        return f"Reference updated ({w}x{h}, {fit}).", self._project_dict(pid, owner)

    # ---- poses -------------------------------------------------------------------------
    @user_errors
    def load_pose_file(self, token: str | None, project_id: str | None, pose_files: Any,
                       trim_start: float | None, trim_end: float | None, frame_interval: float,
                       align: bool, kind: str = "auto", smooth: float = 0.0,
                       align_mode: str = "per-limb", align_parts: Any = ("body", "hands"),
                       image_fps: float = 30.0, person: Any = None,
                       request: gr.Request | None = None
                       ) -> tuple[str, dict[str, Any]]:
        """Driving poses from an uploaded pose JSON, a zip of pose images, several images or a
        video of drawn poses (no detector). The options after ``align``: see
        :meth:`_pose_options`."""
        owner = self.owner_of(token, request)
        interval = self._interval(frame_interval)      # the inputs' own ranges first: they say
        start, end = self._time(trim_start), self._time(trim_end)   # nothing about a project
        opts = self._pose_options(kind, smooth, align_mode, align_parts, image_fps, person)
        pid = self._pid(project_id, owner)
        path, gathered, shown = self._pose_upload(pose_files, request)
        try:
            if Path(path).suffix.lower() in _VIDEO_EXT:
                if classify_driving(path) == "video":
                    raise InputError(f"{shown!r} looks like a real video, not drawn poses; load "
                                     "it in the Driving video tab (its poses are extracted)")
                opts["kind"] = "pose_images"
            info = self.studio.set_poses_from_file(pid, path, frame_interval=interval,
                                                   start=start, end=end, align=bool(align),
                                                   owner=owner, display_name=shown, **opts)
        finally:
            if gathered is not None:
                shutil.rmtree(gathered, ignore_errors=True)
        return self._pose_message(info), self._project_dict(pid, owner)

    def autoload_poses(self, token: str | None, project_id: str | None, pose_files: Any,
                       trim_start: float | None, trim_end: float | None, frame_interval: float,
                       align: bool, kind: str = "auto", smooth: float = 0.0,
                       align_mode: str = "per-limb", align_parts: Any = ("body", "hands"),
                       image_fps: float = 30.0, person: Any = None,
                       request: gr.Request | None = None
                       ) -> tuple[Any, Any]:
        """After Create project: load the pose sequence too when one is already uploaded."""
        if not pose_files or not project_id:
            return gr.update(), gr.update()
        return self.load_pose_file(token, project_id, pose_files, trim_start, trim_end,
                                   frame_interval, align, kind, smooth, align_mode,
                                   align_parts, image_fps, person, request)

    @user_errors
    def extract_poses(self, token: str | None, project_id: str | None, video: str | None,
                      trim_start: float | None, trim_end: float | None, frame_interval: float,
                      align: bool, kind: str = "auto", smooth: float = 0.0,
                      align_mode: str = "per-limb", align_parts: Any = ("body", "hands"),
                      image_fps: float = 30.0, person: Any = None,
                      request: gr.Request | None = None,
                      progress: gr.Progress = gr.Progress()) -> tuple[str, dict[str, Any]]:
        """Driving poses from a video: DWPose on every kept frame, with per-frame progress; a
        video of drawn poses is used as it is (no detector)."""
        owner = self.owner_of(token, request)
        interval = self._interval(frame_interval)
        start, end = self._time(trim_start), self._time(trim_end)
        opts = self._pose_options(kind, smooth, align_mode, align_parts, image_fps, person)
        pid = self._pid(project_id, owner)
        if not video:
            raise InputError("upload a driving video first")
        path = self._upload_path(video, request)
        progress(0, desc="Extracting poses" if needs_detector(Path(path), opts["kind"])
                 else "Reading the drawn poses")
        info = self.studio.set_poses_from_file(pid, path, frame_interval=interval, start=start,
                                               end=end, align=bool(align),
                                               progress=self._progress_fn(progress), owner=owner,
                                               display_name=_upload_name(path), **opts)
        return self._pose_message(info), self._project_dict(pid, owner)

    @user_errors
    def find_people(self, token: str | None, project_id: str | None, video: str | None,
                    trim_start: float | None, trim_end: float | None, frame_interval: float,
                    kind: str = "auto", request: gr.Request | None = None
                    ) -> tuple[Any, ...]:
        """The first-frame dancer picker: the driving video's first frame with people, their
        numbered boxes, a choice per person (the default one preselected; it fills the Person
        field) and what the picker knows for a click on the image (a plain dict)."""
        owner = self.owner_of(token, request)
        interval = self._interval(frame_interval)
        start, end = self._time(trim_start), self._time(trim_end)
        kind = self._pose_options(kind)["kind"]
        pid = self._pid(project_id, owner)
        if not video:
            raise InputError("upload a driving video first")
        path = self._upload_path(video, request)
        found = self.studio.first_frame_people(pid, path, frame_interval=interval, start=start,
                                               end=end, owner=owner, kind=kind)
        choices = [(f"person {i}" + (" (default)" if i == found.default else ""), i)
                   for i, _ in found.people]
        picker = {"people": [[i, list(box)] for i, box in found.people],
                  "default": found.default, "frame_index": found.frame_index,
                  "width": found.width, "height": found.height}
        return (self._served(request, found.image),
                gr.update(choices=choices, value=found.default, visible=True),
                found.default, picker, found.message)

    @staticmethod
    def pick_person(picker: dict[str, Any] | None, evt: gr.SelectData) -> tuple[Any, Any]:
        """A click on the first frame: the person whose box holds the point (the smallest one)
        goes to the picker and the Person field; a click beside every box changes nothing."""
        if not picker or not isinstance(evt.index, (list, tuple)) or len(evt.index) != 2:
            return gr.update(), gr.update()
        from unianimate.studio.views import PeopleInFirstFrame
        found = PeopleInFirstFrame(image="", people=tuple(
            (int(i), tuple(float(v) for v in box)) for i, box in picker["people"]),
            default=picker.get("default"), frame_index=int(picker.get("frame_index", 0)),
            width=int(picker["width"]), height=int(picker["height"]))
        who = found.person_at(*evt.index)
        return (gr.update(), gr.update()) if who is None else (who, who)

    @user_errors
    def preview_smoothing(self, token: str | None, project_id: str | None, smooth: float,
                          request: gr.Request | None = None) -> tuple[str | None, str]:
        """A before | after video of the project's keypoints at this smoothing strength."""
        owner = self.owner_of(token, request)
        strength = float(check_number("smooth", smooth))
        pid = self._pid(project_id, owner)
        video, message = self.studio.smoothing_preview(pid, strength, owner=owner)
        return self._served(request, video), f"Smoothing preview (left: as loaded, right: " \
                                             f"smoothed). {message}"

    @staticmethod
    def _pose_options(kind: Any = "auto", smooth: Any = 0.0, align_mode: Any = "per-limb",
                      align_parts: Any = ("body", "hands"), image_fps: Any = 30.0,
                      person: Any = None) -> dict[str, Any]:
        """The pose options of the UI (all optional: API callers may leave them out), checked
        with the field's name: driving kind, smoothing strength, alignment mode and parts, frame
        rate of pose images, person index (empty = the default person)."""
        if kind not in KINDS:
            raise InputError(f"driving kind must be one of {', '.join(KINDS)}; got {kind!r}")
        if align_mode not in USER_MODES:
            raise InputError(f"alignment mode must be one of {', '.join(USER_MODES)}; "
                             f"got {align_mode!r}")
        parts = check_parts(list(align_parts) if isinstance(align_parts, (list, tuple))
                            else align_parts)
        who = None if person in (None, "", MAIN_PERSON) else int(check_number("person", person))
        return {"kind": kind, "smooth": float(check_number("smooth", smooth)),
                "align_mode": align_mode, "align_parts": parts,
                "image_fps": float(check_number("image_fps", image_fps)), "person": who}

    # ---- generation --------------------------------------------------------------------
    @user_errors
    def generate_candidates(self, token: str | None, project_id: str | None,
                            segment_id: str | None, frames_per_segment: float, steps: float,
                            guidance: float, noise_prior: float, base_seed: float,
                            candidates: float, sampler: str | None = None,
                            sequential_guidance: bool | None = None,
                            precision: str | None = None, long_mode: bool | None = None,
                            window: float | None = None, overlap: float | None = None,
                            offload: str | None = None, decode_chunk: float | None = None,
                            request: gr.Request | None = None,
                            progress: gr.Progress = gr.Progress(track_tqdm=True)
                            ) -> tuple[str | None, str, list[dict[str, Any]]]:
        """Apply the settings, then generate candidates of a segment (default: the active one;
        the first segment when there is none) and show them side by side. ``sampler`` and the
        VRAM / speed and long-mode values after it are optional (older API calls leave them
        out: the project's values are kept; the run's offload and decode chunk: the
        defaults)."""
        owner = self.owner_of(token, request)
        pid = self._pid(project_id, owner)
        changes = self._settings(frames_per_segment, steps, guidance, noise_prior, base_seed,
                                 candidates, sampler)
        changes.update(self._speed_settings(sequential_guidance, precision, long_mode, window,
                                            overlap))
        speed = self._speed(offload, decode_chunk)
        self.studio.set_settings(pid, owner=owner, **changes)
        seg = self._segment_or_active(pid, segment_id, owner)
        return self._generate(pid, seg, None, owner, progress, speed)

    @user_errors
    def reroll(self, token: str | None, project_id: str | None, segment_id: str | None,
               candidates: float, offload: str | None = None, decode_chunk: float | None = None,
               request: gr.Request | None = None,
               progress: gr.Progress = gr.Progress(track_tqdm=True)
               ) -> tuple[str | None, str, list[dict[str, Any]]]:
        """New candidates (fresh seeds) for any segment; older candidates and branches stay.
        ``offload`` and ``decode_chunk`` (optional): the run's VRAM / speed options."""
        owner = self.owner_of(token, request)
        pid = self._pid(project_id, owner)
        speed = self._speed(offload, decode_chunk)
        seg = self._segment_or_active(pid, segment_id, owner)
        if seg is None:
            raise InputError("nothing to re-roll yet: generate the first candidates")
        return self._generate(pid, seg, self._count(candidates), owner, progress, speed)

    def speed_preset(self) -> tuple[Any, ...]:
        """The "auto" VRAM / speed preset from the detected GPU memory: values for precision,
        sequential guidance, offload and decode chunk, and a line saying why."""
        preset = speed_preset(self.models.vram_bytes())
        return (preset.precision, preset.sequential_guidance, preset.offload,
                preset.decode_chunk, f"Auto preset: {html.escape(preset.reason)}.")

    def _generate(self, pid: str, segment_id: str | None, n: int | None, owner: str | None,
                  progress: gr.Progress, speed: SpeedOptions | None = None
                  ) -> tuple[str | None, str, list[dict[str, Any]]]:
        progress(0, desc="Starting")       # "waiting for the GPU" only comes when really queued
        try:
            # on a ZeroGPU Space the GPU boundary is inside the pipeline (unianimate.space)
            run = self.studio.generate_candidates if n is None else self.studio.reroll
            made = run(pid, segment_id, n=n, progress=self._progress_fn(progress), owner=owner,
                       speed=speed)
            message = f"{len(made)} candidate(s) ready: pick one and press **Choose**."
        except GenerationCancelled as err:
            made = []
            gr.Warning(f"Generation cancelled ({err}); finished candidates are kept.")
            message = "Generation cancelled; finished candidates are kept."
        tl = self.studio.timeline(pid, owner=owner)
        seg = segment_id or tl.active_leaf
        if made:
            self._fresh[(owner, pid, seg or "")] = made[0].id
        return seg, message, self._candidates_json(tl, seg)

    @user_errors
    def cancel(self, token: str | None, project_id: str | None,
               request: gr.Request | None = None) -> str:
        """Stop the project's queued or running generation between two steps."""
        owner = self.owner_of(token, request)
        if not project_id:
            return "No project is open."
        if self.studio.cancel(self._pid(project_id, owner), owner=owner):
            return "Cancelling: the generation stops after the current step."
        return "Nothing is running for this project."

    # ---- choosing, continuing, branches ------------------------------------------------
    @user_errors
    def choose(self, token: str | None, project_id: str | None, segment_id: str | None,
               candidate_id: str | None, request: gr.Request | None = None
               ) -> tuple[str, dict[str, Any]]:
        """Choose a candidate of a segment; the chosen path follows it."""
        owner = self.owner_of(token, request)
        pid = self._pid(project_id, owner)
        seg = self._segment_or_active(pid, segment_id, owner)
        if seg is None or not candidate_id:
            raise InputError("generate candidates, then pick one to choose")
        tl = self.studio.choose(pid, seg, str(candidate_id), owner=owner)
        self._fresh.pop((owner, pid, seg), None)
        nxt = (f" Next: **Continue** to frames {tl.next_range[0]}–{tl.next_range[1] - 1}."
               if tl.can_continue else " The poses are used up: export the video.")
        return (f"Chose {candidate_id} of segment {seg}; the chosen path has "
                f"{tl.total_frames} frames.{nxt}", tl.to_dict())

    @user_errors
    def continue_segment(self, token: str | None, project_id: str | None,
                         request: gr.Request | None = None
                         ) -> tuple[str, str, dict[str, Any]]:
        """Start the next segment from the chosen candidate's last frame."""
        owner = self.owner_of(token, request)
        pid = self._pid(project_id, owner)
        seg = self.studio.continue_from(pid, owner=owner)
        tl = self.studio.timeline(pid, owner=owner)
        msg = (f"Segment {seg.id} (poses {seg.start}–{seg.end - 1}) continues from the chosen "
               "last frame. Generate its candidates.")
        return seg.id, msg, tl.to_dict()

    @user_errors
    def select_branch(self, token: str | None, project_id: str | None, segment_id: str | None,
                      request: gr.Request | None = None
                      ) -> tuple[str, str, dict[str, Any]]:
        """Make the branch through a segment the chosen path (other branches stay)."""
        owner = self.owner_of(token, request)
        pid = self._pid(project_id, owner)
        if not segment_id:
            raise InputError("pick a segment of the branch to select")
        tl = self.studio.select_branch(pid, str(segment_id), owner=owner)
        return (str(segment_id),
                f"The chosen path now goes through segment {segment_id} "
                f"({len(tl.path)} segment(s), {tl.total_frames} frames).", tl.to_dict())

    @user_errors
    def timeline(self, token: str | None, project_id: str | None,
                 request: gr.Request | None = None) -> dict[str, Any]:
        """The chosen path, the segment tree and what Continue would do (JSON)."""
        owner = self.owner_of(token, request)
        return self.studio.timeline(self._pid(project_id, owner), owner=owner).to_dict()

    @user_errors
    def rerender(self, token: str | None, project_id: str | None, segment_id: str | None,
                 candidate_id: str | None, request: gr.Request | None = None,
                 progress: gr.Progress = gr.Progress(track_tqdm=True)
                 ) -> tuple[str, dict[str, Any]]:
        """Re-render a finished candidate from its manifest (same seed, settings and inputs) and
        write its frames again: the remedy when a frame was damaged on disk."""
        owner = self.owner_of(token, request)
        pid = self._pid(project_id, owner)
        seg = self._segment_or_active(pid, segment_id, owner)
        if seg is None or not candidate_id:
            raise InputError("segment_id and candidate_id: pick the segment and the candidate to "
                             "re-render")
        progress(0, desc="Starting")
        cand = self.studio.repair_candidate(pid, seg, str(candidate_id),
                                            progress=self._progress_fn(progress), owner=owner)
        return (f"Re-rendered {cand.id} of segment {seg} (seed {cand.seed}) from its manifest; "
                "its frames are whole again.", self.studio.timeline(pid, owner=owner).to_dict())

    @user_errors
    def delete_project(self, token: str | None, project_id: str | None,
                       request: gr.Request | None = None) -> tuple[dict[str, Any], str]:
        """Delete a project (also a damaged one) with all its files."""
        owner = self.owner_of(token, request)
        pid = self._pid(project_id, owner)
        self.studio.delete_project(pid, owner=owner)
        return (gr.update(choices=self._project_choices(owner), value=None),
                "Project deleted with all its files.")

    def end_session(self, request: gr.Request) -> None:
        """The browser tab closed: remove the session's served copies and its uploads."""
        self.files.end_session(self._session(request))

    # ---- export ------------------------------------------------------------------------
    @user_errors
    def export(self, token: str | None, project_id: str | None, quality: float,
               side_by_side: bool, png_zip: bool, with_audio: bool, request: gr.Request | None = None,
               progress: gr.Progress = gr.Progress()
               ) -> tuple[str | None, list[str], str]:
        """Stitch the chosen path into one MP4 (audio of the driving video when it has one),
        optionally a side-by-side MP4 and a PNG zip; returns the files for download."""
        owner = self.owner_of(token, request)
        pid = self._pid(project_id, owner)
        res = self.studio.export(pid, quality=int(check_number("quality", quality)), side_by_side=bool(side_by_side),
                                 png_zip=bool(png_zip), with_audio=bool(with_audio),
                                 progress=self._progress_fn(progress), owner=owner)
        files = [self._served(request, p)
                 for p in (res.video, res.side_by_side, res.png_zip) if p]
        msg = (f"Exported {res.frames} frames at {res.fps:g} fps from {res.segments} segment(s)"
               f"{' with audio' if res.has_audio else ''}.")
        return self._served(request, res.video), [f for f in files if f], msg

    # ---- the whole view ----------------------------------------------------------------
    @user_errors
    def view(self, token: str | None, project_id: str | None, segment_id: str | None = None,
             grid_page: Any = None, request: gr.Request | None = None) -> tuple[Any, ...]:
        """Everything the page shows of a project (order: :data:`VIEW_FIELDS`). The candidate
        grid shows ``SLOTS`` candidates of the segment per ``grid_page`` (0-based; None or past the
        end: the last page, where the newest candidates are)."""
        owner = self.owner_of(token, request)
        out: dict[str, Any] = {name: None for name in VIEW_FIELDS}
        choices = self._project_choices(owner)
        if not project_id:
            out.update(self._empty_view())
            out["project"] = gr.update(choices=choices, value=None)
            return tuple(out[name] for name in VIEW_FIELDS)
        pid = self._pid(project_id, owner)
        page = self.studio.page(pid, owner=owner)              # one load; writes nothing
        project, tl = page.project, page.timeline
        seg_ids = {s.id for s in tl.tree}
        seg = segment_id if segment_id in seg_ids else tl.active_leaf
        out["project"] = gr.update(choices=choices, value=pid)
        out["reference_preview"] = self._served(request, page.reference)
        if project.poses is not None:
            out["pose_video"] = self._served(request, page.pose_video)
            out["pose_overlay"] = self._served(request, page.pose_overlay)
            out["pose_info"] = self._pose_message(project.poses)
        else:
            out["pose_info"] = "No driving poses yet: upload a pose file or a video."
        st = project.settings
        out.update(frames_per_segment=st.frames_per_segment, steps=st.steps, guidance=st.guidance,
                   noise_prior=st.noise_prior_t, base_seed=st.base_seed,
                   candidates=min(st.candidates, SLOTS), sampler=st.sampler,
                   **{name: getattr(st, name) for name in SPEED_SETTINGS})
        out["segment"] = gr.update(choices=self._segment_choices(tl), value=seg)
        view = next((s for s in tl.tree if s.id == seg), None)
        cands = list(view.candidates) if view else []
        number, shown = candidate_page(cands, grid_page)
        out["cand_page"] = number
        out["cand_pager"] = pager_text(cands, number)
        for i in range(SLOTS):
            if i < len(shown):
                c = shown[i]
                video = (self._served(request, c.preview) if c.preview and c.status == "done"
                         else None)
                out[f"slot{i}_video"] = gr.update(
                    value=video, visible=True,
                    label=f"{c.id} · seed {c.seed}" + (" · [chosen]" if c.chosen else ""))
                out[f"slot{i}_info"] = gr.update(value=self._candidate_caption(c), visible=True)
            else:
                out[f"slot{i}_video"] = gr.update(value=None, visible=i == 0,
                                                  label="candidate")
                out[f"slot{i}_info"] = gr.update(
                    value="No candidates for this segment yet." if i == 0 else "",
                    visible=i == 0)
        out["measures"] = [self._measure_row(c) for c in cands]
        done = [c for c in cands if c.status == "done"]
        fresh = self._fresh.get((owner, pid, seg or ""))
        index = {c.id: c.index for c in done}
        if fresh in index and (view.chosen not in index or index[fresh] > index[view.chosen]):
            pick = fresh                 # a re-roll after the choice: offer its first take
        else:
            pick = view.chosen if view and view.chosen in index else (done[0].id if done else None)
        out["candidate"] = gr.update(choices=[(f"{c.id} · seed {c.seed}", c.id) for c in done],
                                     value=pick)
        out["timeline_md"] = self._timeline_markdown(tl)
        gallery = [(self._served(request, c.poster), f"{s.id}/{c.id} · seed {c.seed}")
                   for s in tl.path for c in s.candidates
                   if c.chosen and c.poster and c.status == "done"]
        # a poster missing on disk (folder edited by hand) is left out: gr.Gallery cannot show
        # None and would fail the whole view with a bare "Error"
        out["path_gallery"] = [(path, caption) for path, caption in gallery if path]
        out["project_json"] = tl.to_dict()
        return tuple(out[name] for name in VIEW_FIELDS)

    def prev_page(self, token: str | None, project_id: str | None, segment_id: str | None,
                  page: Any, request: gr.Request | None = None) -> tuple[Any, ...]:
        """The view with the candidate grid one page back (stays on the first)."""
        return self._page_view(token, project_id, segment_id, page, -1, request)

    def next_page(self, token: str | None, project_id: str | None, segment_id: str | None,
                  page: Any, request: gr.Request | None = None) -> tuple[Any, ...]:
        """The view with the candidate grid one page on (stays on the last)."""
        return self._page_view(token, project_id, segment_id, page, 1, request)

    def _page_view(self, token: str | None, project_id: str | None, segment_id: str | None,
                   page: Any, step: int, request: gr.Request | None) -> tuple[Any, ...]:
        current = 0 if page is None or page == "" else int(page)
        return self.view(token, project_id, segment_id, max(0, current + step), request)

    def _empty_view(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pose_info": "No project open: create one (or open one above).",
                               "segment": gr.update(choices=[], value=None),
                               "measures": [], "candidate": gr.update(choices=[], value=None),
                               "timeline_md": "", "path_gallery": [], "project_json": {}}
        for name in ("frames_per_segment", "steps", "guidance", "noise_prior", "base_seed",
                     "candidates", "sampler", *SPEED_SETTINGS):
            out[name] = gr.update()
        out["cand_page"], out["cand_pager"] = 0, ""
        for i in range(SLOTS):
            out[f"slot{i}_video"] = gr.update(value=None, visible=i == 0)
            out[f"slot{i}_info"] = gr.update(value="", visible=i == 0)
        return out

    # ---- helpers -----------------------------------------------------------------------
    def _pid(self, project_id: str | None, owner: str | None) -> str:
        """The project id, once the caller is known to own it (before any other check)."""
        if not project_id:
            raise InputError("no project is open: create one or pick one from the list")
        self.studio.check_owner(str(project_id), owner=owner)
        return str(project_id)

    def _segment_or_active(self, pid: str, segment_id: str | None, owner: str | None
                           ) -> str | None:
        if segment_id:
            return str(segment_id)
        return self.studio.get_project(pid, owner=owner).active_leaf

    def _served(self, request: gr.Request | None, path: str | Path | None) -> str | None:
        """A copy of a project file (checked to lie inside the projects folder) in Gradio's
        cache, made for this session; None when the file is missing."""
        if not path:
            return None
        p = self.studio.resolve_served(path)
        return self.files.serve(self._session(request), p) if p.is_file() else None

    def _upload_path(self, value: Any, request: gr.Request | None = None) -> str:
        """The local path of an uploaded file (Gradio gives a path string or a FileData-like);
        recorded as the session's, so it is removed when the session ends."""
        path = getattr(value, "path", None) or (value.get("path") if isinstance(value, dict)
                                                 else value)
        if not isinstance(path, (str, Path)) or not str(path):
            raise InputError("the upload did not arrive; upload the file again")
        self.files.claim_upload(self._session(request), path)
        return str(path)

    @staticmethod
    def _session(request: gr.Request | None) -> str:
        """The key of the browser/API session (``local`` for direct calls without one)."""
        session = getattr(request, "session_hash", None) if request is not None else None
        return SessionFiles.key(session) if session else "local"

    def _pose_upload(self, files: Any, request: gr.Request | None = None
                     ) -> tuple[str, Path | None, str]:
        """One pose JSON / zip / video path, or several images gathered into a temporary folder
        (returned second, for removal after use), and the name to show for it (the user's file
        names, never a temporary folder's)."""
        if not files:
            raise InputError("upload a pose sequence (JSON, a zip of pose images, the pose "
                             "images themselves, or a video of drawn poses) first")
        items = files if isinstance(files, (list, tuple)) else [files]
        paths = [Path(self._upload_path(f, request)) for f in items]
        if len(paths) == 1:
            return str(paths[0]), None, _upload_name(paths[0])
        if not all(p.suffix.lower() in _IMAGE_EXT for p in paths):
            raise InputError("several files can only be pose images (PNG/JPEG/WebP); upload one "
                             "JSON or zip file instead")
        folder = Path(tempfile.mkdtemp(prefix="unianimate-poses-"))
        ordered = sorted(paths, key=lambda q: q.name)
        for i, p in enumerate(ordered):
            shutil.copyfile(p, folder / f"{i:06d}{p.suffix.lower()}")
        shown = f"{len(ordered)} images ({ordered[0].name} ... {ordered[-1].name})"
        return str(folder), folder, shown

    @staticmethod
    def _interval(value: Any) -> int:
        return int(check_number("frame_interval", value))

    @staticmethod
    def _time(value: Any) -> float | None:
        """Trim time in seconds; empty or 0 means no trim."""
        if value is None or value == "":
            return None
        return check_number("trim", value) or None

    @staticmethod
    def _count(value: Any) -> int:
        return int(check_number("candidates", value))

    def _settings(self, frames: Any, steps: Any, guidance: Any, noise: Any, seed: Any,
                  candidates: Any, sampler: Any = None) -> dict[str, Any]:
        out = {"frames_per_segment": check_number("frames_per_segment", frames),
               "steps": check_number("steps", steps),
               "guidance": check_number("guidance", guidance),
               "noise_prior_t": check_number("noise_prior_t", noise),
               "base_seed": check_number("base_seed", seed),
               "candidates": check_number("candidates", candidates)}
        if sampler is not None and sampler != "":
            out["sampler"] = check_sampler(sampler)
        return out

    @staticmethod
    def _speed_settings(sequential: Any, precision: Any, long_mode: Any, window: Any,
                        overlap: Any) -> dict[str, Any]:
        """The VRAM / speed and long-mode project settings given (None: left as they are)."""
        out: dict[str, Any] = {}
        if sequential is not None:
            out["sequential_guidance"] = check_flag("sequential guidance", sequential)
        if precision not in (None, ""):
            out["precision"] = check_choice("precision", precision, PRECISIONS)
        if long_mode is not None:
            out["long_mode"] = check_flag("long mode", long_mode)
        for name, value in (("window", window), ("overlap", overlap)):
            if value is not None and value != "":
                out[name] = check_number(name, value)
        return out

    @staticmethod
    def _speed(offload: Any, decode_chunk: Any) -> SpeedOptions:
        """The run's VRAM / speed options (None: the defaults)."""
        default = SpeedOptions()
        return SpeedOptions(
            offload=default.offload if offload in (None, "") else
            check_choice("offload", offload, OFFLOAD_CHOICES),
            decode_chunk=default.decode_chunk if decode_chunk in (None, "") else
            int(check_number("decode_chunk", decode_chunk))).validated()

    @staticmethod
    def _progress_fn(progress: gr.Progress) -> Callable[[Any], None]:
        """Service progress reports -> the Gradio progress bar (queue position, steps, ETA)."""
        def report(p: Any) -> None:
            if p.stage == "queued":
                progress(0, desc=f"Waiting for the GPU: {p.queue_position} job(s) ahead")
            elif p.total:
                unit = "frames" if p.stage == "poses" else "steps"
                progress((min(p.step, p.total), p.total), desc=f"{p.message}{_eta(p.eta_s)}",
                         unit=unit)
            else:
                progress(None, desc=p.message or p.stage)
        return report

    @staticmethod
    def _pose_message(info: Any) -> str:
        parts = [f"**{info.count} poses** at {info.fps:g} fps"]
        if info.source_name:
            parts.append(f"from `{info.source_name}`")
        if info.frame_interval > 1:
            parts.append(f"frame interval {info.frame_interval}")
        parts.append("aligned to the reference" if info.aligned else "not aligned")
        if info.audio:
            parts.append("with audio")
        text = ", ".join(parts) + "."
        if info.messages:
            text += "\n\n" + "\n".join(f"- {markdown_text(m)}" for m in info.messages[:8])
        return text

    @staticmethod
    def _candidate_caption(c: Any) -> str:
        m = c.measures or {}
        if c.status != "done":
            return f"**{c.id}** · seed {c.seed} · **{c.status}**" + (
                f": {c.error}" if c.error else "")
        bits = [f"**{c.id}** · seed {c.seed}", f"seam {_fmt(m.get('seam'))}",
                f"stability {_fmt(m.get('stability'))}"]
        if c.color_corrected:
            bits.append("colour corrected")
        if c.chosen:
            bits.append("**[chosen]**")
        return " · ".join(bits)

    @staticmethod
    def _measure_row(c: Any) -> list[Any]:
        m = c.measures or {}
        return [c.id, c.seed, c.status, _fmt(m.get("seam")), _fmt(m.get("stability")),
                _fmt(m.get("drift")), _fmt(m.get("score")),
                _fmt((c.timings or {}).get("generate_s"), 1), "yes" if c.chosen else ""]

    @staticmethod
    def _segment_choices(tl: Any) -> list[tuple[str, str]]:
        out = []
        for s in sorted(tl.tree, key=lambda v: (v.depth, v.id)):
            tags = []
            if s.on_path:
                tags.append("on path")
            if s.branch_point:
                tags.append(f"branch point ({len(s.children)})")
            if s.parent:
                tags.append(f"from {s.parent}/{s.parent_candidate}")
            label = (f"{'· ' * s.depth}{s.id}: poses {s.start}–{s.end - 1}, "
                     f"{len(s.candidates)} cand." + (f" [{', '.join(tags)}]" if tags else ""))
            out.append((label, s.id))
        return out

    @staticmethod
    def _timeline_markdown(tl: Any) -> str:
        if not tl.tree:
            return "_No segments yet._"
        steps = []
        for s in tl.path:
            chosen = next((c for c in s.candidates if c.chosen), None)
            mark = f"{chosen.id} (seed {chosen.seed})" if chosen else "not chosen yet"
            fork = f" (fork: {len(s.children)} branches)" if s.branch_point else ""
            steps.append(f"**{s.id}** [{s.start}–{s.end - 1}] {mark}{fork}")
        text = " -> ".join(steps)
        others = len(tl.tree) - len(tl.path)
        text += (f"\n\nChosen path: {tl.total_frames} frames of {tl.poses_total} poses"
                 + (f" · {others} segment(s) on other branches" if others else ""))
        if tl.can_continue and tl.next_range:
            text += f" · Continue would cover poses {tl.next_range[0]}–{tl.next_range[1] - 1}"
        return text

    def _candidates_json(self, tl: Any, segment_id: str | None) -> list[dict[str, Any]]:
        view = next((s for s in tl.tree if s.id == segment_id), None)
        if view is None:
            return []
        return [{"id": c.id, "segment": c.segment, "seed": c.seed, "status": c.status,
                 "chosen": c.chosen, "frames": c.num_frames, "measures": c.measures,
                 "timings": c.timings, "error": c.error} for c in view.candidates]

    def _project_dict(self, pid: str, owner: str | None) -> dict[str, Any]:
        page = self.studio.page(pid, owner=owner)
        project = page.project
        return {"id": project.id, "name": project.name, "width": project.width,
                "height": project.height, "fit": project.reference.fit,
                "poses": project.poses.count if project.poses else 0,
                "timeline": page.timeline.to_dict()}
