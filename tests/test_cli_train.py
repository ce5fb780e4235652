"""``pylon presets`` / ``pylon train`` / ``pylon sweep`` command-line behaviour (no training)."""

from __future__ import annotations

from typer.testing import CliRunner

from pylon.cli.main import app
from pylon.training.presets import list_presets

runner = CliRunner()


def test_presets_lists_every_preset_with_description():
    result = runner.invoke(app, ["presets"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in list_presets():
        assert name in result.output


def test_train_rejects_unknown_override_key(tmp_path):
    args = ["train", "synthetic-cam", "--set", "optim.lrr=1", "--runs-dir", str(tmp_path)]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2  # a wrong command line (ConfigError)
    assert "unknown config key(s) optim.lrr" in result.output
    assert not any(tmp_path.iterdir())  # nothing written before the config is valid


def test_train_rejects_unknown_preset(tmp_path):
    result = runner.invoke(app, ["train", "nosuch", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "unknown preset 'nosuch'" in result.output


def test_sweep_skips_finished_runs(tmp_path):
    # A finished, evaluated run (marker + eval file) is not launched again.
    for seed in (0, 1):
        run = tmp_path / "synthetic-cam" / str(seed)
        run.mkdir(parents=True)
        (run / "DONE").write_text("finished")
        (run / "eval_auc.csv").write_text("metric,value\nauroc_macro,0.5\n")
    result = runner.invoke(
        app, ["sweep", "synthetic-cam", "--seeds", "0-1", "--runs-dir", str(tmp_path)],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.count("skipped (finished)") == 2
    assert (tmp_path / "synthetic-cam" / "summary_auc.csv").is_file()


def test_train_without_preset_or_config_prints_help_and_exits_2(tmp_path):
    from typer.testing import CliRunner

    from pylon.cli.main import app

    result = CliRunner().invoke(app, ["train", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "Usage:" in result.output and "pylon presets" in result.output
    assert not (tmp_path / "runs").exists()
