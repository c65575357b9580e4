"""Exceptions raised at the project's boundaries.

Every error a user can cause derives from :class:`UniAnimateError` and carries a message that names
the problem and what to do about it. The UI and CLI show ``str(err)`` as is.
"""
from __future__ import annotations


class UniAnimateError(Exception):
    """Base class of every error this project raises on purpose."""


class InputError(UniAnimateError, ValueError):
    """Bad user input: an image, video, pose file or setting that cannot be used as given."""


class CheckpointError(UniAnimateError, ValueError):
    """A weights file that is truncated, not a state dict, or does not fit the model."""


class WeightsMissingError(UniAnimateError, FileNotFoundError):
    """A needed weights file is not present locally and cannot be downloaded now."""


class GenerationCancelled(UniAnimateError):
    """The user cancelled a running generation; raised between denoising steps."""


class ProjectError(UniAnimateError, ValueError):
    """A project folder or manifest that is missing, corrupt, or asked for something it lacks."""
