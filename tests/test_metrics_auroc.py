"""AUROC against scikit-learn, and the behaviour for classes with a single label value."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pylon.metrics import AUROCAccumulator, auroc


def random_scores(seed: int, n: int = 200, c: int = 5):
    rng = np.random.default_rng(seed)
    # unequal positive rates per class, so that the weighted mean differs from the macro mean
    labels = (rng.random((n, c)) < np.linspace(0.05, 0.6, c)).astype(np.float32)
    logits = rng.normal(size=(n, c)) + 1.5 * labels  # informative, with ties impossible
    return logits.astype(np.float32), labels


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_sklearn(seed):
    logits, labels = random_scores(seed)
    names = ["a", "b", "c", "d", "e"]
    got = auroc(torch.from_numpy(logits), torch.from_numpy(labels), names)
    assert got["auroc_micro"] == pytest.approx(roc_auc_score(labels, logits, average="micro"))
    assert got["auroc_macro"] == pytest.approx(roc_auc_score(labels, logits, average="macro"))
    assert got["auroc_weighted"] == pytest.approx(roc_auc_score(labels, logits, average="weighted"))
    per_class = roc_auc_score(labels, logits, average=None)
    for name, value in zip(names, per_class, strict=True):
        assert got[f"auroc_{name}"] == pytest.approx(value)


def test_numpy_and_probabilities_give_the_same_result():
    logits, labels = random_scores(2)
    from_logits = auroc(logits, labels)
    from_probs = auroc(torch.from_numpy(logits).double().sigmoid().numpy(), labels)
    assert from_logits == pytest.approx(from_probs)
    keys = {"auroc_micro", "auroc_macro", "auroc_weighted"}
    assert set(from_logits) == keys | {f"auroc_{c}" for c in range(5)}


def test_single_valued_class_is_omitted_with_warning():
    logits, labels = random_scores(3)
    labels[:, 1] = 0.0
    with pytest.warns(UserWarning, match="single label value"):
        got = auroc(logits, labels)
    assert "auroc_1" not in got
    kept = [0, 2, 3, 4]
    assert got["auroc_macro"] == pytest.approx(
        roc_auc_score(labels[:, kept], logits[:, kept], average="macro")
    )
    assert got["auroc_weighted"] == pytest.approx(
        roc_auc_score(labels[:, kept], logits[:, kept], average="weighted")
    )
    # micro pools every entry, the constant class included, like scikit-learn's "micro"
    assert got["auroc_micro"] == pytest.approx(roc_auc_score(labels, logits, average="micro"))


def test_weighted_by_hand():
    # class 0: 1 positive, AUROC 1; class 1: 3 positives, AUROC 1/3 (2 of 6 pairs ordered right)
    labels = np.array([[1, 1], [0, 1], [0, 1], [0, 0], [0, 0]], dtype=np.float32)
    logits = np.array([[5, 0], [1, 1], [2, 5], [3, 4], [4, 2]], dtype=np.float32)
    got = auroc(logits, labels)
    assert got["auroc_0"] == 1.0 and got["auroc_1"] == pytest.approx(1 / 3)
    assert got["auroc_macro"] == pytest.approx((1 + 1 / 3) / 2)
    assert got["auroc_weighted"] == pytest.approx((1 * 1 + 3 * (1 / 3)) / 4)


def test_accumulator_equals_one_shot():
    logits, labels = random_scores(4)
    acc = AUROCAccumulator(list("abcde"))
    for start in range(0, 200, 64):
        acc.update(torch.from_numpy(logits[start : start + 64]), labels[start : start + 64])
    assert acc.compute() == auroc(logits, labels, list("abcde"))


def test_bad_input_raises():
    logits, labels = random_scores(5)
    with pytest.raises(ValueError, match="differ in shape"):
        auroc(logits[:, :3], labels)
    with pytest.raises(ValueError, match="0 or 1"):
        auroc(logits, labels * 2)
    with pytest.raises(ValueError, match="NaN"):
        auroc(np.full_like(logits, np.nan), labels)
    with pytest.raises(ValueError, match="class_names"):
        auroc(logits, labels, ["a"])
