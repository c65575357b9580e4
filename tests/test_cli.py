"""The headless CLI: python -m unianimate with --model tiny on tiny inputs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unianimate.__main__ import EXIT_INPUT, EXIT_OK, main
from unianimate.pose import PoseSequence, save_pose_sequence
from unianimate.pose.synthetic import synthetic_pose
from unianimate.studio.store import STATE_DIR
from unianimate.video.writer import probe_media

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def inputs(tmp_path):
    ref = tmp_path / "ref.png"
    img = np.zeros((96, 64, 3), np.uint8)
    img[...] = (90, 120, 150)
    img[20:80, 24:40] = 230
    Image.fromarray(img).save(ref)
    rng = np.random.default_rng(3)
    seq = PoseSequence([synthetic_pose(rng, jitter=0.01) for _ in range(9)], fps=10.0,
                       width=64, height=64)
    poses = save_pose_sequence(seq, tmp_path / "poses.json")
    return ref, poses


def test_cli_end_to_end_tiny(inputs, tmp_path, caplog):
    ref, poses = inputs
    out = tmp_path / "out.mp4"
    root = tmp_path / "projects"
    caplog.set_level("INFO")
    code = main(["--reference", str(ref), "--driving", str(poses), "--out", str(out),
                 "--model", "tiny", "--width", "64", "--height", "64", "--segment-frames", "5",
                 "--candidates", "2", "--choose", "best", "--steps", "2", "--frame-interval", "1",
                 "--projects-root", str(root), "--png-zip"])
    assert code == EXIT_OK
    info = probe_media(out)
    assert info.frames == 2 * (5 - 1) + 1 and info.fps == pytest.approx(10.0)
    assert (tmp_path / "out_frames.zip").is_file()
    text = caplog.text
    assert "segment 2/2" in text and "chose" in text and "TINY" in text
    # the project was kept and can be reopened by the app
    from unianimate.studio import Studio
    [summary] = Studio(root).list_projects()
    assert summary.chosen_frames == 9


def test_cli_sampler_reaches_the_pipeline(inputs, tmp_path, caplog):
    ref, poses = inputs
    out = tmp_path / "out.mp4"
    caplog.set_level("INFO")
    root = tmp_path / "projects"
    code = main(["--reference", str(ref), "--driving", str(poses), "--out", str(out),
                 "--model", "tiny", "--width", "64", "--height", "64", "--segment-frames", "5",
                 "--max-segments", "1", "--steps", "2", "--frame-interval", "1", "--sampler", "unipc",
                 "--projects-root", str(root)])
    assert code == EXIT_OK and probe_media(out).frames == 5
    # the sampler is a generation setting: the candidate was made (and re-renders) with it
    from unianimate.studio import Studio
    studio = Studio(root)
    [summary] = studio.list_projects()
    [cand] = studio.get_project(summary.id).segments[0].candidates
    assert cand.settings.sampler == "unipc"


def test_cli_speed_and_long_mode_options(inputs, tmp_path, caplog):
    """Issue 11: the app's VRAM / speed section and long mode as flags (same names, limits)."""
    ref, poses = inputs
    out = tmp_path / "out.mp4"
    caplog.set_level("INFO")
    root = tmp_path / "projects"
    common = ["--reference", str(ref), "--driving", str(poses), "--out", str(out),
              "--model", "tiny", "--width", "64", "--height", "64", "--segment-frames", "6",
              "--max-segments", "1", "--steps", "1", "--frame-interval", "1",
              "--projects-root", str(root)]
    code = main([*common, "--speed-preset", "auto", "--dtype", "bf16", "--sequential-guidance",
                 "--offload", "on", "--decode-chunk", "4", "--long-mode", "--window", "4",
                 "--overlap", "2"])
    assert code == EXIT_OK and probe_media(out).frames == 6
    assert "speed preset: no GPU" in caplog.text
    from unianimate.studio import Studio
    studio = Studio(root)
    [summary] = studio.list_projects()
    [cand] = studio.get_project(summary.id).segments[0].candidates
    st = cand.settings
    assert (st.precision, st.sequential_guidance, st.long_mode, st.window, st.overlap) == \
        ("bf16", True, True, 4, 2)
    assert cand.decode_chunk == 4
    # the preset alone on the CPU: fp32, batched guidance, the CPU's decode chunk
    shutil_root = tmp_path / "p2"
    assert main([*common[:-1], str(shutil_root), "--speed-preset", "auto"]) == EXIT_OK
    studio = Studio(shutil_root)
    [summary] = studio.list_projects()
    [cand] = studio.get_project(summary.id).segments[0].candidates
    assert (cand.settings.precision, cand.settings.sequential_guidance, cand.decode_chunk) == \
        ("fp32", False, 8)
    # limits: refused before any project exists, naming the flag's setting
    for bad, message in ((["--precision", "fp16"], "--precision fp16 is not supported"),
                         (["--long-mode", "--window", "4", "--overlap", "4"],
                          "overlap=4 .must be below window=4"),
                         (["--decode-chunk", "0"], "VAE decode chunk .frames. must be a whole "
                                                  "number in 1..128"),
                         (["--window", "1"], "window=1 .use 2..128")):
        caplog.clear()
        empty = tmp_path / "bad"
        assert main([*common[:-1], str(empty), *bad]) == EXIT_INPUT
        assert __import__("re").search(message, caplog.text), (bad, caplog.text)
        assert not empty.exists() or not [d for d in empty.iterdir() if d.name != STATE_DIR]


def test_cli_bad_input_exit_codes(inputs, tmp_path, caplog):
    ref, poses = inputs
    out = tmp_path / "o.mp4"
    base = ["--model", "tiny", "--out", str(out), "--width", "64", "--height", "64",
            "--steps", "1", "--frame-interval", "1"]
    bad_img = tmp_path / "bad.png"
    bad_img.write_bytes(b"not an image")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"format": "nope"}')
    cases = {
        "does not exist": ["--reference", str(tmp_path / "missing.png"), "--driving", str(poses)],
        "image": ["--reference", str(bad_img), "--driving", str(poses)],
        "fewer than one segment": ["--reference", str(ref), "--driving", str(poses),
                                   "--segment-frames", "50"],
        "multiple of 64": ["--reference", str(ref), "--driving", str(poses), "--width", "100"],
        "pose": ["--reference", str(ref), "--driving", str(bad_json)],
        "--sampler must be one of ddim, dpmpp_2m, unipc": ["--reference", str(ref), "--driving", str(poses),
                                                           "--sampler", "euler"],
    }
    for expected, extra in cases.items():
        caplog.clear()
        assert main(base + extra) == EXIT_INPUT, expected
        assert "bad input" in caplog.text and expected in caplog.text.lower(), caplog.text
    assert not out.exists()
    # as a process: non-zero exit status and the message on stderr
    proc = subprocess.run([sys.executable, "-m", "unianimate", *base, "--reference",
                           str(tmp_path / "missing.png"), "--driving", str(poses)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_INPUT and "does not exist" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "unianimate", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--segment-frames" in proc.stdout


def test_cli_driving_video_keeps_audio(inputs, tmp_path):
    """A driving video with sound, DWPose from a local folder (the small test models)."""
    from tests.test_export import make_video_with_audio
    from unianimate.pose.synthetic import export_tiny_dwpose
    ref, _ = inputs
    export_tiny_dwpose(tmp_path / "dwpose")
    drv = make_video_with_audio(tmp_path / "drv.mp4", seconds=2.0, fps=16)
    out = tmp_path / "v.mp4"
    code = main(["--reference", str(ref), "--driving", str(drv), "--out", str(out),
                 "--model", "tiny", "--dwpose", str(tmp_path / "dwpose"), "--width", "64",
                 "--height", "64", "--segment-frames", "4", "--candidates", "1", "--steps", "1",
                 "--frame-interval", "2", "--start", "0.5", "--max-segments", "2",
                 "--side-by-side", "-q"])
    assert code == EXIT_OK
    info = probe_media(out)
    assert info.frames == 2 * (4 - 1) + 1 and info.fps == pytest.approx(8.0) and info.has_audio
    assert info.audio_duration == pytest.approx(7 / 8.0, abs=0.15)
    assert probe_media(tmp_path / "v_side_by_side.mp4").width == 3 * 64


# ---- issue 11 -------------------------------------------------------------------------------

def _drawn_pose_video(path: Path, n: int = 8) -> Path:
    from unianimate.pose import draw_pose
    from unianimate.pose.synthetic import write_video
    rng = np.random.default_rng(0)
    return write_video(path, [draw_pose(synthetic_pose(rng, jitter=0.01), 192, 128) for _ in range(n)], fps=16)


def test_cli_drawn_pose_video_needs_no_dwpose_files(inputs, tmp_path, caplog):
    """Issue 11 #1: exit 3 ('needs the detector') and an empty project left behind, before."""
    ref, _ = inputs
    drv = _drawn_pose_video(tmp_path / "drawn.mp4")
    empty = tmp_path / "no_dwpose"
    empty.mkdir()
    out, root = tmp_path / "d.mp4", tmp_path / "projects"
    caplog.set_level("INFO")
    code = main(["--reference", str(ref), "--driving", str(drv), "--out", str(out), "--model", "tiny",
                 "--dwpose", str(empty), "--width", "64", "--height", "64", "--segment-frames", "4",
                 "--steps", "1", "--frame-interval", "2", "--projects-root", str(root)])
    assert code == EXIT_OK, caplog.text
    assert probe_media(out).frames == 4 and "drawn pose" in caplog.text


def test_cli_checks_the_driving_input_before_creating_a_project(inputs, tmp_path, caplog):
    from unianimate.__main__ import EXIT_WEIGHTS
    ref, poses = inputs
    root = tmp_path / "projects"
    empty = tmp_path / "no_dwpose"
    empty.mkdir()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    real = tmp_path / "real.mp4"
    from unianimate.pose.synthetic import write_video
    write_video(real, [np.random.default_rng(i).integers(40, 200, (96, 64, 3)).astype(np.uint8)
                       for i in range(6)], fps=16)
    base = ["--reference", str(ref), "--out", str(tmp_path / "o.mp4"), "--model", "tiny",
            "--width", "64", "--height", "64", "--steps", "1", "--projects-root", str(root),
            "--dwpose", str(empty)]
    cases = [(["--driving", str(broken)], EXIT_INPUT, "broken.mp4"),
             (["--driving", str(real)], EXIT_WEIGHTS, "dwpose"),
             (["--driving", str(poses), "--smooth", "2"], EXIT_INPUT, "smoothing strength"),
             (["--driving", str(poses), "--image-fps", "0"], EXIT_INPUT, "frame rate of pose images"),
             (["--driving", str(poses), "--align-parts", "body,feet"], EXIT_INPUT, "alignment part"),
             (["--driving", str(poses), "--frame-interval", "0"], EXIT_INPUT, "frame_interval"),
             (["--driving", str(poses), "--start", "30"], EXIT_INPUT, "no frames between 30 s")]
    for extra, expected_code, text in cases:
        caplog.clear()
        assert main(base + extra) == expected_code, (extra, caplog.text)
        assert text in caplog.text.lower() or text in caplog.text, caplog.text
        # no (empty) project left behind (the store's own state folder is not a project)
        leftovers = [p.name for p in root.iterdir() if p.name != STATE_DIR] if root.exists() else []
        assert leftovers == [], (extra, leftovers)


def test_cli_pose_json_trim_interval_and_pose_controls(inputs, tmp_path, caplog):
    """Issue 11 #2: --frame-interval / --start apply to pose JSON (9 poses at 10 fps here)."""
    ref, poses = inputs
    out, root = tmp_path / "j.mp4", tmp_path / "projects"
    caplog.set_level("INFO")
    code = main(["--reference", str(ref), "--driving", str(poses), "--out", str(out), "--model", "tiny",
                 "--width", "64", "--height", "64", "--segment-frames", "4", "--steps", "1",
                 "--frame-interval", "2", "--start", "0.2", "--smooth", "0.5", "--align-mode", "scale",
                 "--align-parts", "body", "--projects-root", str(root)])
    assert code == EXIT_OK, caplog.text
    info = probe_media(out)
    assert info.frames == 4 and info.fps == pytest.approx(5.0)    # poses 2, 4, 6, 8 at 10/2 fps
    assert "kept 4 of 9 poses (every 2nd, from 0.2 s to the end) -> 5 fps" in caplog.text
    assert "smoothed the keypoints" in caplog.text
    from unianimate.studio import Studio
    [summary] = Studio(root).list_projects()
    manifest = (root / summary.id / "manifest.json").read_text()
    assert '"align_mode": "scale"' in manifest and '"frame_interval": 2' in manifest
