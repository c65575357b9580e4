"""The "Download weights" panel: shown when weights are missing and downloads are allowed; the
download runs in the background (:class:`unianimate.downloads.WeightsDownload`) and a timer polls
its progress, so start-up and the rest of the UI never wait for it.

Self-contained: :func:`add_download_panel` is called once inside the ``gr.Blocks`` context.
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from unianimate import hub
from unianimate.downloads import WeightsDownload
from ui.runtime import ModelManager


def _visible(models: ModelManager, job: WeightsDownload) -> bool:
    if models.is_tiny or hub.offline() or (models.source is not None
                                           and hub.is_local_source(models.source)):
        return False
    return job.state().status == "running" or bool(models.missing())


def add_download_panel(models: ModelManager, model_md: gr.Markdown,
                       job: WeightsDownload | None = None) -> WeightsDownload:
    """Add the panel to the current Blocks; returns the (shared, per-server) download job."""
    job = job or WeightsDownload(models.source)
    with gr.Row(visible=_visible(models, job), elem_id="download-panel") as row:
        with gr.Column(scale=5):
            progress_md = gr.Markdown(job.state().describe() if job.state().status != "idle"
                                      else "Some weights files are not on this machine yet: "
                                      "download them now (in the background; the studio stays "
                                      "usable).", elem_id="download-progress")
        with gr.Column(scale=1, min_width=160):
            button = gr.Button("Download weights", variant="primary", elem_id="download-weights")
    timer = gr.Timer(1.0, active=job.state().status == "running")

    def start() -> tuple[Any, Any, Any]:
        if not job.start() and job.state().status != "running":
            return (gr.update(value="Downloads are off (HF_HUB_OFFLINE) or the weights come "
                                    "from a local folder."), gr.update(), gr.Timer(active=False))
        return (gr.update(value=job.state().describe()), gr.update(interactive=False),
                gr.Timer(active=True))

    def poll() -> tuple[Any, Any, Any, Any]:
        state = job.state()
        running = state.status == "running"
        status = models.status_markdown() if not running else gr.update()
        return (gr.update(value=state.describe()), gr.update(interactive=not running),
                gr.Timer(active=running), status)

    def download_status() -> str:
        """The weights download's progress, one line."""
        return job.state().describe()

    button.click(start, None, [progress_md, button, timer], api_name="download_weights")
    gr.api(download_status, api_name="download_status")
    timer.tick(poll, None, [progress_md, button, timer, model_md], api_visibility="private",
               show_progress="hidden")
    return job


__all__ = ["add_download_panel"]
