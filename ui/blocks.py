"""The studio's Gradio Blocks layout and event wiring (every action has a named API endpoint).

``build_ui(studio, models)`` returns the Blocks (queued: GPU work one job at a time);
``launch_kwargs(projects_dir, ...)`` gives the matching ``Blocks.launch`` arguments (bind address,
upload limit, theme and CSS). The projects folder is never served: the handlers hand each session
its own copies in Gradio's cache (``ui.files``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import gradio as gr

from ui.downloads_panel import add_download_panel
from ui.handlers import (FIT_CHOICES, LIMITS, MAIN_PERSON, MEASURE_HEADERS, OFFLOAD_LABELS,
                         PERSON_CHOICES, PRESET_CHOICES, SLOTS, VIEW_FIELDS, StudioHandlers,
                         measures_help, preset_size)
from ui.runtime import ModelManager
from unianimate.studio import GenerationSettings, SpeedOptions

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
#: measured through the launched app (gradio_client, script: /work/notes/last_prof_app.py), 8 frames x
#: 4 steps: about 1.2 s per candidate at 128x192 and 3.2 s at 256x384 on the 2 idle CPU cores of the
#: development machine; 40 s per candidate while it ran five other jobs and a training process
#: (CPU contention, not per-candidate overhead: UNet steps ~60 %, VAE decode ~17 %, saving ~15 %)
TINY_EXAMPLE_NOTE = ("Tiny model on a CPU: a candidate of the small example (8 frames, 4 steps) "
                     "takes about 1 s at 128x192 and 3 s at 256x384 on 2 idle CPU cores, up to "
                     "40 s when other jobs keep the cores busy, more on the first run (the model "
                     "is built then). Its output is noise: it only shows the studio at work.")
#: the sampler dropdown's one line (the measured quality per step count: docs/SAMPLERS.md)
SAMPLER_INFO = "dpmpp_2m/unipc at 10 steps ≈ DDIM at 20 (docs/SAMPLERS.md)"
#: what the VRAM / speed section's controls do (stored: precision and sequential guidance)
SPEED_NOTE = ("Precision and sequential guidance are saved with the project (they change the "
              "output's last bits; a new precision loads the model again). Offload and the "
              "decode chunk are this run's memory choices (offload never changes the frames). "
              "*Auto* picks all four from this machine's GPU memory.")
GPU_ID = "gpu"          # every handler that runs the model shares this concurrency id (limit 1)

CSS = """
#tiny-banner {background: #fff3cd; border: 2px solid #e0a800; border-radius: 8px;
              padding: 8px 14px; color: #5c4400;}
#tiny-banner p {margin: 0; font-weight: 600;}
#model-status {font-size: 0.92em;}
.cand-info p {margin: 2px 0; font-size: 0.9em;}
/* the chosen path's captions wrap inside their thumbnail instead of being cut with an
   ellipsis (a branch's seed has up to 10 digits; issue 11 item 13) */
#path-gallery .caption-label {white-space: normal; overflow-wrap: anywhere; text-overflow: clip;
                              max-width: calc(100% - 2 * var(--block-label-margin));
                              line-height: 1.25;}
"""


class ReferenceImage(gr.Image):
    """``gr.Image`` whose upload reaches the service unopened: the service checks images (empty,
    truncated, not an image, decompression bombs) with clear messages, which Gradio's own decoding
    in ``gr.Image.preprocess`` would replace by a generic error. Same frontend as ``gr.Image``."""

    is_template = True

    def preprocess(self, payload: Any) -> Any:
        """The uploaded file's path as is (pasted data URLs go through ``gr.Image``)."""
        if payload is not None and payload.path and not str(payload.url or "").startswith("data:"):
            return str(payload.path)
        return super().preprocess(payload)


class CheckedNumber(gr.Number):
    """``gr.Number`` whose bounds the browser shows but the handler checks (``check_number``),
    so a value out of range gets a message naming the field, not Gradio's bare range error."""

    is_template = True

    def preprocess(self, payload: Any) -> Any:
        """The value as sent; the handler checks it."""
        return payload


class CheckedSlider(gr.Slider):
    """``gr.Slider`` checked by the handler like :class:`CheckedNumber`."""

    is_template = True

    def preprocess(self, payload: Any) -> Any:
        """The value as sent; the handler checks it."""
        return payload


def _bounds(field: str) -> dict[str, Any]:
    """``minimum``/``maximum`` of a number input, from the handlers' one table of limits."""
    _, lo, hi, _ = LIMITS[field]
    return {"minimum": lo, "maximum": hi}


def _setting(name: str) -> dict[str, Any]:
    """Bounds and default value of a generation setting's input (from ``GenerationSettings``)."""
    return {**_bounds(name), "value": getattr(GenerationSettings(), name)}


def _examples(models: ModelManager) -> list[list[Any]]:
    """Example rows: reference image, pose JSON, resolution preset, custom width and height."""
    ref, dance = ASSETS / "example_reference.png", ASSETS / "example_dance.json"
    if not (ref.is_file() and dance.is_file()):
        log.warning("example assets missing in %s; run python assets/make_assets.py", ASSETS)
        return []
    if models.demo_defaults is not None:    # the demo model's own example at its native size
        d = models.demo_defaults
        ref, dance = models.demo_example or (ref, dance)
        return [[str(ref), [str(dance)], "custom", d.width, d.height, "crop"]]
    if models.is_tiny:    # small frames only: the tiny model runs on a CPU (TINY_EXAMPLE_NOTE)
        return [[str(ref), [str(dance)], "custom", 128, 192, "crop"],
                [str(ref), [str(dance)], "custom", 256, 384, "pad"]]
    return [[str(ref), [str(dance)], "512x768", 512, 768, "crop"],
            [str(ref), [str(dance)], "768x1216", 768, 1216, "pad"]]


def _example_labels(models: ModelManager, count: int) -> list[str]:
    """The example rows' labels (as many as :func:`_examples` gives)."""
    if models.demo_defaults is not None:
        d = models.demo_defaults
        return [f"figure + dance, {d.width}x{d.height} (the demo model's size)"][:count]
    if models.is_tiny:
        return ["figure + dance (small, fast)", "figure + dance, 256x384 padded"][:count]
    return ["figure + dance, 512x768", "figure + dance, 768x1216 padded"][:count]


def _first_inputs(models: ModelManager) -> dict[str, Any]:
    """What the reference, pose files and size inputs hold on page load: the demo model starts
    with its example row filled in (it animates drawn figures like it, not photos)."""
    rows = _examples(models) if models.demo_defaults is not None else []
    if rows:
        ref, dance, resolution, width, height, fit = rows[0]
        return dict(reference=ref, pose_files=dance, resolution=resolution, width=width,
                    height=height, fit=fit)
    return dict(reference=None, pose_files=None, resolution="512x768", width=512, height=768,
                fit="crop")


def build_ui(studio: Any, models: ModelManager, isolate_sessions: bool = True,
             queue_size: int = 32, handlers: StudioHandlers | None = None) -> gr.Blocks:
    """The studio UI on ``studio`` (queue configured; not launched)."""
    h = handlers or StudioHandlers(studio, models, isolate_sessions=isolate_sessions)
    # No delete_cache: Gradio's cache (GRADIO_TEMP_DIR) is content-addressed and shared by every
    # app on the machine, so one app cleaning up would delete another's example files.
    with gr.Blocks(title="UniAnimate Studio") as demo:
        owner = gr.State(None)
        # the owner token lives in the browser (a reload keeps the projects); the secret, random
        # per installation and kept in the projects folder, encrypts it in localStorage
        stored_owner = gr.BrowserState(None, storage_key="unianimate-studio-owner",
                                       secret=studio.store.browser_secret())
        # the open project, so that a reload reopens it (checked against the owner on load)
        last_project = gr.BrowserState(None, storage_key="unianimate-studio-project",
                                       secret=studio.store.browser_secret())
        if models.is_tiny:
            gr.Markdown("⚠️ **TINY TEST MODEL** — random weights (`--model tiny`): every "
                        "video it makes is noise, not animation. Use it to try the studio; start "
                        "`python app.py --model real` for the released UniAnimate weights.",
                        elem_id="tiny-banner")
        if models.is_demo:
            gr.Markdown(f"ℹ️ **{models.label}** (`--model demo`): a small model trained here on "
                        "procedural drawn figures. It animates figures like the example, not "
                        "photos; the released UniAnimate weights: `python app.py --model real`.",
                        elem_id="demo-banner")
        gr.Markdown("# UniAnimate Studio\nAnimate a person photo with a dance, segment by "
                    "segment: generate candidates, choose the best, continue from its last "
                    "frame, re-roll any segment, export one video.")
        # the model in one short line; the details, the load button and the weights download
        # in an expander (open on start only when weights are missing)
        model_line = gr.Markdown("", elem_id="model-line")     # filled by the page load
        with gr.Accordion("Model details and weights download", open=h.weights_missing(),
                          elem_id="model-details"):
            with gr.Row():
                with gr.Column(scale=5):
                    model_md = gr.Markdown(label="model status", elem_id="model-status")
                with gr.Column(scale=1, min_width=160):
                    load_btn = gr.Button("Load model", elem_id="load-model")
                    status_btn = gr.Button("Refresh status", size="sm", elem_id="model-refresh")
            # --lora-dir: the adapter the next load folds into the UNet (names only, no paths)
            lora_pick = None
            if models.lora_dir is not None:
                lora_pick = gr.Dropdown(label="LoRA adapter", choices=models.lora_choices(),
                                        value=models.lora_choice(), elem_id="lora-adapter",
                                        info="adapters in the --lora-dir folder; another choice "
                                             "loads the model again on the next generation")
            # weights missing and the Hub allowed: a background download with progress (issue 8)
            add_download_panel(models, model_md)
        with gr.Row():
            project = gr.Dropdown(label="Project (this session's projects)", choices=[],
                                  value=None, allow_custom_value=True, scale=5, elem_id="project")
            with gr.Column(scale=1, min_width=160):
                list_btn = gr.Button("Refresh list", size="sm", elem_id="list-projects")
                delete_btn = gr.Button("Delete project", size="sm", variant="stop",
                                       elem_id="delete-project")

        # ---- 1: reference and driving poses -------------------------------------------
        gr.Markdown("## 1 · Reference and driving poses")
        with gr.Row():
            with gr.Column(scale=1):
                first = _first_inputs(models)
                custom = first["resolution"] == "custom"
                reference = ReferenceImage(label="Reference image (the person)", type="filepath",
                                     sources=["upload", "clipboard"], height=300,
                                     value=first["reference"], elem_id="reference")
                name = gr.Textbox(label="Project name (optional)", max_lines=1)
                resolution = gr.Dropdown(label="Resolution (W x H)", choices=PRESET_CHOICES,
                                         value=first["resolution"], elem_id="resolution")
                with gr.Row():
                    width = gr.Number(label="Width (custom: a multiple of 64)",
                                      value=first["width"], precision=0, step=64,
                                      interactive=custom, elem_id="width")
                    height = gr.Number(label="Height (custom: a multiple of 64)",
                                       value=first["height"], precision=0, step=64,
                                       interactive=custom, elem_id="height")
                fit = gr.Radio(label="Fit the reference to W x H", choices=FIT_CHOICES,
                               value=first["fit"], elem_id="fit")
                with gr.Row():
                    create_btn = gr.Button("Create project", variant="primary",
                                           elem_id="create-project")
                    setref_btn = gr.Button("Apply image / size / fit", elem_id="set-reference")
            with gr.Column(scale=1):
                with gr.Tabs():
                    with gr.Tab("Pose sequence"):
                        pose_files = gr.File(label="Pose JSON, zip of pose images, pose images, "
                                                   "or a video of drawn poses (.mp4)",
                                             file_count="multiple", value=first["pose_files"],
                                             file_types=[".json", ".zip", "image", ".mp4",
                                                         ".webm", ".mov"],
                                             height=140, elem_id="pose-files")
                        posefile_btn = gr.Button("Load pose sequence", elem_id="load-poses")
                    with gr.Tab("Driving video"):
                        video = gr.Video(label="Driving video (DWPose extracts the poses; a "
                                               "video of drawn poses needs no detector)",
                                         sources=["upload"], height=220, elem_id="driving-video")
                        extract_btn = gr.Button("Extract poses (DWPose)", elem_id="extract-poses")
                with gr.Row():
                    trim_start = CheckedNumber(label="Trim start (s)", value=0, **_bounds("trim"))
                    trim_end = CheckedNumber(label="Trim end (s, 0 = end)", value=0,
                                             **_bounds("trim"))
                    interval = CheckedNumber(label="Frame interval", value=1, precision=0,
                                             **_bounds("frame_interval"),
                                             info="keep every n-th frame; fps = source fps / n")
                align = gr.Checkbox(label="Align the driving poses to the reference body",
                                    value=True)
                with gr.Accordion("Pose options", open=False, elem_id="pose-options"):
                    kind = gr.Radio(label="What the driving video is", choices=[
                        ("auto (look at its frames)", "auto"),
                        ("a real video (extract poses)", "video"),
                        ("drawn poses (no detector)", "pose_images")], value="auto",
                        elem_id="driving-kind")
                    with gr.Row():
                        align_mode = gr.Radio(label="Alignment", choices=[
                            ("per limb (the reference's)", "per-limb"),
                            ("overall size and position only", "scale"),
                            ("none", "none")], value="per-limb", elem_id="align-mode")
                        align_parts = gr.CheckboxGroup(label="Parts to align",
                                                       choices=["body", "hands"],
                                                       value=["body", "hands"],
                                                       elem_id="align-parts")
                    with gr.Row():
                        smooth = CheckedSlider(**_bounds("smooth"), value=0.0, step=0.05,
                                               label="Smoothing (0 = off)", elem_id="smooth",
                                               info="One-Euro filter on the keypoints")
                        image_fps = CheckedNumber(label="Frame rate of pose images (fps)",
                                                  value=30, **_bounds("image_fps"),
                                                  elem_id="image-fps")
                        # a dropdown, not a number: an empty gr.Number shows 0 in the browser,
                        # which read "person 0" while the main dancer was followed
                        person = gr.Dropdown(label="Person to follow", choices=PERSON_CHOICES,
                                             value=MAIN_PERSON, elem_id="person",
                                             info="find them below (first frame)")
                    with gr.Group(elem_id="people-picker"):
                        people_btn = gr.Button("Find the people in the driving video's first "
                                               "frame", size="sm", elem_id="find-people")
                        # no label over the picture: it would hide a dancer in a corner
                        people_img = gr.Image(label="First frame: click the dancer to follow",
                                              show_label=False, interactive=False, height=240,
                                              elem_id="people-image")
                        people_pick = gr.Radio(label="Dancer to follow", choices=[],
                                               visible=False, elem_id="people-pick")
                        people_md = gr.Markdown("", elem_id="people-info")
                    people_state = gr.State(None)
                    smooth_btn = gr.Button("Preview smoothing (loaded poses)", size="sm",
                                           elem_id="preview-smoothing")
                    smooth_video = gr.Video(label="Smoothing: as loaded | smoothed",
                                            interactive=False, height=200, autoplay=True,
                                            loop=True, elem_id="smoothing-preview")
        with gr.Accordion("Examples (made by the project: a drawn figure and a procedural "
                          "dance)", open=True):
            examples = _examples(models)
            gr.Examples(examples=examples,
                        inputs=[reference, pose_files, resolution, width, height, fit],
                        label="Click a row, then press Create project", elem_id="examples",
                        example_labels=_example_labels(models, len(examples)))
            if models.is_tiny:
                gr.Markdown(TINY_EXAMPLE_NOTE, elem_id="tiny-example-note")
        with gr.Row():
            ref_preview = gr.Image(label="Reference as the model sees it", interactive=False,
                                   height=300, elem_id="reference-preview")
            pose_overlay = gr.Image(label="Pose 0 over the reference", interactive=False,
                                    height=300, elem_id="pose-overlay")
            pose_video = gr.Video(label="Driving skeleton", interactive=False, height=300,
                                  autoplay=True, loop=True, elem_id="pose-video")
        pose_info = gr.Markdown(label="pose info", elem_id="pose-info")

        # ---- 2: the studio --------------------------------------------------------------
        gr.Markdown("## 2 · Studio: candidates, choose, continue, re-roll")
        with gr.Row():
            frames = CheckedSlider(**_setting("frames_per_segment"), step=1,
                                   label="Frames per segment", elem_id="frames")
            steps = CheckedSlider(**_setting("steps"), step=1, label="Denoising steps",
                                  elem_id="steps")
            sampler = gr.Dropdown(choices=list(GenerationSettings.sampler_choices()),
                                  value=GenerationSettings().sampler, label="Sampler",
                                  info=SAMPLER_INFO, elem_id="sampler")
            guidance = CheckedSlider(**_setting("guidance"), step=0.1, label="Guidance")
        with gr.Row():
            noise_prior = CheckedSlider(**_setting("noise_prior_t"), step=1,
                                        label="Noise prior t",
                                        info="raise to 959/969 if the reference leaks in")
            base_seed = CheckedNumber(label="Base seed", precision=0, **_setting("base_seed"),
                                      info="seed = base + 1000 x depth + candidate")
            n_cands = CheckedSlider(**_setting("candidates"), step=1, label="Candidates",
                                    elem_id="n-candidates")
        with gr.Accordion("VRAM / speed", open=False, elem_id="speed-section"):
            gr.Markdown(SPEED_NOTE, elem_id="speed-note")
            with gr.Row(equal_height=True):
                precision = gr.Dropdown(label="Precision", choices=list(models.precision_choices()),
                                        value=GenerationSettings().precision,
                                        info="auto: fp16 on a GPU, fp32 on the CPU",
                                        elem_id="precision")
                sequential = gr.Checkbox(label="Sequential guidance (two passes, less memory)",
                                         value=GenerationSettings().sequential_guidance,
                                         elem_id="sequential-guidance")
                offload = gr.Radio(label="CPU offload of CLIP and the VAE",
                                   choices=OFFLOAD_LABELS, value=SpeedOptions().offload,
                                   elem_id="offload")
                decode_chunk = CheckedSlider(**_bounds("decode_chunk"), step=1,
                                             value=SpeedOptions().decode_chunk,
                                             label="VAE decode chunk (frames)",
                                             elem_id="decode-chunk")
                preset_btn = gr.Button("Auto (from GPU memory)", size="sm", scale=0,
                                       elem_id="speed-auto")
            speed_md = gr.Markdown("", elem_id="speed-preset-info")
        with gr.Accordion("Long mode (the reference's sliding windows)", open=False,
                          elem_id="long-section"):
            with gr.Row(equal_height=True):
                long_mode = gr.Checkbox(label="Long mode: denoise each segment in overlapping "
                                              "windows", value=GenerationSettings().long_mode,
                                        elem_id="long-mode")
                window = CheckedSlider(**_setting("window"), step=1, label="Window (frames)",
                                       elem_id="window")
                overlap = CheckedSlider(**_setting("overlap"), step=1,
                                        label="Overlap (frames, below the window)",
                                        elem_id="overlap")
        with gr.Row(equal_height=True):
            segment = gr.Dropdown(label="Segment (the tree; pick one to see or re-roll it)",
                                  choices=[], value=None, allow_custom_value=True, scale=3,
                                  elem_id="segment")
            gen_btn = gr.Button("Generate candidates", variant="primary", scale=1,
                                elem_id="generate")
            reroll_btn = gr.Button("Re-roll segment", scale=1, elem_id="reroll")
            cancel_btn = gr.Button("Cancel", variant="stop", scale=1, elem_id="cancel")
        # what the last action did (and its progress), beside the buttons and above the results
        status = gr.Markdown("", label="status", elem_id="status")
        with gr.Row(equal_height=True):
            slot_videos, slot_infos = [], []
            for i in range(SLOTS):
                with gr.Column(min_width=200):
                    slot_videos.append(gr.Video(label="candidate", interactive=False,
                                                autoplay=True, loop=True, height=320,
                                                visible=i == 0, elem_id=f"slot{i}-video"))
                    slot_infos.append(gr.Markdown("No candidates yet.", visible=i == 0,
                                                  label=f"candidate {i} info",
                                                  elem_id=f"slot{i}-info",
                                                  elem_classes=["cand-info"]))
        with gr.Row(equal_height=True, elem_id="cand-pager-row"):
            prev_btn = gr.Button("◀ Previous", size="sm", scale=0, elem_id="cand-prev")
            cand_pager = gr.Markdown("", elem_id="cand-pager")
            next_btn = gr.Button("Next ▶", size="sm", scale=0, elem_id="cand-next")
        cand_page = gr.State(None)       # the grid's page; None: the newest candidates
        measures = gr.Dataframe(headers=MEASURE_HEADERS, value=[], interactive=False,
                                label="Measures (lower seam, stability, drift and score are "
                                      "better)", elem_id="measures")
        with gr.Accordion("What the measures mean", open=False, elem_id="measures-help"):
            gr.Markdown(measures_help())
        with gr.Row(equal_height=True):
            candidate = gr.Dropdown(label="Candidate to choose", choices=[], value=None,
                                    allow_custom_value=True, scale=3, elem_id="candidate")
            choose_btn = gr.Button("Choose", variant="primary", scale=1, elem_id="choose")
            continue_btn = gr.Button("Continue from its last frame", scale=1,
                                     elem_id="continue")
            rerender_btn = gr.Button("Re-render (repair its frames)", scale=1,
                                     elem_id="rerender")
        gr.Markdown("### Timeline of the chosen path")
        timeline_md = gr.Markdown(label="timeline", elem_id="timeline")
        path_gallery = gr.Gallery(label="Chosen path (last frame of each segment)", columns=8,
                                  height=220, preview=False, object_fit="contain",
                                  fit_columns=False,
                                  elem_id="path-gallery")
        branch_btn = gr.Button("Make the selected segment's branch the chosen path",
                               size="sm", elem_id="select-branch")

        # ---- 3: export ------------------------------------------------------------------
        gr.Markdown("## 3 · Export")
        with gr.Row(equal_height=True):
            quality = CheckedSlider(**_bounds("quality"), value=18, step=1,
                                    label="Quality (H.264 CRF, lower = better)")
            sbs = gr.Checkbox(label="Also side by side (reference | pose | result)")
            pngzip = gr.Checkbox(label="Also a PNG zip")
            audio = gr.Checkbox(label="Audio of the driving video", value=True)
            export_btn = gr.Button("Export", variant="primary", elem_id="export")
        with gr.Row():
            export_video = gr.Video(label="Exported video", interactive=False, height=360,
                                    elem_id="export-video")
            export_files = gr.File(label="Downloads", file_count="multiple", interactive=False,
                                   elem_id="export-files")
        with gr.Accordion("Project data (JSON, as the API returns it)", open=False):
            json_btn = gr.Button("Refresh timeline JSON", size="sm", elem_id="timeline-json")
            project_json = gr.JSON(label="project", elem_id="project-json")

        # ---- events ---------------------------------------------------------------------
        components: dict[str, Any] = {
            "project": project, "reference_preview": ref_preview, "pose_video": pose_video,
            "pose_overlay": pose_overlay, "pose_info": pose_info, "frames_per_segment": frames,
            "steps": steps, "guidance": guidance, "noise_prior": noise_prior,
            "base_seed": base_seed, "candidates": n_cands, "sampler": sampler,
            "cand_page": cand_page, "cand_pager": cand_pager,
            "sequential_guidance": sequential, "precision": precision, "long_mode": long_mode,
            "window": window, "overlap": overlap,
            "segment": segment,
            "measures": measures, "candidate": candidate, "timeline_md": timeline_md,
            "path_gallery": path_gallery, "project_json": project_json,
            **{f"slot{i}_video": v for i, v in enumerate(slot_videos)},
            **{f"slot{i}_info": m for i, m in enumerate(slot_infos)},
        }
        view_out = [components[n] for n in VIEW_FIELDS]
        view_in = [owner, project, segment]
        quiet: dict[str, Any] = {"api_visibility": "private", "show_progress": "hidden"}
        gpu_kw: dict[str, Any] = {"concurrency_id": GPU_ID, "concurrency_limit": 1}

        demo.load(h.init_session, [stored_owner], [stored_owner, owner, project, model_md],
                  **quiet).then(h.model_line, None, model_line, **quiet,
                                ).then(h.reopen_last, [owner, last_project], [project], **quiet,
                                ).then(h.view, view_in, view_out, **quiet)
        project.change(h.remember_project, [project], [last_project], **quiet)
        demo.unload(h.end_session)
        model_md.change(h.model_line, None, model_line, **quiet)
        status_btn.click(h.model_status, None, model_md, api_name="model_status")
        load_btn.click(h.load_model, None, model_md, api_name="load_model", **gpu_kw)
        if lora_pick is not None:
            lora_pick.input(h.select_lora, [lora_pick], [model_md], api_name="select_lora",
                            **gpu_kw)
            status_btn.click(h.lora_choices, None, lora_pick, **quiet)
        list_btn.click(h.list_projects, [owner], [project, project_json],
                       api_name="list_projects")
        project.input(h.view, view_in, view_out, api_name="open_project")
        resolution.change(preset_size, [resolution, width, height], [width, height], **quiet)
        segment.input(h.view, view_in, view_out, **quiet)
        prev_btn.click(h.prev_page, [*view_in, cand_page], view_out, **quiet)
        next_btn.click(h.next_page, [*view_in, cand_page], view_out, **quiet)

        pose_opts = [kind, smooth, align_mode, align_parts, image_fps, person]
        create_btn.click(
            h.create_project, [owner, reference, resolution, width, height, fit, name],
            [project, status, project_json], api_name="create_project",
        ).success(h.autoload_poses, [owner, project, pose_files, trim_start, trim_end, interval,
                                     align, *pose_opts], [status, project_json], **quiet,
                  ).then(h.view, view_in, view_out, **quiet)
        setref_btn.click(h.set_reference,
                         [owner, project, reference, resolution, width, height, fit],
                         [status, project_json], api_name="set_reference",
                         ).then(h.view, view_in, view_out, **quiet)
        pose_in = [trim_start, trim_end, interval, align, *pose_opts]
        posefile_btn.click(h.load_pose_file, [owner, project, pose_files, *pose_in],
                           [status, project_json], api_name="load_pose_file",
                           ).then(h.view, view_in, view_out, **quiet)
        extract_btn.click(h.extract_poses, [owner, project, video, *pose_in],
                          [status, project_json], api_name="extract_poses",
                          show_progress_on=[pose_video, status], **gpu_kw,
                          ).then(h.view, view_in, view_out, **quiet)

        people_btn.click(h.find_people, [owner, project, video, trim_start, trim_end,
                                         interval, kind],
                         [people_img, people_pick, person, people_state, people_md],
                         api_visibility="private", **gpu_kw)
        people_pick.input(lambda who: who, [people_pick], [person], **quiet)
        people_img.select(h.pick_person, [people_state], [people_pick, person], **quiet)
        smooth_btn.click(h.preview_smoothing, [owner, project, smooth], [smooth_video, status],
                         api_visibility="private")
        run_speed = [offload, decode_chunk]
        settings_in = [frames, steps, guidance, noise_prior, base_seed, n_cands, sampler,
                       sequential, precision, long_mode, window, overlap, *run_speed]
        preset_btn.click(h.speed_preset, None, [precision, sequential, offload, decode_chunk,
                                                speed_md], api_visibility="private")
        gen_evt = gen_btn.click(h.generate_candidates, [owner, project, segment, *settings_in],
                                [segment, status, project_json], api_name="generate_candidates",
                                show_progress_on=[slot_videos[0], status], **gpu_kw)
        gen_evt.then(h.view, view_in, view_out, **quiet).then(h.model_status, None, model_md,
                                                              **quiet)
        reroll_evt = reroll_btn.click(h.reroll, [owner, project, segment, n_cands, *run_speed],
                                      [segment, status, project_json], api_name="reroll",
                                      show_progress_on=[slot_videos[0], status], **gpu_kw)
        reroll_evt.then(h.view, view_in, view_out, **quiet).then(h.model_status, None,
                                                                 model_md, **quiet)
        cancel_btn.click(h.cancel, [owner, project], [status], api_name="cancel",
                         concurrency_limit=None, show_progress="hidden")
        choose_btn.click(h.choose, [owner, project, segment, candidate], [status, project_json],
                         api_name="choose").then(h.view, view_in, view_out, **quiet)
        continue_btn.click(h.continue_segment, [owner, project], [segment, status, project_json],
                           api_name="continue_segment").then(h.view, view_in, view_out, **quiet)
        branch_btn.click(h.select_branch, [owner, project, segment],
                         [segment, status, project_json], api_name="select_branch",
                         ).then(h.view, view_in, view_out, **quiet)
        json_btn.click(h.timeline, [owner, project], [project_json], api_name="timeline")
        rerender_btn.click(h.rerender, [owner, project, segment, candidate],
                           [status, project_json], api_name="rerender",
                           show_progress_on=[status], **gpu_kw,
                           ).then(h.view, view_in, view_out, **quiet)
        delete_btn.click(h.delete_project, [owner, project], [project, status],
                         api_name="delete_project").then(h.view, view_in, view_out, **quiet)
        export_btn.click(h.export, [owner, project, quality, sbs, pngzip, audio],
                         [export_video, export_files, status], api_name="export",
                         show_progress_on=[export_video])
    demo.queue(default_concurrency_limit=4, max_size=queue_size)
    return demo


def launch_kwargs(projects_dir: str | os.PathLike, host: str = "127.0.0.1", port: int | None = 7860,
                  share: bool = False, max_file_size: str | int | None = "200mb"
                  ) -> dict[str, Any]:
    """``Blocks.launch`` arguments: local bind by default, share opt-in, upload size limit, and
    the studio's theme/CSS. The projects folder is blocked from ``/file=`` (nothing of it is
    served directly; the UI serves per-session copies)."""
    return {"server_name": host, "server_port": port, "share": bool(share),
            "allowed_paths": [], "blocked_paths": [str(Path(projects_dir).resolve())],
            "max_file_size": max_file_size, "show_error": True, "css": CSS,
            "theme": gr.themes.Soft(), "footer_links": ["api", "gradio"]}
