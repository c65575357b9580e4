"""UniAnimate Studio: the Gradio app.

``python app.py`` starts the studio on http://127.0.0.1:7860 at once; the real weights are loaded
(or downloaded) on first use, with progress in the UI; without them on this machine the app starts
on the demo model trained on drawn people (``assets/demo``, ``--model demo``) when it is shipped.
``python app.py --model tiny`` runs the whole flow with a tiny random-weight pipeline (its output is
noise, clearly labelled as such). ``--lora FILE`` folds a LoRA adapter into the UNet;
``--lora-dir DIR`` lets the UI choose one of that folder's adapters (model details).
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry; works offline

from ui.blocks import build_ui, launch_kwargs  # noqa: E402  (after the environment default)
from ui.runtime import DEFAULT_MODEL_SOURCE, ModelManager, build_studio  # noqa: E402
from unianimate import space  # noqa: E402  (registers the ZeroGPU entry point on a Space)
from unianimate.demo_model import DEMO_MODEL_NAME  # noqa: E402
from unianimate.errors import InputError, UniAnimateError  # noqa: E402

log = logging.getLogger("unianimate.app")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of the app."""
    p = argparse.ArgumentParser(description="UniAnimate Studio (Gradio app)")
    p.add_argument("--model", default=os.environ.get("UNIANIMATE_MODEL", "auto"),
                   help="'real' (the released weights from the Hub, "
                        f"{DEFAULT_MODEL_SOURCE}), 'demo' (the {DEMO_MODEL_NAME}, shipped in "
                        "assets/demo), 'tiny' (random weights, for trying the flow), or a Hub repo "
                        "id / local folder holding the weight files; 'auto' (default): real when "
                        "its weights are on this machine, else demo when shipped, else real")
    p.add_argument("--lora", default=None,
                   help="LoRA adapters (.safetensors from `python -m unianimate.train finetune "
                        "--lora-rank N`) folded into the UNet of the loaded weights; with "
                        "--lora-dir, the name of one of that folder's files")
    p.add_argument("--lora-dir", default=None,
                   help="folder of LoRA adapter .safetensors files the UI may choose from "
                        "(model details: 'LoRA adapter'; default: no choice)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                   help="port (default 7860)")
    p.add_argument("--share", action="store_true",
                   help="opt in to a public gradio.live link (off by default)")
    p.add_argument("--projects-dir", default=os.environ.get("UNIANIMATE_PROJECTS", "projects"),
                   help="folder holding the projects (default ./projects)")
    p.add_argument("--max-file-size", default="200mb",
                   help="largest accepted upload, e.g. 200mb or 1gb (default 200mb)")
    p.add_argument("--dwpose", default=None,
                   help="folder or Hub repo holding the DWPose ONNX files (default: with the model)")
    p.add_argument("--device", default="auto", help="torch device: auto, cuda, cpu")
    p.add_argument("--dtype", default="auto", help="auto, fp16, bf16 or fp32")
    p.add_argument("--shared-sessions", action="store_true",
                   help="let every browser session see every project (single-user machines); "
                        "by default each session sees only its own projects")
    p.add_argument("--queue-size", type=int, default=32, help="most jobs waiting in the queue")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def build_models(args: argparse.Namespace) -> ModelManager:
    """The model manager of the command line (InputError naming the flag for a bad one)."""
    if args.lora_dir is not None and space.on_space():
        raise InputError("--lora-dir is not available on a ZeroGPU Space (the model is built "
                         "once at start-up); use --lora FILE")
    return ModelManager(args.model, device=args.device, dtype=args.dtype, dwpose=args.dwpose,
                        lora=args.lora, lora_dir=args.lora_dir)


def main(argv: list[str] | None = None) -> None:
    """Build the service and the UI, then serve."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    projects_dir = Path(args.projects_dir).expanduser().resolve()
    projects_dir.mkdir(parents=True, exist_ok=True)
    try:
        models = build_models(args)
    except UniAnimateError as err:
        raise SystemExit(f"app.py: {err}") from None
    studio = build_studio(projects_dir, models)
    if space.on_space():
        # ZeroGPU: the model is built now, on the CPU, before the first GPU call forks the
        # worker; generation then enters GPU time through unianimate.space.generate_on_gpu
        try:
            space.load_cpu_pipeline(models.source, tiny=models.is_tiny, lora=models.lora)
            studio.engines.animator_factory = space.pipeline_factory
        except UniAnimateError as err:
            models.last_error = str(err)
            log.error("the model could not be loaded at start-up: %s", err)
    demo = build_ui(studio, models, isolate_sessions=not args.shared_sessions,
                    queue_size=args.queue_size)
    log.info("model: %s", models.status_text())
    demo.launch(**launch_kwargs(projects_dir, host=args.host, port=args.port, share=args.share,
                                max_file_size=args.max_file_size))


if __name__ == "__main__":
    main()
