"""Every command turns a user error into one line ``error: ...`` and an exit code: 1 for failed
work, 2 for a wrong command line (as click does); never a traceback, ANSI codes or numpy reprs."""

import io
import re

import pytest
import torch
import typer
from rich.console import Console
from typer.testing import CliRunner
from viewer_runs import write_cam_weights

from pylon.cli.app import exit_on_user_error
from pylon.cli.main import app

ANSI = re.compile(r"\x1b\[")
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A valid weights file, a .pt and a .ckpt file, a plain file, an image folder, and an
    experiment whose evaluation CSV holds a value that is not a number."""
    folder = tmp_path_factory.mktemp("cli")
    write_cam_weights(folder / "cam.safetensors")
    (folder / "model.pt").write_bytes(b"not really a pickle")
    (folder / "last.ckpt").write_bytes(b"not really a checkpoint")
    (folder / "notes.txt").write_text("a file, not a folder")
    (folder / "images").mkdir()
    (folder / "exp" / "0").mkdir(parents=True)
    (folder / "exp" / "0" / "eval_auc.csv").write_text(
        "metric,value\nauroc_macro,0.8\nauroc_x,abc\n"
    )
    return folder


def one_line_error(result, code: int) -> str:
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught error
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and not ANSI.search(result.output)
    assert "np.int" not in result.output and "np.float" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


CASES = {
    "predict: weights missing": (
        "predict {d}/missing.safetensors {d}/images --out {d}/o",
        1,
        "missing.safetensors",
    ),
    "predict: a .pt file": ("predict {d}/model.pt {d}/images --out {d}/o", 1, ".pt file"),
    "predict: a .ckpt file": ("predict {d}/last.ckpt {d}/images --out {d}/o", 1, ".safetensors"),
    "predict: --out is a file": (
        "predict {d}/cam.safetensors {d}/images --out {d}/notes.txt",
        2,
        "is a file",
    ),
    "predict: --out under a file": (
        "predict {d}/cam.safetensors {d}/images --out {d}/notes.txt/o",
        2,
        "notes.txt is a file",
    ),
    "predict: no images": ("predict {d}/cam.safetensors {d}/images --out {d}/o", 1, "no PNG"),
    "predict: unknown device": (
        "predict {d}/cam.safetensors {d}/images --out {d}/o --device tpu9",
        2,  # a wrong option value
        "tpu9",
    ),
    "export: a .ckpt file": ("export {d}/last.ckpt {d}/x.onnx", 1, ".ckpt file"),
    "train: config missing": ("train --config {d}/missing.yaml", 1, "missing.yaml"),
    "evaluate: not a run": ("evaluate {d}/images", 1, "not a run folder"),
    "heatmaps: not a run": ("heatmaps {d}/images", 1, "not a run folder"),
    "evaluate-cam: not a run": ("evaluate-cam {d}/images", 1, "not a run folder"),
    "summarize: no folder": ("summarize {d}/nothing", 1, "nothing"),
    "summarize: a value not a number": (
        "summarize {d}/exp",
        1,
        "eval_auc.csv, line 3: value 'abc'",
    ),
    "sweep: unknown preset": ("sweep no-such-preset --seeds 0 --runs-dir {d}/runs", 2, "preset"),
    "train: unknown preset": ("train no-such-preset --runs-dir {d}/runs", 2, "no-such-preset"),
    "train: a bad --set value": (
        "train synthetic-cam --set optim.lr=0 --runs-dir {d}/runs",
        2,
        "optim.lr=0.0; expected a finite number > 0",
    ),
    "sweep: a bad --set value": (
        "sweep synthetic-cam --set optim.lr=-1 --runs-dir {d}/runs",
        2,
        "optim.lr=-1.0",
    ),
    "demo: too few images": ("demo --images -5 --out {d}/demo", 1, "--images"),
    # the owner's choice: a source folder that does not exist is a wrong command line
    "convert-dicom: no source": ("convert-dicom {d}/nothing {d}/png", 2, "not found"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_errors_are_one_line_with_their_exit_code(files, case):
    command, code, expected = CASES[case]
    result = CliRunner().invoke(app, command.format(d=files).split())
    assert expected in one_line_error(result, code)
    assert not (files / "o").exists()  # refused before any output was made
    assert not (files / "runs").exists()


@NO_GPU
def test_cuda_without_a_gpu_is_a_message(files, tmp_path):
    args = ["predict", str(files / "cam.safetensors"), str(files / "images")]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o"), "--device", "cuda"])
    assert "no CUDA GPU" in one_line_error(result, 1)
    runs = ["--runs-dir", str(tmp_path / "runs")]
    result = CliRunner().invoke(app, ["train", "synthetic-cam", "--accelerator", "gpu", *runs])
    assert "no CUDA GPU" in one_line_error(result, 1)


@pytest.mark.parametrize(
    "args",
    [
        ["predict", "w.safetensors", "images", "--out", "o", "--batch-size", "0"],
        ["predict", "w.safetensors", "images", "--out", "o", "--threshold", "2"],
        ["predict", "w.safetensors", "images"],  # --out missing
        ["export", "w.safetensors", "x.onnx", "--no-such-option"],
        ["train", "--seed", "many"],
    ],
)
def test_usage_errors_exit_2_as_click_does(args):
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, SystemExit) and result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not ANSI.search(result.output)


def test_the_helper_cleans_messages_and_knows_library_errors():
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    def run(error):
        stream = io.StringIO()
        with pytest.raises(typer.Exit) as exit_info:
            with exit_on_user_error(Console(file=stream, width=60)):
                raise error
        return exit_info.value.exit_code, stream.getvalue()

    code, text = run(ValueError("\x1b[31mcolumn\x1b[0m np.int64(3) of [np.float32(0.5)]\nnext"))
    assert code == 1 and text == "error: column 3 of [0.5] next\n"  # one line, however wide
    code, text = run(PermissionError(13, "Permission denied", "/x/out.onnx"))
    assert code == 1 and text == "error: /x/out.onnx: Permission denied\n"
    code, text = run(MisconfigurationException("No supported gpu backend found!"))
    assert code == 1 and text == "error: No supported gpu backend found!\n"
    with pytest.raises(KeyError):  # a bug keeps its traceback
        with exit_on_user_error(Console(file=io.StringIO())):
            raise KeyError("bug")
