"""Where the released weights live (spec §1) and how we get them: a local folder or the Hub.

One table, :data:`FILES`, lists every file by a short key. :func:`resolve_file` turns a key into a
local path, from a local folder or through ``huggingface_hub.hf_hub_download`` into the standard
Hugging Face cache (with its tqdm progress bar, revision pinning and ``HF_HUB_OFFLINE``). When a
file cannot be had it raises :class:`~unianimate.errors.WeightsMissingError` saying which file,
from which repository, the command that downloads it and where to put it.

``source`` everywhere is ``None`` (each file's default repository), a local folder, or a Hub repo
id. A local folder holds the files flat (as ``camenduru/unianimate`` does); the diffusers VAE is
looked for in its ``vae/`` subfolder. A repo id replaces the default repository of the bundle files
(UNet, CLIP, SD-2.1 checkpoint, DWPose ONNX), which ``camenduru/unianimate`` all holds flat.

Environment, read at call time: ``HF_HUB_OFFLINE`` (truthy: never touch the network),
``HF_HUB_CACHE`` / ``HF_HOME`` (cache location). Importing this module loads nothing.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import WeightsMissingError

logger = logging.getLogger(__name__)

BUNDLE_REPO = "camenduru/unianimate"
DWPOSE_REPO = "yzd-v/DWPose"
SD21_REPO = "stabilityai/stable-diffusion-2-1-base"


@dataclass(frozen=True)
class HubFile:
    """One downloadable file: key, repository, path inside it, what it is, rough size."""

    key: str
    repo_id: str
    filename: str
    description: str
    size: str
    subfolder: str | None = None
    bundle: bool = True  # True: also found flat in camenduru/unianimate (and in a user's folder)

    def repo_path(self) -> str:
        """Path inside the repository (``subfolder/filename``)."""
        return f"{self.subfolder}/{self.filename}" if self.subfolder else self.filename

    def url(self, repo_id: str | None = None, revision: str | None = None) -> str:
        """Direct download URL on huggingface.co."""
        return (f"https://huggingface.co/{repo_id or self.repo_id}/resolve/"
                f"{revision or 'main'}/{self.repo_path()}")

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
    HubFile("unet", BUNDLE_REPO, "unianimate_16f_32f_non_ema_223000.pth",
            "UniAnimate UNet state dict", "~5.7 GB"),
    HubFile("clip", BUNDLE_REPO, "open_clip_pytorch_model.bin",
            "open_clip ViT-H-14 (laion2b_s32b_b79k)", "~3.9 GB"),
    HubFile("vae_ckpt", BUNDLE_REPO, "v2-1_512-ema-pruned.ckpt",
            "Stable Diffusion 2.1-base checkpoint (only its VAE is used)", "~5.2 GB"),
    HubFile("vae_config", SD21_REPO, "config.json",
            "Stable Diffusion 2.1-base VAE config (diffusers layout)", "1 kB",
            subfolder="vae", bundle=False),
    HubFile("vae_weights", SD21_REPO, "diffusion_pytorch_model.safetensors",
            "Stable Diffusion 2.1-base VAE weights (diffusers layout)", "~335 MB",
            subfolder="vae", bundle=False),
    HubFile("dwpose_det", DWPOSE_REPO, "yolox_l.onnx", "DWPose person detector (YOLOX-L)", "~217 MB"),
    HubFile("dwpose_pose", DWPOSE_REPO, "dw-ll_ucoco_384.onnx",
            "DWPose whole-body pose model (RTMPose)", "~134 MB"),
)
FILES: dict[str, HubFile] = {f.key: f for f in _TABLE}

# What a full model needs; a tuple is "any one of these groups" (the VAE comes either way).
REQUIRED: tuple[tuple[tuple[str, ...], ...], ...] = (
    (("unet",),),
    (("clip",),),
    (("vae_config", "vae_weights"), ("vae_ckpt",)),
    (("dwpose_det",),),
    (("dwpose_pose",),),
)


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


def _repo_for(entry: HubFile, source: str | None) -> str:
    return str(source) if (source and entry.bundle) else entry.repo_id


def _revision_for(entry: HubFile, source: str | None, revision: str | None) -> str | None:
    """``revision`` pins the bundle repository only (the user's repo, or camenduru/unianimate)."""
    if source is not None:
        return revision if entry.bundle else None
    return revision if entry.repo_id == BUNDLE_REPO else None


def _local_candidates(entry: HubFile, folder: Path) -> list[Path]:
    cands = []
    if entry.subfolder:
        cands.append(folder / entry.subfolder / entry.filename)
    if entry.bundle or not entry.subfolder:
        cands.append(folder / entry.filename)
    return cands


def _missing_message(entry: HubFile, repo: str, revision: str | None, reason: str,
                     folder: Path | None = None) -> str:
    where = folder if folder is not None else Path("<weights folder>")
    target = where / entry.subfolder if entry.subfolder else where
    lines = [
        f"{entry.filename} ({entry.description}, {entry.size}) is missing: {reason}.",
        # `hf download --local-dir` keeps the repo path (vae/...), so it gets the folder itself
        f"Get it from the Hugging Face repository {repo}: `{entry.command(repo, where, revision)}` "
        f"(or download {entry.url(repo, revision)}) and put it in {target}, "
        f"then pass that folder as the weights source.",
    ]
    if folder is None:
        lines.append("Or run once with network access (HF_HUB_OFFLINE unset) to download it into "
                     "the Hugging Face cache.")
    return " ".join(lines)


def resolve_file(key: str, source: str | os.PathLike | None = None, revision: str | None = None,
                 local_files_only: bool | None = None, tqdm_class: Any = None) -> Path:
    """Local path of weights file ``key`` (see :data:`FILES`), downloading it when needed.

    ``source``: None, a local folder, or a Hub repo id (see module docstring). ``revision`` pins
    the repository revision (branch, tag or commit). ``local_files_only=None`` follows
    ``HF_HUB_OFFLINE``. ``tqdm_class`` replaces huggingface_hub's progress bar class.
    Raises ``WeightsMissingError`` when the file is neither present nor downloadable now.
    """
    entry = _entry(key)
    if is_local_source(source):
        folder = Path(source).expanduser().resolve()
        for cand in _local_candidates(entry, folder):
            if cand.is_file():
                return cand
        raise WeightsMissingError(_missing_message(
            entry, _repo_for(entry, None), revision, f"not found in the local folder {folder}", folder))
    if source is not None and _looks_like_path(str(source)):
        raise WeightsMissingError(
            f"weights folder {source} does not exist; create it and put the weights files in it "
            f"(see `missing_files`), or pass a Hub repo id such as {BUNDLE_REPO}.")
    if source is not None and "/" not in str(source):
        raise WeightsMissingError(
            f"weights source {source!r} is neither an existing folder nor a Hub repo id "
            f"(owner/name such as {BUNDLE_REPO}); create the folder or fix the name.")

    repo = _repo_for(entry, str(source) if source is not None else None)
    revision = _revision_for(entry, str(source) if source is not None else None, revision)
    if local_files_only is None:
        local_files_only = offline()
    from huggingface_hub import hf_hub_download
    from huggingface_hub import errors as hf_errors

    kwargs: dict[str, Any] = dict(subfolder=entry.subfolder, revision=revision,
                                  cache_dir=cache_dir(), local_files_only=bool(local_files_only))
    if tqdm_class is not None:
        kwargs["tqdm_class"] = tqdm_class
    if not local_files_only:
        logger.info("fetching %s from %s (revision %s) into the Hugging Face cache",
                    entry.repo_path(), repo, revision or "main")
    try:
        path = hf_hub_download(repo, entry.filename, **kwargs)
    except hf_errors.LocalEntryNotFoundError:
        reason = ("not in the Hugging Face cache and downloads are off "
                  "(HF_HUB_OFFLINE or local_files_only)" if local_files_only else
                  "not in the Hugging Face cache and the Hub could not be reached")
        raise WeightsMissingError(_missing_message(entry, repo, revision, reason)) from None
    except hf_errors.GatedRepoError:
        raise WeightsMissingError(_missing_message(
            entry, repo, revision, f"{repo} is gated: accept its terms on huggingface.co and log in "
            "with `hf auth login`")) from None
    except hf_errors.RepositoryNotFoundError:
        raise WeightsMissingError(_missing_message(
            entry, repo, revision, f"the repository {repo} does not exist or is private")) from None
    except hf_errors.RevisionNotFoundError:
        raise WeightsMissingError(_missing_message(
            entry, repo, revision, f"revision {revision!r} does not exist in {repo}")) from None
    except hf_errors.EntryNotFoundError:
        raise WeightsMissingError(_missing_message(
            entry, repo, revision, f"{repo} has no file {entry.repo_path()}")) from None
    except hf_errors.HFValidationError as exc:
        raise WeightsMissingError(f"bad Hub repository id or revision ({exc}); "
                                  f"use owner/name such as {BUNDLE_REPO}.") from None
    except (hf_errors.HfHubHTTPError, OSError) as exc:
        raise WeightsMissingError(_missing_message(
            entry, repo, revision, f"the download failed ({type(exc).__name__}: {exc})")) from None
    return Path(path)


def is_available(key: str, source: str | os.PathLike | None = None,
                 revision: str | None = None) -> bool:
    """True when ``key`` is present locally (folder or Hub cache); never touches the network."""
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


def resolve_vae(source: str | os.PathLike | None = None, revision: str | None = None,
                local_files_only: bool | None = None, tqdm_class: Any = None) -> Path:
    """The VAE: a diffusers folder (holding ``config.json``) or the SD-2.1 ``.ckpt`` path.

    Prefers what is already present (diffusers folder, then checkpoint); otherwise downloads the
    diffusers VAE (~335 MB) rather than the 5 GB checkpoint.
    """
    for opt in (("vae_config", "vae_weights"), ("vae_ckpt",)):
        if all(is_available(k, source, revision) for k in opt):
            path = resolve_file(opt[-1], source, revision, local_files_only=True)
            return path.parent if opt[0] == "vae_config" else path
    try:
        resolve_file("vae_config", source, revision, local_files_only, tqdm_class)
        weights = resolve_file("vae_weights", source, revision, local_files_only, tqdm_class)
    except WeightsMissingError as exc:
        ckpt = FILES["vae_ckpt"]
        repo = _repo_for(ckpt, None if is_local_source(source) or source is None else str(source))
        raise WeightsMissingError(
            f"{exc} Alternatively put {ckpt.filename} ({ckpt.size}, from {repo}: "
            f"`{ckpt.command(repo)}`) in the weights folder.") from None
    return weights.parent
