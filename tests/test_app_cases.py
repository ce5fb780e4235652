"""The viewer's data layer: what a path is (sources), the case list read from eval_pairs.csv
(filters and sorts against pandas queries and sorts written here, boxes and paths against the
box file), metric tables, and side by side against other runs and benchmark records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner
from viewer_runs import copied_run, csv_run, write_csv_data

from pylon.app.cases import Case, CaseTable, benchmark_pairs, read_pairs, side_by_side
from pylon.app.sources import metric_plots, metric_tables, open_sources, pairs_summary


def hand_pairs(n: int = 60, seed: int = 1) -> pd.DataFrame:
    """eval_pairs.csv rows built here: 3 classes, probabilities with ties, hits and buckets."""
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c"]
    return pd.DataFrame(
        {
            "image_id": [f"img{k // 2:03d}" for k in range(n)],
            "class": [classes[k % 3] for k in range(n)],
            "probability": np.round(rng.uniform(size=n), 1),  # rounded: many ties
            "peak_row": rng.integers(0, 64, n),
            "peak_col": rng.integers(0, 64, n),
            "peak_row_original": rng.integers(0, 96, n),
            "peak_col_original": rng.integers(0, 128, n),
            "point_hit": rng.uniform(size=n) < 0.4,
            "iobb": rng.uniform(size=n),
            "iou": rng.uniform(size=n),
            "box_area": rng.integers(1, 4000, n),
            "box_share": rng.uniform(0, 0.3, n),
            "size_bucket": rng.choice(["small", "medium", "large"], n),
        }
    )


@pytest.fixture
def table(tmp_path):
    frame = hand_pairs()
    path = tmp_path / "eval_pairs.csv"
    frame.to_csv(path, index=False)
    return CaseTable(read_pairs(path), run="exp/0", class_order=["a", "b", "c"]), frame


def ids(table: CaseTable) -> list[tuple[str, str]]:
    shown = table.as_dataframe()
    return list(zip(shown["image_id"], shown["class"], strict=True))


def test_filters_equal_a_pandas_query(table):
    cases, frame = table
    assert len(cases) == len(frame)
    got = cases.filter(classes=["a", "c"], hit="miss", prob_range=(0.2, 0.7),
                       size_buckets=["small", "large"])  # fmt: skip
    want = frame.query(
        "`class` in ['a', 'c'] and not point_hit and 0.2 <= probability <= 0.7 "
        "and size_bucket in ['small', 'large']"
    )
    assert ids(got) == list(zip(want["image_id"], want["class"], strict=True))
    assert len(got) > 0
    hits = cases.filter(hit="hit")
    assert len(hits) == int(frame["point_hit"].sum())
    assert set(hits.as_dataframe()["result"]) == {"hit"}
    # the ends of the range are included
    edge = cases.filter(prob_range=(0.5, 0.5))
    assert len(edge) == int((frame["probability"] == 0.5).sum()) > 0
    assert len(cases.filter()) == len(frame)
    assert cases.filter(classes=["b"]).classes == ["b"]


def test_sorts_equal_python_sorts_and_keep_ties_in_evaluation_order(table):
    cases, frame = table
    rows = list(frame.itertuples(index=False))
    keyed = list(enumerate(rows))
    confidence = sorted(keyed, key=lambda kr: (-kr[1].probability, kr[0]))
    assert ids(cases.sort("confidence")) == [(r.image_id, r[1]) for _, r in confidence]
    wrong = sorted(keyed, key=lambda kr: (bool(kr[1].point_hit), -kr[1].probability, kr[0]))
    assert ids(cases.sort("confident_wrong")) == [(r.image_id, r[1]) for _, r in wrong]
    order = {"a": 0, "b": 1, "c": 2}
    by_image = sorted(keyed, key=lambda kr: (kr[1].image_id, order[kr[1][1]], kr[0]))
    assert ids(cases.sort("image")) == [(r.image_id, r[1]) for _, r in by_image]
    # a filter keeps the order it was given
    sorted_then_filtered = cases.sort("confidence").filter(hit="miss")
    misses = [(r.image_id, r[1]) for _, r in confidence if not r.point_hit]
    assert ids(sorted_then_filtered) == misses


def test_pages_and_cases(table):
    cases, frame = table
    ordered = cases.sort("confidence")
    assert ordered.page_count(20) == 3 and ordered.page_count(7) == 9
    pages = [ordered.page(k, 20) for k in (1, 2, 3)]
    flat = [(c.image_id, c.class_name) for page in pages for c in page]
    assert flat == ids(ordered)
    assert ordered.page(4, 20) == []
    first = pages[0][0]
    row = frame[(frame["image_id"] == first.image_id) & (frame["class"] == first.class_name)]
    row = row.iloc[0]
    assert isinstance(first, Case) and first.run == "exp/0"
    assert first.probability == pytest.approx(row["probability"])
    assert first.hit == bool(row["point_hit"]) and first.size_bucket == row["size_bucket"]
    assert first.peak == (row["peak_col_original"], row["peak_row_original"])
    assert first.boxes == () and first.image_path is None  # no dataset given
    assert cases.case(first.image_id, first.class_name) == first
    assert cases.case("nope", "a") is None


def test_bad_choices_name_what_is_expected(table, tmp_path):
    cases, _ = table
    with pytest.raises(ValueError, match="unknown class.*'z'.*a, b, c"):
        cases.filter(classes=["z"])
    with pytest.raises(ValueError, match="hit='yes'"):
        cases.filter(hit="yes")
    with pytest.raises(ValueError, match="prob_range"):
        cases.filter(prob_range=(0.8, 0.2))
    with pytest.raises(ValueError, match="size bucket.*'huge'.*small, medium, large"):
        cases.filter(size_buckets=["huge"])
    with pytest.raises(ValueError, match="sort by 'name'.*confidence, confident_wrong, image"):
        cases.sort("name")
    with pytest.raises(ValueError, match="numbered from 1"):
        cases.page(0)
    with pytest.raises(FileNotFoundError, match="pylon evaluate"):
        read_pairs(tmp_path / "missing" / "eval_pairs.csv")
    bad = tmp_path / "bad.csv"
    hand_pairs().drop(columns=["iobb"]).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"bad\.csv: missing column\(s\) iobb"):
        read_pairs(bad)


def test_sources_say_what_a_path_is(tmp_path):
    run = csv_run(tmp_path / "runs", "exp", 0, evaluate=False)
    csv_run(tmp_path / "runs", "exp", 1, data=tmp_path / "runs" / "data", evaluate=False)
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "benchmark.csv").write_text("run,method\n")
    sources = open_sources([tmp_path / "runs" / "exp", run.root, tmp_path / "bench"])
    assert [(s.kind, s.name) for s in sources] == [
        ("run", "exp/0"), ("run", "exp/1"), ("benchmark", "bench")
    ]  # fmt: skip
    assert sources[0].weights == run.best and sources[0].pairs is None  # not evaluated
    with pytest.raises(FileNotFoundError, match="pylon evaluate"):
        CaseTable.from_source(sources[0])
    with pytest.raises(ValueError, match="no-such: not found; expected a run folder"):
        open_sources([tmp_path / "no-such"])
    with pytest.raises(ValueError, match="is a file; expected"):
        open_sources([run.config])
    with pytest.raises(ValueError, match="data: not a folder pylon view opens"):
        open_sources([tmp_path / "runs" / "data"])
    with pytest.raises(ValueError, match="no path given"):
        open_sources([])


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Two evaluated runs on the same 4 images and a benchmark of both (own CAM and Grad-CAM)."""
    from pylon.evaluation.benchmark import benchmark
    from pylon.evaluation.benchmark_scoring import BenchmarkOptions

    root = tmp_path_factory.mktemp("viewer")
    data = write_csv_data(root / "data")
    alpha = csv_run(root / "runs", "alpha", data=data)
    beta = csv_run(root / "runs", "beta", data=data)
    options = BenchmarkOptions(faithfulness_images=0, cam_interval=0.01)
    benchmark([alpha.root, beta.root], ["own", "gradcam"], out_dir=root / "bench",
              threshold_split=None, resamples=20, options=options, progress=False)  # fmt: skip
    return root, alpha, beta


def test_cases_of_an_evaluated_run_carry_the_box_file_boxes(evaluated):
    root, alpha, _ = evaluated
    (source,) = open_sources([alpha.root])
    cases = CaseTable.from_source(source)
    pairs = pd.read_csv(alpha.root / "eval_pairs.csv")
    assert len(cases) == len(pairs) == 6  # 4 nodules, 2 masses
    assert cases.classes == ["Nodule", "Mass"] and cases.weights == alpha.best
    boxes = pd.read_csv(root / "data" / "boxes.csv")
    for case in cases.page(1, 20):
        name = case.image_id.split("/")[-1]
        want = boxes[(boxes["Image Index"] == name) & (boxes["Finding Label"] == case.class_name)]
        want = [tuple(float(v) for v in r[2:6]) for r in want.itertuples(index=False)]
        assert list(case.boxes) == want
        assert case.image_path == root / "data" / case.image_id
        row = pairs[(pairs["image_id"] == case.image_id) & (pairs["class"] == case.class_name)]
        assert case.peak == (row["peak_col_original"].item(), row["peak_row_original"].item())


def test_metric_tables_of_a_run_and_a_benchmark(evaluated):
    root, alpha, _ = evaluated
    run, bench = open_sources([alpha.root, root / "bench"])
    tables = metric_tables(run)
    loc = pd.read_csv(alpha.root / "eval_loc.csv")
    assert tables["localization"]["value"].tolist() == pytest.approx(loc["value"].tolist())
    assert {"AUROC", "seeds localization"} <= set(tables)
    pairs = pd.read_csv(alpha.root / "eval_pairs.csv")
    summary = tables["point accuracy by class and size"].set_index(["class", "size_bucket"])
    assert summary.loc[("all", "all"), "point_acc"] == pytest.approx(pairs["point_hit"].mean())
    for (cls, bucket), group in pairs.groupby(["class", "size_bucket"]):
        assert summary.loc[(cls, bucket), "n"] == len(group)
        assert summary.loc[(cls, bucket), "hits"] == group["point_hit"].sum()
    assert len(pairs_summary(pairs)) == len(summary)
    tables = metric_tables(bench)
    full = pd.read_csv(root / "bench" / "benchmark.csv")
    head = full[(full["class"] == "all") & (full["size_bucket"] == "all")]
    assert len(tables["headline"]) == len(head) and {"ci_low", "ci_high"} <= set(head.columns)
    assert set(tables["by size"]["size_bucket"]) == set(full["size_bucket"]) - {"all"}
    assert "comparisons" in tables
    assert set(metric_plots(bench)) == {"by_size.png"}  # no faithfulness scored
    assert metric_plots(run) == {}


def test_side_by_side_finds_the_pair_in_other_runs_and_benchmark_records(evaluated):
    root, alpha, beta = evaluated
    runs = [s for s in open_sources([alpha.root, beta.root]) if s.kind == "run"]
    (bench,) = open_sources([root / "bench"])
    tables = [CaseTable.from_source(s) for s in runs]
    case = tables[1].sort("confidence").page(1)[0]  # a beta case: its run comes first
    entries = side_by_side(case, tables, [bench])
    shown = [(e.run, e.method) for e in entries]
    assert shown == [
        ("beta/0", "own"), ("alpha/0", "own"), ("alpha/0", "gradcam"), ("beta/0", "gradcam")
    ]  # fmt: skip
    assert entries[0].case == case
    alpha_case = tables[0].case(case.image_id, case.class_name)
    assert entries[1].case == alpha_case and entries[1].case.probability != case.probability
    # the benchmark's own-CAM point hit agrees with evaluate's for the same pair
    records = benchmark_pairs(bench)
    for entry in entries:
        row = records[(records["run"] == entry.run) & (records["method"] == entry.method)
                      & (records["image_id"] == case.image_id)
                      & (records["class"] == case.class_name)]  # fmt: skip
        assert len(row) == 1
        assert entry.values["point"] == row["point"].item()
        if entry.method == "own":
            assert bool(entry.values["point"]) == entry.case.hit
        else:
            assert entry.case.peak is None and entry.case.hit == bool(entry.values["point"])
            assert entry.case.weights == (alpha if entry.run == "alpha/0" else beta).best
    # every pair of each run is in the records, once per method
    assert len(records) == 2 * 2 * 6
    assert not records["point"].isna().any()


def test_a_prediction_folder_is_a_source(evaluated, tmp_path):
    from pylon.cli.main import app

    root, alpha, _ = evaluated
    out = tmp_path / "pred"
    result = CliRunner().invoke(
        app, ["predict", str(alpha.best), str(root / "data" / "img"), "--out", str(out),
              "--no-progress", "--precision", "fp32"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (source,) = open_sources([out])
    assert source.kind == "predict" and source.weights == alpha.best.resolve()
    tables = metric_tables(source)
    assert len(tables["predictions"]) == 4 and "failures" not in tables


def test_cases_are_listed_when_the_runs_data_moved(evaluated, tmp_path):
    root, alpha, _ = evaluated
    run = copied_run(tmp_path, alpha, root / "data", "moved")
    data = tmp_path / "data"
    data.rename(tmp_path / "elsewhere")
    table = CaseTable.from_run(run.root)
    page = table.page(1)
    assert len(page) == 6 and all(c.boxes == () and c.image_path is None for c in page)
    assert str(data) in table.images_error
    (tmp_path / "elsewhere").rename(data)  # back: the next page finds the boxes again
    assert table.page(1)[0].boxes and table.images_error is None
