"""Generation jobs: candidates of a segment (queued for the GPU, recorded before they start,
saved losslessly, measured, colour-corrected), cancel, and re-rendering from the manifest."""
from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unianimate.errors import GenerationCancelled, InputError, ProjectError, UniAnimateError
from unianimate.studio import measures as M
from unianimate.studio.engines import Engines
from unianimate.studio.jobs import CancelToken, Progress, ProgressFn, StepClock, report
from unianimate.studio.media import read_pngs, save_png
from unianimate.studio.ports import Animator
from unianimate.seeds import branch_path, candidate_seed
from unianimate.studio.project import Candidate, GenerationSettings, Job, Project, Segment
from unianimate.studio.settings import SpeedOptions
from unianimate.studio.store import ProjectStore

log = logging.getLogger(__name__)


class Generation:
    """Candidates in and out of project folders (ownership through the store)."""

    def __init__(self, store: ProjectStore, engines: Engines) -> None:
        self.store = store
        self.engines = engines

    def ensure_root(self, project_id: str, owner: str | None) -> Segment:
        """The root segment, created (poses 0..frames_per_segment) when missing."""
        with self.store.edit(project_id, owner) as project:
            return project.ensure_root()

    def generate_candidates(self, project_id: str, segment_id: str | None = None,
                            n: int | None = None, progress: ProgressFn | None = None,
                            should_cancel: Callable[[], bool] | None = None,
                            owner: str | None = None,
                            speed: SpeedOptions | None = None) -> list[Candidate]:
        """Generate ``n`` (default: settings.candidates) new candidates of a segment.

        ``speed``: this run's VRAM / speed options (offload, VAE decode chunk; default
        :class:`SpeedOptions`), which leave the output unchanged and are not project settings.

        ``segment_id`` None = the root segment (created on first use). Blocks until done; waits
        in the GPU queue first (progress reports the position). On cancel raises
        GenerationCancelled after recording the candidate in progress as interrupted; candidates
        finished before stay. On any other error the candidate is recorded as failed and the
        error propagates.
        """
        if segment_id is None:
            segment_id = self.ensure_root(project_id, owner).id
        with self.store.edit(project_id, owner) as project:
            project.fit_empty_segment(segment_id)
        seg = project.segment(segment_id)
        if project.poses is None:
            raise InputError("load a driving video or pose sequence before generating")
        if seg.parent is not None and seg.first_frame is None:
            raise ProjectError(f"segment {seg.id} has no first frame recorded")
        speed = (speed or SpeedOptions()).validated()
        count = int(n if n is not None else project.settings.candidates)
        limit = GenerationSettings.limit("candidates")
        if not (limit.lo <= count <= limit.hi):
            raise InputError(f"number of candidates must be {limit.span()}, got {count}")
        job = Job(id=uuid.uuid4().hex[:12], kind="generate", segment=seg.id, candidates=[])
        token = CancelToken(should_cancel)
        runtime = self.store.runtime
        key = self.store.job_key(project_id)
        runtime.claim(key, token)
        runtime.mark_live(job.id)
        try:
            with self.store.edit(project_id, owner) as p:
                p.jobs.append(job)
                p.jobs[:] = p.jobs[-200:]
            on_wait = (lambda pos: report(progress, Progress(
                "queued", queue_position=pos, message=f"waiting for the GPU: {pos} job(s) ahead")))
            with runtime.gpu.slot(on_wait=on_wait, should_cancel=token):
                self._set_job(project_id, owner, job.id, status="running")
                pipe = self.engines.pipeline(progress, project.settings.precision)
                return self._run_generation(project_id, owner, seg.id, job.id, count, pipe,
                                            progress, token, speed)
        except GenerationCancelled:
            self._set_job(project_id, owner, job.id, status="cancelled")
            raise
        except BaseException as err:
            self._set_job(project_id, owner, job.id, status="failed", error=_describe(err))
            raise
        finally:
            runtime.mark_dead(job.id)
            runtime.release(key)

    def cancel(self, project_id: str, owner: str | None) -> bool:
        """Ask the queued/running generation of a project to stop; False when none runs."""
        self.store.check_owner(project_id, owner)
        token = self.store.runtime.token(self.store.job_key(project_id))
        if token is None:
            return False
        token.cancel()
        return True

    def _set_job(self, project_id: str, owner: str | None, job_id: str, status: str,
                 error: str | None = None) -> None:
        try:
            with self.store.edit(project_id, owner) as p:
                for job in p.jobs:
                    if job.id == job_id:
                        job.status = status
                        if status not in ("queued", "running"):
                            job.finished = time.time()
                        if error:
                            job.error = error
        except ProjectError as err:           # project deleted meanwhile: nothing to record
            log.warning("could not record job %s as %s: %s", job_id, status, err)

    def _run_generation(self, project_id: str, owner: str | None, segment_id: str, job_id: str,
                        count: int, pipe: Any, progress: ProgressFn | None,
                        token: CancelToken, speed: SpeedOptions) -> list[Candidate]:
        """The body of a generation job (holding the GPU)."""
        folder = self.store.folder(project_id)
        project = self.store.load(project_id, owner)
        seg = project.segment(segment_id)
        settings = project.settings
        inputs = self._segment_inputs(project, seg)
        clock = StepClock(count * settings.steps)
        done: list[Candidate] = []
        for i in range(count):
            cand = self._record_running(project_id, owner, segment_id, job_id, settings,
                                        str(pipe.model_name), speed.decode_chunk)

            def callback(step: int, total: int, preview: Any = None, _i: int = i) -> None:
                # ``total`` is the pipeline's count of denoising calls for one candidate
                clock.total = max(1, count * int(total))
                done_steps = _i * int(total) + int(step)
                eta = clock.tick(done_steps)
                report(progress, Progress("generating", step=done_steps, total=clock.total,
                                          eta_s=eta, candidate=_i + 1, candidates=count,
                                          preview=preview,
                                          message=f"candidate {_i + 1}/{count}: step {step}/{total}"))

            t0 = time.monotonic()
            rel = f"segments/{segment_id}/{cand.id}"
            try:
                frames = self._render(pipe, inputs, cand.seed, settings, seg.num_frames,
                                      callback, token, speed)
                gen_s = time.monotonic() - t0
                report(progress, Progress("saving", step=clock.done, total=clock.total,
                                          candidate=i + 1, candidates=count,
                                          message=f"candidate {i + 1}/{count}: saving frames"))
                frames, correction, measures = self._measure_and_correct(project, seg, inputs,
                                                                          frames, settings)
                fps = project.poses.fps if project.poses else 8.0
                self._save_candidate_media(folder, rel, frames, fps)
            except GenerationCancelled:
                self._finish_candidate(project_id, owner, segment_id, cand.id, "interrupted",
                                       error="cancelled by the user")
                raise
            except BaseException as err:
                self._finish_candidate(project_id, owner, segment_id, cand.id, "failed",
                                       error=_describe(err))
                raise
            timings = {"generate_s": round(gen_s, 3),
                       "per_step_s": round(gen_s / max(1, settings.steps), 4),
                       "save_s": round(time.monotonic() - t0 - gen_s, 3)}
            with self.store.edit(project_id, owner) as p:
                c = p.segment(segment_id).candidate(cand.id)
                c.status, c.frames_dir, c.num_frames = "done", rel, int(frames.shape[0])
                c.poster, c.preview = f"{rel}/poster.png", f"{rel}/preview.mp4"
                c.timings, c.measures, c.color_correction = timings, measures, correction
                done.append(c)
            log.info("candidate %s (seed %d) done in %.1f s", cand.id, cand.seed, gen_s)
        self._set_job(project_id, owner, job_id, status="done")
        report(progress, Progress("done", step=clock.total, total=clock.total, candidates=count,
                                  message=f"{count} candidate(s) ready"))
        return done

    def _record_running(self, project_id: str, owner: str | None, segment_id: str, job_id: str,
                        settings: GenerationSettings, model_name: str,
                        decode_chunk: int) -> Candidate:
        """A new candidate recorded as running before it is generated (so a crash shows up as
        interrupted), with the next index and its seed (``unianimate.seeds.candidate_seed``: the
        released rule on the main line, a branch offset for sibling segments)."""
        with self.store.edit(project_id, owner) as p:
            seg = p.segment(segment_id)
            index = max((c.index for c in seg.candidates), default=-1) + 1
            main_line = next(s for s in p.segments if s.depth == seg.depth).id == seg.id
            path = branch_path([(s.id, s.parent_candidate) for s in p.ancestry(seg.id)])
            cand = Candidate(id=f"c{index}", index=index,
                             seed=candidate_seed(settings.base_seed, seg.depth, index, path,
                                                 main_line=main_line),
                             settings=settings, status="running", job_id=job_id,
                             model=model_name, decode_chunk=int(decode_chunk))
            seg.candidates.append(cand)
            for job in p.jobs:
                if job.id == job_id:
                    job.candidates.append(cand.id)
        return cand

    def _finish_candidate(self, project_id: str, owner: str | None, segment_id: str,
                          candidate_id: str, status: str, error: str | None) -> None:
        try:
            with self.store.edit(project_id, owner) as p:
                c = p.segment(segment_id).candidate(candidate_id)
                c.status = status
                c.error = error
        except ProjectError as err:
            log.warning("could not record candidate %s as %s: %s", candidate_id, status, err)

    def _segment_inputs(self, project: Project, seg: Segment) -> dict[str, Any]:
        """Everything the pipeline needs for a segment, read from the project folder."""
        folder = self.store.folder(project.id)
        if project.poses is None or project.reference.pose is None:
            raise InputError("load a driving video or pose sequence before generating")
        ref = np.asarray(Image.open(folder / project.reference.fitted).convert("RGB"))
        ref_pose = np.asarray(Image.open(folder / project.reference.pose).convert("RGB"))
        poses = read_pngs(folder / project.poses.images, seg.start, seg.end)
        first = None
        if seg.first_frame is not None:
            first = np.asarray(Image.open(self.store.inside(folder, seg.first_frame)).convert("RGB"))
        # drift is measured against the reference image for every segment (one scale for the
        # whole column; issue 11 item 12: against the root candidate for later segments it was
        # ~0.1 beside ~65 for the root)
        return {"reference": ref, "ref_pose": ref_pose, "poses": poses, "first_frame": first,
                "prev_last": first, "anchor": M.mean_color(ref[None])}

    @staticmethod
    def _render(pipe: Animator, inputs: dict[str, Any], seed: int, settings: GenerationSettings,
                num_frames: int, callback: Callable[..., None] | None,
                should_cancel: Callable[[], bool] | None,
                speed: SpeedOptions) -> np.ndarray:
        """One candidate's frames: a segment, or in long mode the reference's sliding windows."""
        common: dict[str, Any] = dict(
            first_frame=inputs["first_frame"], seed=int(seed),
            num_inference_steps=settings.steps, guidance_scale=settings.guidance,
            noise_prior_t=settings.noise_prior_t, sampler=settings.sampler, callback=callback,
            should_cancel=should_cancel, batch_guidance=not settings.sequential_guidance,
            **speed.pipeline_kwargs())
        if settings.long_mode:
            frames = pipe.generate_long(inputs["reference"], inputs["poses"], inputs["ref_pose"],
                                        window=settings.window, overlap=settings.overlap,
                                        **common)
        else:
            frames = pipe.generate_segment(inputs["reference"], inputs["poses"],
                                           inputs["ref_pose"], num_frames=num_frames, **common)
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != num_frames:
            raise UniAnimateError(f"the pipeline returned frames of shape {frames.shape} "
                                  f"{frames.dtype}, expected ({num_frames}, H, W, 3) uint8")
        return frames

    @staticmethod
    def _measure_and_correct(project: Project, seg: Segment, inputs: dict[str, Any],
                             frames: np.ndarray, settings: GenerationSettings
                             ) -> tuple[np.ndarray, dict[str, Any] | None, dict[str, Any]]:
        """Colour correction (when switched on and the join drifts) then the measures."""
        prev_last = inputs["prev_last"]
        correction = None
        if prev_last is not None and settings.color_correction:
            jump = M.color_jump(prev_last, frames[0])
            if jump > settings.color_threshold:
                frames, params = M.match_color(frames, prev_last)
                correction = {**params, "jump_before": round(jump, 3),
                              "jump_after": round(M.color_jump(prev_last, frames[0]), 3)}
        measures = M.candidate_measures(frames, prev_last=prev_last, anchor_color=inputs["anchor"],
                                        reference=inputs["reference"])
        return frames, correction, measures

    def _save_candidate_media(self, folder: Path, rel: str, frames: np.ndarray,
                              fps: float) -> None:
        """Frames as PNGs (lossless: the last one seeds the next segment), poster, preview."""
        from unianimate.video.writer import write_mp4
        final = folder / rel
        tmp = folder / (rel + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for i, frame in enumerate(frames):
            save_png(tmp / f"{i:06d}.png", frame)
        save_png(tmp / "poster.png", frames[-1])
        write_mp4(frames, tmp / "preview.mp4", fps=fps, quality=20)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)

    def candidate_frames(self, project_id: str, segment_id: str, candidate_id: str,
                         owner: str | None = None) -> np.ndarray:
        """The saved frames of a done candidate, uint8 (F,H,W,3)."""
        project = self.store.load(project_id, owner)
        cand = project.segment(segment_id).candidate(candidate_id)
        if cand.status != "done" or cand.frames_dir is None:
            raise InputError(f"candidate {candidate_id} of segment {segment_id} has no frames "
                             f"(status: {cand.status})")
        folder = self.store.folder(project_id)
        return read_pngs(self.store.inside(folder, cand.frames_dir), 0, cand.num_frames)

    def rerender(self, project_id: str, segment_id: str, candidate_id: str,
                 progress: ProgressFn | None = None, owner: str | None = None) -> np.ndarray:
        """Generate a candidate again from the manifest alone (same seed, settings, inputs,
        same colour correction); returns the frames without saving them."""
        project = self.store.load(project_id, owner)
        seg = project.segment(segment_id)
        cand = seg.candidate(candidate_id)
        inputs = self._segment_inputs(project, seg)
        # offload never changes the frames; the decode chunk is the one it was made with
        speed = SpeedOptions(decode_chunk=cand.decode_chunk or SpeedOptions().decode_chunk)
        with self.store.runtime.gpu.slot():
            pipe = self.engines.pipeline(progress, cand.settings.precision)
            name = str(pipe.model_name)
            if cand.model is not None and cand.model != name:
                log.warning("re-rendering %s/%s with model %s; it was made with %s, so the "
                            "frames will differ", segment_id, candidate_id, name, cand.model)
            frames = self._render(pipe, inputs, cand.seed, cand.settings, seg.num_frames, None,
                                  None, speed)
        if cand.color_correction is not None:
            frames = M.apply_color(frames, cand.color_correction)
        return frames

    def repair_candidate(self, project_id: str, segment_id: str, candidate_id: str,
                         progress: ProgressFn | None = None,
                         owner: str | None = None) -> Candidate:
        """Re-render a done candidate from its manifest (:meth:`rerender`) and write its frames,
        poster and preview again, e.g. after a frame was damaged on disk. A continuation whose
        first frame (a copy of this candidate's last) no longer reads gets it again."""
        project = self.store.load(project_id, owner)
        seg = project.segment(segment_id)
        cand = seg.candidate(candidate_id)
        if cand.status != "done" or cand.frames_dir is None:
            raise InputError(f"candidate {candidate_id} of segment {segment_id} is {cand.status}; "
                             "only a finished candidate can be re-rendered (re-roll the segment "
                             "for new candidates)")
        frames = self.rerender(project_id, segment_id, candidate_id, progress=progress,
                               owner=owner)
        folder = self.store.folder(project_id)
        fps = project.poses.fps if project.poses else 8.0
        with self.store.lock(project_id):
            self.store.inside(folder, cand.frames_dir)
            self._save_candidate_media(folder, cand.frames_dir, frames, fps)
            for child in project.children(seg.id, cand.id):
                if child.first_frame is None:
                    continue
                first = self.store.inside(folder, child.first_frame)
                try:
                    with Image.open(first) as img:
                        img.convert("RGB")
                except (OSError, ValueError, SyntaxError):
                    save_png(first, frames[-1])
        log.info("re-rendered candidate %s of segment %s", candidate_id, segment_id)
        return cand


def _describe(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


__all__ = ["Generation"]
