"""UniAnimate Studio service: projects, segment tree, candidates, jobs, measures, export.

No Gradio here; ``ui/`` and the CLI call :class:`Studio`. Importing this package loads no model.
"""
from __future__ import annotations

from unianimate.studio.jobs import GPU_QUEUE, Progress
from unianimate.studio.project import (FIT_MODES, Candidate, GenerationSettings, Job, PoseInfo,
                                       Project, ReferenceInfo, Segment, seed_for)
from unianimate.studio.runtime import StudioRuntime, default_runtime
from unianimate.studio.service import Studio, StudioSession
from unianimate.studio.settings import (OFFLOAD_CHOICES, PRECISIONS, SpeedOptions, SpeedPreset,
                                        speed_preset)
from unianimate.studio.views import (CandidateView, ExportResult, PosePreview, ProjectSummary,
                                     SegmentView, Timeline)

__all__ = ["Studio", "StudioSession", "StudioRuntime", "default_runtime", "Progress", "GPU_QUEUE", "Project", "Segment", "Candidate", "Job",
           "PoseInfo", "ReferenceInfo", "GenerationSettings", "FIT_MODES", "seed_for",
           "ProjectSummary", "CandidateView", "SegmentView", "Timeline", "ExportResult",
           "PosePreview", "SpeedOptions", "SpeedPreset", "speed_preset", "PRECISIONS",
           "OFFLOAD_CHOICES"]
