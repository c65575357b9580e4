"""load_state_dict_file: safe reading of .pth / .safetensors and clear errors for bad files."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from unianimate.errors import CheckpointError, WeightsMissingError
from unianimate.models import load_state_dict_file
from unianimate.models.checkpoint import unwrap_state_dict, validate_state_dict


def small_sd() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(4, 3, generator=g), "a.bias": torch.randn(4, generator=g),
            "b.0.weight": torch.randn(2, 2, 3, 3, generator=g)}


def assert_same(sd: dict, expected: dict) -> None:
    assert sorted(sd) == sorted(expected)
    for k in expected:
        assert torch.equal(sd[k], expected[k]), k


class Marker:
    """A pickled object whose unpickling would touch a file: weights_only must refuse it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("wrapped", [False, True])
@pytest.mark.parametrize("mmap", [True, False])
def test_zip_checkpoint(tmp_path, wrapped, mmap):
    sd = small_sd()
    path = tmp_path / "w.pth"
    torch.save({"state_dict": sd} if wrapped else sd, path)
    assert_same(load_state_dict_file(path, mmap=mmap), sd)


def test_legacy_checkpoint_falls_back_without_mmap(tmp_path):
    sd = small_sd()
    path = tmp_path / "legacy.ckpt"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    assert_same(load_state_dict_file(path, mmap=True), sd)


def test_safetensors(tmp_path):
    from safetensors.torch import save_file
    sd = small_sd()
    path = tmp_path / "w.safetensors"
    save_file(sd, str(path))
    assert_same(load_state_dict_file(path), sd)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(CheckpointError, match="not a readable .safetensors"):
        load_state_dict_file(path)


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_checkpoint(tmp_path, legacy):
    path = tmp_path / "w.pth"
    torch.save(small_sd(), path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_state_dict_file(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(WeightsMissingError, match="does not exist"):
        load_state_dict_file(tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_state_dict_file(tmp_path / "empty.pth")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n" * 50)
    with pytest.raises(CheckpointError, match=r"is not a PyTorch checkpoint \(neither a zip archive nor a pickle\)"):
        load_state_dict_file(path)


@pytest.mark.parametrize("obj", [[torch.zeros(2)], torch.zeros(3), {"a": 1.5}, {"a": {"b": torch.zeros(1)}}],
                         ids=["list", "tensor", "float-value", "nested"])
def test_pickle_that_is_not_a_state_dict(tmp_path, obj):
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_state_dict_file(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("zip_format", [True, False])
def test_weights_only_refusal_never_unpickles(tmp_path, zip_format):
    marker = tmp_path / "was_executed"
    path = tmp_path / "evil.pth"
    if zip_format:
        torch.save({"state_dict": {"a": torch.zeros(1)}, "x": Marker(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Marker(marker)))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing to unpickle|not a PyTorch checkpoint"):
        load_state_dict_file(path)
    assert not marker.exists()


def test_unwrap_and_validate_messages():
    sd = small_sd()
    assert_same(unwrap_state_dict({f"module.{k}": v for k, v in sd.items()}), sd)
    assert_same(unwrap_state_dict({"state_dict": sd, "epoch": 3}), sd)
    with pytest.raises(CheckpointError, match="got list"):
        unwrap_state_dict([1, 2])
    expected = {k: tuple(v.shape) for k, v in sd.items()}
    validate_state_dict(expected, sd)
    many = {f"extra.{i}": torch.zeros(1) for i in range(9)}
    with pytest.raises(CheckpointError, match=r"9 unexpected key\(s\): extra\.0, .*\(4 more\)"):
        validate_state_dict(expected, {**sd, **many})
    with pytest.raises(CheckpointError, match=r"1 non-tensor value\(s\): a\.bias"):
        validate_state_dict(expected, {**sd, "a.bias": [0.0] * 4})
