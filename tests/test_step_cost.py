"""Step cost (issue 12): glibc keeps freed memory without changing a bit, the pipeline's switch for it,
and bench/unet_step.py on the tiny config (our step and the reference emulation compute the same
guided step, the encoded keys/values change no bit, the table carries the CPU time)."""
from __future__ import annotations

import json

import torch

from bench import unet_step as us
from tests.test_unet import SMALL
from unianimate.models import UNetConfig, UniAnimateUNet
from unianimate.models.attention import attention_backend
from unianimate.pipeline import UniAnimatePipeline
from unianimate.utils import reuse_freed_cpu_memory


def _model_and_inputs(extra: list[str] | None = None):
    args = us.parse_args(["--config", "tiny", "--width", "64", "--height", "128", "--frames", "3", *(extra or [])])
    model = us.build_model(args, torch.device("cpu"), torch.float32)
    return args, model, us.make_inputs(args, model.config, torch.device("cpu"), torch.float32)


def test_reference_emulation_flags():
    args = us.parse_args(["--reference-emulation"])
    assert (args.batch_guidance, args.attention, args.encode_once, args.context_kv) == (False, "reference", False, False)
    assert not args.reuse_cpu_memory and not us.parse_args([]).reuse_cpu_memory
    assert us.parse_args(["--reuse-cpu-memory"]).reuse_cpu_memory


def test_guided_step_forms_agree():
    """Encoded once with keys/values, every step without them: the same bits; the reference emulation
    (two calls, plain softmax attention) the same step to float tolerance."""
    args, model, inp = _model_and_inputs()
    ours = us.guided_step(model, inp, True, us.encode(model, inp, True))
    every_step_no_kv = us.guided_step(model, inp, True, None, context_kv=False)
    assert (ours - every_step_no_kv).abs().max().item() == 0.0
    with attention_backend("reference"):
        reference = us.guided_step(model, inp, False, None, context_kv=False)
    torch.testing.assert_close(reference, ours, rtol=1e-4, atol=1e-4)


def test_main_writes_cpu_time(tmp_path):
    out = tmp_path / "step.json"
    threads = torch.get_num_threads()
    try:
        with attention_backend("sdpa"):  # main() selects the backend of its arguments; restored here
            payload = us.main(["--config", "tiny", "--width", "64", "--height", "64", "--frames", "2",
                               "--threads", "1", "--warmup", "0", "--reference-emulation", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert len(payload["cpu_seconds"]) == 1 and payload["cpu_seconds"][0] > 0
    assert payload["row"]["options"] == "reference_emulation" and payload["row"]["attention"] == "reference"
    assert json.loads(out.read_text())["row"]["guidance"] == "sequential"


def test_reusing_freed_memory_changes_no_bit():
    """The same guided steps (tiny and small UNet) with glibc's default allocator limits and with freed
    memory kept for reuse: max abs difference 0."""
    outs = {}
    args, tiny, inp = _model_and_inputs(["--frames", "4"])
    small = UniAnimateUNet(UNetConfig.tiny(**SMALL)).eval().init_random_weights_(0)
    small_inp = us.make_inputs(args, small.config, torch.device("cpu"), torch.float32)
    try:
        for enable in (False, True):
            assert reuse_freed_cpu_memory(enable)
            for name, model, x in (("tiny", tiny, inp), ("small", small, small_inp)):
                outs[name, enable] = [us.guided_step(model, x, True, us.encode(model, x, True)) for _ in range(2)]
    finally:
        reuse_freed_cpu_memory(False)
    for name in ("tiny", "small"):
        for a, b in zip(outs[name, False], outs[name, True]):
            assert (a - b).abs().max().item() == 0.0


def test_pipeline_reuse_cpu_memory_switch():
    try:
        assert UniAnimatePipeline.tiny().info()["reuse_cpu_memory"] is False  # opt-in: more peak memory
        assert UniAnimatePipeline.tiny(reuse_cpu_memory=True).info()["reuse_cpu_memory"] is True
    finally:
        reuse_freed_cpu_memory(False)
