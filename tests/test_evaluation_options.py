"""Option values that cannot work are refused up front, in one line (exit 2), before any run is
opened: `heatmaps --limit`, `evaluate-cam --batch-size`."""

import pytest
from typer.testing import CliRunner

from pylon.cli.main import app


def one_line_error(result, code: int) -> str:
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_heatmaps_refuses_a_limit_below_one(tmp_path, limit):
    from pylon.evaluation.heatmaps import write_run_heatmaps

    result = CliRunner().invoke(app, ["heatmaps", str(tmp_path), "--limit", limit])
    assert "--limit" in one_line_error(result, 2) and limit in result.output
    with pytest.raises(ValueError, match="limit must be >= 1"):
        write_run_heatmaps(tmp_path, limit=int(limit))


@pytest.mark.parametrize("size", ["0", "-3"])
def test_evaluate_cam_refuses_a_batch_size_below_one(tmp_path, size):
    from pylon.evaluation.posthoc import evaluate_run_posthoc

    result = CliRunner().invoke(app, ["evaluate-cam", str(tmp_path), "--batch-size", size])
    assert "--batch-size" in one_line_error(result, 2) and size in result.output
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        evaluate_run_posthoc(tmp_path, ["gradcam"], batch_size=int(size))
