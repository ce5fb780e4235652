"""`pylon summarize`: mean/std over seeds per experiment, published values beside ours."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pylon.cli.main import app
from pylon.evaluation.evaluate import write_metrics
from pylon.evaluation.paper import paper_table


def _fake_experiment(root, name, aucs, points):
    for seed, (auc, point) in enumerate(zip(aucs, points, strict=True)):
        run = root / name / str(seed)
        run.mkdir(parents=True)
        write_metrics({"auroc_macro": auc, "auroc_weighted": auc + 0.01}, run / "eval_auc.csv")
        write_metrics({"point_acc_weighted": point}, run / "eval_loc.csv")
    return root / name


def test_mean_std_over_seeds_and_published_values(tmp_path):
    pylon_dir = _fake_experiment(tmp_path, "nih256-pylon", [0.81, 0.82, 0.83], [0.6, 0.62, 0.61])
    fpn_dir = _fake_experiment(tmp_path, "nih256-fpn", [0.80, 0.79], [0.5, 0.55])
    frame = paper_table([pylon_dir, fpn_dir]).set_index("experiment")
    row = frame.loc["nih256-pylon"]
    assert row["n"] == 3
    assert row["auroc_macro_mean"] == pytest.approx(np.mean([0.81, 0.82, 0.83]))
    assert row["auroc_macro_std"] == pytest.approx(np.std([0.81, 0.82, 0.83], ddof=1))
    assert row["auroc_weighted_mean"] == pytest.approx(np.mean([0.82, 0.83, 0.84]))
    assert row["point_acc_weighted_std"] == pytest.approx(np.std([0.6, 0.62, 0.61], ddof=1))
    assert row["point_acc_weighted_published"] == 0.62 and row["auroc_macro_published"] == 0.818
    assert np.isnan(frame.loc["nih256-fpn", "point_acc_weighted_published"])

    out = tmp_path / "table.csv"
    result = CliRunner().invoke(app, ["summarize", str(pylon_dir), str(fpn_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "nih256-pylon" in result.output and "(0.620)" in result.output
    assert len(pd.read_csv(out)) == 2


def test_unevaluated_experiment_is_a_clear_error(tmp_path):
    (tmp_path / "nih256-cam" / "0").mkdir(parents=True)
    result = CliRunner().invoke(app, ["summarize", str(tmp_path / "nih256-cam")])
    assert result.exit_code == 1 and "no evaluated seed folder" in result.output


def test_lazy_exports_are_never_shadowed_by_submodules():
    """`from pylon.evaluation import paper_table` gives the function even after every submodule
    was imported (an import sets the package attribute of the submodule's name)."""
    import importlib
    import pkgutil
    import types

    import pylon.evaluation as evaluation

    for module in pkgutil.iter_modules(evaluation.__path__):
        importlib.import_module(f"pylon.evaluation.{module.name}")
    for name in evaluation.__all__:
        assert not isinstance(getattr(evaluation, name), types.ModuleType), name
    from pylon.evaluation import paper_table as imported

    assert callable(imported) and imported is paper_table
