"""ONNX export: onnxruntime matches PyTorch (fp32, atol 1e-4) at batch sizes 1 and 3; metadata."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pylon import create_model, save_weights
from pylon.cli.main import app
from pylon.inference.export import read_onnx_metadata

ort = pytest.importorskip("onnxruntime")

CLASSES = ["a", "b", "c"]
# fp32 on both sides; observed differences are ~1e-5 (different conv kernels and summation order)
ATOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = create_model("pylon", encoder="resnet18", num_classes=len(CLASSES)).eval()
    with torch.no_grad():  # the reference init gives random maps of ~20; trained ones are smaller
        model.class_head.weight.mul_(0.05)
    weights = folder / "pylon.safetensors"
    data = {"class_names": CLASSES, "size": 256, "in_channels": 1, "mean": [0.5], "std": [0.25]}
    save_weights(model, weights, metadata={"pylon_data": data})
    onnx_path = folder / "pylon.onnx"
    result = CliRunner().invoke(app, ["export", str(weights), str(onnx_path)])
    assert result.exit_code == 0, result.output
    return model, onnx_path


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_pytorch(exported, batch):
    model, onnx_path = exported
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = torch.randn(batch, 1, 256, 256, generator=torch.Generator().manual_seed(batch))
    logits, cam = session.run(["logits", "cam"], {"image": x.numpy()})
    with torch.no_grad():
        expected = model(x)
    assert logits.shape == (batch, len(CLASSES)) and cam.shape == tuple(expected.cam.shape)
    np.testing.assert_allclose(logits, expected.logits.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(cam, expected.cam.numpy(), atol=ATOL, rtol=0)


@pytest.mark.slow
def test_metadata_travels_with_the_onnx_file(exported):
    _, onnx_path = exported
    metadata = read_onnx_metadata(onnx_path)
    assert metadata["class_names"] == CLASSES
    assert metadata["size"] == 256 and metadata["mean"] == [0.5] and metadata["std"] == [0.25]
    assert metadata["pylon_model"]["name"] == "pylon"


def test_export_refuses_weights_without_architecture(tmp_path):
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(1)}, str(bare))
    result = CliRunner().invoke(app, ["export", str(bare), str(tmp_path / "x.onnx")])
    assert result.exit_code == 1 and "pylon_model" in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_export_to_an_unwritable_path_is_a_clear_message(exported, tmp_path):
    weights = exported[1].parent / "pylon.safetensors"
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(app, ["export", str(weights), str(blocker / "x.onnx")])
    assert result.exit_code == 1, result.output
    assert "cannot write" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("opset", ["1", "17", "24", "99"])
def test_an_opset_the_exporter_cannot_write_exits_2_before_any_work(tmp_path, opset):
    weights = tmp_path / "w.safetensors"
    model = create_model("pylon", encoder="resnet18", num_classes=len(CLASSES))
    data = {"class_names": CLASSES, "size": 256, "in_channels": 1, "mean": [0.5], "std": [0.25]}
    save_weights(model, weights, metadata={"pylon_data": data})
    out = tmp_path / "x.onnx"
    result = CliRunner().invoke(app, ["export", str(weights), str(out), "--opset", opset])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: --opset {opset}: ") and "18 to 23" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == [weights]


def test_export_refuses_weights_with_repeated_class_names(tmp_path):
    weights = tmp_path / "w.safetensors"
    model = create_model("pylon", encoder="resnet18", num_classes=3)
    data = {
        "class_names": ["a", "b", "b"],
        "size": 256,
        "in_channels": 1,
        "mean": [0.5],
        "std": [0.25],
    }
    save_weights(model, weights, metadata={"pylon_data": data})
    result = CliRunner().invoke(app, ["export", str(weights), str(tmp_path / "x.onnx")])
    assert result.exit_code == 1 and "'b' repeated" in result.output, result.output
    assert not (tmp_path / "x.onnx").exists()
