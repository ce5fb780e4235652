"""The model card (``README.md``) of a model folder, built with huggingface_hub's ``ModelCard``.

The YAML header carries the machine-readable ``model-index`` (one ``EvalResult`` per metric of
the run's ``eval_auc.csv`` / ``eval_loc.csv``, and per headline figure of a ``pylon benchmark``
with its 95 % interval in ``metric_args``); the body says what the model is, how to load it, the
data and split, the training recipe, the evaluation and benchmark tables, intended use and
limitations, and the PYLON paper's citation. Nothing here reads files or touches the network
(``ModelCard.validate`` is never called).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

DATASET_NAMES = {
    "nih14": "NIH ChestX-ray14",
    "vindr": "VinDr-CXR",
    "voc": "Pascal VOC 2012",
    "synthetic": "pylon synthetic (generated shapes)",
    "csv": "a CSV-listed image dataset",
}
MODEL_NAMES = {
    "pylon": "PYLON (pyramid localization network)",
    "cam": "CAM baseline (global max pooling)",
    "li2018": "Li et al. 2018 (MIL pooling)",
    "fpn": "FPN",
    "unet": "U-Net",
    "deeplabv3plus": "DeepLabV3+",
    "pan": "PAN",
}
CITATION = """@article{preechakul2022pylon,
  title   = {Improved image classification explainability with high-accuracy heatmaps},
  author  = {Preechakul, Konpat and Sriswasdi, Sira and Kijsirikul, Boonserm and
             Chuangsuwanich, Ekapol},
  journal = {iScience},
  volume  = {25},
  number  = {3},
  pages   = {103933},
  year    = {2022},
  doi     = {10.1016/j.isci.2022.103933}
}"""
LIMITATIONS = """\
- **Research use only. This is not a medical device**: it is not cleared or approved for
  diagnosis, triage or any clinical decision, and its outputs must not replace a clinician's
  reading.
- It was trained on one dataset (above); images from other scanners, hospitals, populations,
  views (e.g. lateral) or preprocessing differ from it and may be scored worse, silently.
- Labels of public chest X-ray datasets are mined from reports and are noisy; heatmaps are
  trained from image-level labels only (weak supervision): a peak shows where the model's
  evidence is, not a verified lesion boundary.
- Probabilities are not calibrated for any population; choose thresholds on your own
  validation data."""
# the run's config keys the recipe table shows (the whole config follows it)
RECIPE_KEYS = (
    "model.name",
    "model.encoder",
    "model.encoder_weights",
    "model.options",
    "model.init_from",
    "model.freeze",
    "data.name",
    "data.size",
    "data.batch_size",
    "data.augment",
    "data.options",
    "optim.lr",
    "optim.weight_decay",
    "optim.scheduler",
    "optim.patience",
    "optim.factor",
    "optim.lr_term",
    "optim.equivariance",
    "max_epochs",
    "precision",
    "seed",
    "phases",
)
COUNT_PREFIXES = ("n_",)  # counts (images, pairs): in the tables, not in the model-index


@dataclass
class CardFacts:
    """What a model card is made of.

    Attributes:
        title: the card's heading.
        model: the model's config (``pylon_config``: name, encoder, in_channels, num_classes,
            options).
        preprocessing: the preprocessing record (``Preprocessing.to_dict()`` without ``model``).
        origin: one or more sentences on where the weights come from (run, released file).
        config: the training config (``TrainConfig.to_dict()``), or ``None``.
        train_summary: the run's ``train_summary.json``, or ``None``.
        eval_auc: the run's ``eval_auc.csv`` (metric -> value), or ``None``.
        eval_loc: the run's ``eval_loc.csv``, or ``None``.
        benchmark: ``benchmark.csv`` rows of this run (dicts), or ``None``.
        benchmark_split: the split the benchmark scored.
        source: how users load it (a ``hf-hub:ORG/NAME`` or a folder path).
        notes: other lines for the evaluation section (e.g. why a table is missing).
    """

    title: str
    model: Mapping[str, Any]
    preprocessing: Mapping[str, Any]
    origin: str
    config: Mapping[str, Any] | None = None
    train_summary: Mapping[str, Any] | None = None
    eval_auc: Mapping[str, float] | None = None
    eval_loc: Mapping[str, float] | None = None
    benchmark: Sequence[Mapping[str, Any]] | None = None
    benchmark_split: str | None = None
    source: str = "path/to/model-folder"
    notes: list[str] = field(default_factory=list)


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _dataset(facts: CardFacts) -> tuple[str, str]:
    """(pylon dataset name, readable name)."""
    name = str(_get(facts.config or {}, "data.name") or "unknown")
    return name, DATASET_NAMES.get(name, name)


def _split(facts: CardFacts, key: str, default: str) -> str:
    return str(_get(facts.config or {}, f"data.{key}") or default)


def eval_results(facts: CardFacts) -> list[EvalResult]:
    """The model-index entries: every metric of the evaluation CSVs (counts left out) and the
    benchmark's headline figures (all sizes; pooled and macro) with their interval.

    Args:
        facts: the card's facts.

    Returns:
        ``EvalResult`` objects (``metric_type`` the CSV's metric name, ``metric_value`` its
        value; benchmark entries ``<method>/<metric>/<class>`` with ``ci_low``, ``ci_high``,
        ``n`` in ``metric_args``).
    """
    dataset, readable = _dataset(facts)
    results: list[EvalResult] = []
    tables = (
        (
            facts.eval_auc,
            "image-classification",
            "Multi-label classification (AUROC)",
            "test_split",
        ),
        (facts.eval_loc, "object-detection", "Weakly supervised localization", "loc_split"),
    )
    for table, task, task_name, split_key in tables:
        for metric, value in (table or {}).items():
            if metric.startswith(COUNT_PREFIXES) or not math.isfinite(value):
                continue
            results.append(
                EvalResult(
                    task_type=task,
                    task_name=task_name,
                    dataset_type=dataset,
                    dataset_name=readable,
                    dataset_split=_split(facts, split_key, "test"),
                    metric_type=metric,
                    metric_name=metric,
                    metric_value=float(value),
                )
            )
    for row in _headline(facts.benchmark):
        results.append(
            EvalResult(
                task_type="object-detection",
                task_name="Localization benchmark (pylon benchmark)",
                dataset_type=dataset,
                dataset_name=readable,
                dataset_split=facts.benchmark_split or _split(facts, "loc_split", "test"),
                metric_type=f"{row['method']}/{row['metric']}/{row['class']}",
                metric_name=f"{row['metric']} ({row['method']} maps, {row['class']})",
                metric_value=float(row["value"]),
                metric_args={
                    "ci_low": float(row["ci_low"]),
                    "ci_high": float(row["ci_high"]),
                    "confidence": 0.95,
                    "n": int(row["n"]),
                },
            )
        )
    return results


def _headline(rows: Sequence[Mapping[str, Any]] | None) -> list[Mapping[str, Any]]:
    return [
        r
        for r in rows or []
        if r["size_bucket"] == "all"
        and r["class"] in ("all", "macro")
        and math.isfinite(float(r["value"]))
    ]


def build_model_card(facts: CardFacts) -> ModelCard:
    """The model card: YAML metadata (``model-index`` included) and the Markdown body.

    Args:
        facts: what the card says.

    Returns:
        A ``huggingface_hub.ModelCard`` (``str(card)`` is the ``README.md`` text).
    """
    dataset, readable = _dataset(facts)
    data = ModelCardData(
        library_name="pylon",
        license="other",
        license_name="research-use-only",
        tags=["pylon", "weakly-supervised-localization", "class-activation-map", dataset],
        pipeline_tag="image-classification",
        model_name=facts.title,
        eval_results=eval_results(facts) or None,
        metrics=["roc_auc"] if facts.eval_auc else None,
    )
    body = "\n\n".join(
        [
            f"# {facts.title}",
            _summary(facts, readable),
            _usage(facts),
            _model_section(facts),
            _data_section(facts, readable),
            _recipe_section(facts),
            _evaluation_section(facts, readable),
            "## Intended use and limitations\n\nIntended for research on weakly supervised "
            "localization and explainability (reproducing and extending the PYLON paper).\n\n"
            + LIMITATIONS,
            "## Citation\n\nIf you use this model, cite the PYLON paper (Preechakul et al., "
            f"iScience 25(3) 103933, 2022):\n\n```bibtex\n{CITATION}\n```",
        ]
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


def _summary(facts: CardFacts, readable: str) -> str:
    model = facts.model
    name = MODEL_NAMES.get(str(model.get("name")), str(model.get("name")))
    classes = ", ".join(facts.preprocessing.get("class_names", []))
    return (
        f"{name} with a {model.get('encoder')} encoder, trained on {readable}: "
        f"{model.get('num_classes')} findings ({classes}) from one "
        f"{facts.preprocessing.get('size')} px image, each with a class map (heatmap) that "
        f"localizes it.\n\n{facts.origin}"
    )


def _usage(facts: CardFacts) -> str:
    if facts.source.startswith("hf-hub:"):
        fetch = (
            "from pylon.models.folder import resolve_source\n\n"
            f'folder = resolve_source("{facts.source}")  # downloaded once, then cached\n'
        )
        cli = f"hf download {facts.source.removeprefix('hf-hub:')} --local-dir model-folder\n"
        folder, shown = "folder", "model-folder"
    else:
        fetch, cli, folder, shown = "", "", f'"{facts.source}"', facts.source
    return f"""## How to use

With pylon installed (`pip install pylon-localization`):

```python
import pylon
{fetch}
model = pylon.from_pretrained({folder})  # strict: every tensor must match
record = model.pylon_preprocessing  # input size, normalisation, class names
predictor = pylon.Predictor({folder})  # images in, probabilities and heatmaps out
```

```bash
{cli}pylon predict {shown} image.png --out predictions/
```"""


def _model_section(facts: CardFacts) -> str:
    pre = facts.preprocessing
    rows = [
        ("architecture", facts.model.get("name")),
        ("encoder", facts.model.get("encoder")),
        ("options", facts.model.get("options") or {}),
        ("input channels", pre.get("in_channels")),
        ("input size", f"{pre.get('size')} x {pre.get('size')} px"),
        ("resize", f"{pre.get('interpolation')} interpolation ({pre.get('transform')} transform)"),
        ("normalisation", f"mean {pre.get('mean')}, std {pre.get('std')} (pixels on [0, 1])"),
        ("outputs", "one logit per class (max-pooled class map) and the class map (1/4 size)"),
    ]
    return (
        "## Model\n\n"
        + _table(["", ""], rows)
        + (
            "\n\n`config.json` holds the same record; `model.safetensors` carries it in its "
            "metadata, so pylon rebuilds the preprocessing from the weights alone."
        )
    )


def _data_section(facts: CardFacts, readable: str) -> str:
    if facts.config is None:
        return f"## Data\n\n{readable}."
    rows = [
        ("dataset", f"{readable} (`{_get(facts.config, 'data.name')}`)"),
        ("training split", _split(facts, "train_split", "train")),
        ("validation split (model selection)", _split(facts, "val_split", "val")),
        ("classification test split", _split(facts, "test_split", "test")),
        ("localization test split (boxes)", _split(facts, "loc_split", "test")),
        ("dataset options", _get(facts.config, "data.options") or {}),
    ]
    return "## Data\n\n" + _table(["", ""], rows)


def _recipe_section(facts: CardFacts) -> str:
    if facts.config is None:
        return "## Training recipe\n\nNot recorded."
    rows = [(f"`{key}`", _get(facts.config, key)) for key in RECIPE_KEYS]
    text = "## Training recipe\n\n" + _table(["setting", "value"], rows)
    summary = facts.train_summary or {}
    if summary:
        text += (
            f"\n\nBest validation loss {summary.get('best_val_loss')} at epoch "
            f"{summary.get('best_epoch')} of {summary.get('epochs')} "
            f"(stopped: {summary.get('stop_reason')}); the weights are that epoch's."
        )
    config = yaml.safe_dump(dict(facts.config), sort_keys=False).strip()
    return (
        text + "\n\n<details><summary>The whole training config (<code>config.yaml</code>; "
        f"<code>pylon train --config</code> repeats it)</summary>\n\n```yaml\n{config}\n```\n\n"
        "</details>"
    )


def _evaluation_section(facts: CardFacts, readable: str) -> str:
    parts = ["## Evaluation"]
    for table, what, split_key in (
        (facts.eval_auc, "Classification (AUROC)", "test_split"),
        (facts.eval_loc, "Localization (point and box accuracy)", "loc_split"),
    ):
        if table:
            rows = [
                (f"`{k}`", f"{v:.0f}" if k.startswith(COUNT_PREFIXES) else _number(v))
                for k, v in table.items()
            ]
            parts.append(
                f"### {what}, {readable}, split `{_split(facts, split_key, 'test')}`\n\n"
                + _table(["metric", "value"], rows)
            )
    if facts.benchmark:
        rows = [
            (
                r["method"],
                f"`{r['metric']}`",
                r["class"],
                _number(r["value"]),
                f"[{_number(r['ci_low'])}, {_number(r['ci_high'])}]",
                int(r["n"]),
            )
            for r in _headline(facts.benchmark)
        ]
        split = facts.benchmark_split or _split(facts, "loc_split", "test")
        parts.append(
            f"### Localization benchmark (`pylon benchmark`), split `{split}`\n\nAll lesion "
            "sizes; `all`: pairs pooled, `macro`: mean over classes; 95 % percentile bootstrap "
            "intervals over images.\n\n"
            + _table(["method", "metric", "classes", "value", "95 % CI", "n"], rows)
        )
    parts.extend(facts.notes)
    if len(parts) == 1:
        parts.append("Not evaluated.")
    return "\n\n".join(parts)


def _number(value: Any) -> str:
    value = float(value)
    return "n/a" if not math.isfinite(value) else f"{value:.4f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
