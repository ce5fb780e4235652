"""Weights files: safetensors round trip, safe loading of pickles, transfer, freezing."""

import argparse
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file

from pylon import freeze_encoder, load_weights, save_weights
from pylon.models import create_model
from pylon.models.weights import load_model, read_weights_metadata


def _model(num_classes=14, seed=0, **options):
    torch.manual_seed(seed)
    return create_model("pylon", encoder="resnet18", num_classes=num_classes, **options)


def _randomise_buffers(model):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(7)


def test_safetensors_round_trip_is_bit_exact(tmp_path):
    source = _model(seed=0)
    _randomise_buffers(source)
    path = tmp_path / "out" / "model.safetensors"
    save_weights(source, path, metadata={"pylon_data": {"class_names": ["a", "b"], "size": 256}})
    assert sorted(os.listdir(path.parent)) == ["model.safetensors"]  # no temp file left behind

    target = _model(seed=1)
    report = load_weights(target, path)
    assert report.complete
    src, dst = source.state_dict(), target.state_dict()
    assert src.keys() == dst.keys()
    for k in src:
        assert src[k].dtype == dst[k].dtype and torch.equal(src[k], dst[k]), k

    meta = read_weights_metadata(path)
    assert meta["model"] == source.pylon_config
    assert meta["pylon_data"] == {"class_names": ["a", "b"], "size": 256}

    rebuilt = load_model(path)
    assert all(torch.equal(v, src[k]) for k, v in rebuilt.state_dict().items())


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_that_runs_code_is_refused(tmp_path, writer):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    obj = {"state_dict": {"w": torch.zeros(1)}, "extra": _Payload(marker)}
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(obj, fh)
    with pytest.raises(ValueError, match=r"evil\.pth: refused for safety"):
        load_weights(_model(), path)
    assert not marker.exists()

    # the fixture is real: an unsafe load does run the payload
    if writer == "torch.save":
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as fh:
            pickle.load(fh)  # noqa: S301
    assert marker.exists()


def test_released_style_pickle_with_wrappers_and_prefix(tmp_path):
    source = _model(seed=0)
    wrapped = {
        "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()},
        "epoch": 3,
    }
    path = tmp_path / "released.pkl"
    torch.save(wrapped, path)
    target = _model(seed=1)
    assert load_weights(target, path).complete
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k


def test_transfer_14_to_15_classes_loads_all_but_the_head(tmp_path):
    source = _model(num_classes=14, seed=0)
    path = tmp_path / "nih.safetensors"
    save_weights(source, path)
    target = _model(num_classes=15, seed=1)
    head_before = {k: v.clone() for k, v in target.state_dict().items() if "segmentation_head" in k}

    with pytest.raises(ValueError, match=r"nih\.safetensors.*2 shape-mismatched"):
        load_weights(target, path)  # strict by default

    report = load_weights(target, path, strict=False)
    head = {"net.segmentation_head.0.weight", "net.segmentation_head.0.bias"}
    assert set(report.mismatched) == head
    assert not report.missing and not report.unexpected
    src, dst = source.state_dict(), target.state_dict()
    for k in dst:
        if k in head:
            assert torch.equal(dst[k], head_before[k]), k
        else:
            assert torch.equal(dst[k], src[k]), k
    assert load_weights(_model(num_classes=15, seed=2), path, transfer=True).mismatched


def test_bad_files_give_clear_errors(tmp_path):
    model = _model()
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_weights(model, tmp_path / "missing.safetensors")
    (tmp_path / "weights.h5").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"weights\.h5: unsupported weights file type"):
        load_weights(model, tmp_path / "weights.h5")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"junk\.safetensors: not a readable safetensors"):
        load_weights(model, tmp_path / "junk.safetensors")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt: expected a state dict"):
        load_weights(model, tmp_path / "list.pt")


def _frozen_train_step(model):
    bn = model.encoder.bn1
    before = bn.running_mean.clone()
    model.train()  # as Lightning does at the start of every epoch
    out = model(torch.randn(2, 1, 256, 256))
    out.logits.sum().backward()
    assert model.net.segmentation_head[0].weight.grad is not None
    assert model.encoder.conv1.weight.grad is None
    return before, bn.running_mean


def test_freeze_encoder_by_default_only_stops_gradients_as_the_reference():
    model = _model(num_classes=2)
    n_frozen = freeze_encoder(model)
    assert n_frozen == sum(p.numel() for p in model.encoder.parameters())
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.net.decoder.parameters())
    before, after = _frozen_train_step(model)
    assert not torch.equal(after, before)  # BatchNorm statistics keep adapting


def test_freeze_encoder_with_bn_eval_also_keeps_batchnorm_statistics():
    model = _model(num_classes=2)
    freeze_encoder(model, bn_eval=True)
    freeze_encoder(model, bn_eval=True)  # twice: one hook, still frozen
    before, after = _frozen_train_step(model)
    assert torch.equal(after, before)
    assert not model.encoder.bn1.training
    assert model.net.decoder.pa.mid[0].bn.training  # the decoder trains as usual


def test_two_saves_of_the_same_model_are_byte_identical(tmp_path):
    """safetensors writes its metadata in a random order; save_weights must not."""
    metadata = {f"key{i}": {"b": i, "a": [i, "x"]} for i in range(12)}
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    save_weights(_model(seed=3), first, metadata=metadata)
    save_weights(_model(seed=3), second, metadata=dict(reversed(metadata.items())))
    assert first.read_bytes() == second.read_bytes()
    assert read_weights_metadata(first)["key5"] == {"b": 5, "a": [5, "x"]}
    loaded = load_file(first)
    assert all(torch.equal(loaded[k], v) for k, v in _model(seed=3).state_dict().items())
    header_size = int.from_bytes(first.read_bytes()[:8], "little")
    assert header_size % 8 == 0


def test_lightning_checkpoint_with_pickled_hyper_parameters_is_refused_for_safety(tmp_path):
    path = tmp_path / "last.ckpt"
    state = {f"model.{k}": v for k, v in _model().state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ValueError) as err:
        load_weights(_model(), path)
    message = str(err.value)
    assert "last.ckpt: refused for safety: it holds a pickled Python object" in message
    assert "argparse.Namespace" in message and "best.safetensors" in message
    assert "execute" not in message and "\x1b" not in message
    # without the pickled object the same checkpoint loads (Lightning's "model." prefix removed)
    torch.save({"state_dict": state, "epoch": 2}, path)
    assert load_weights(_model(seed=4), path).complete


@pytest.mark.parametrize("suffix", [".pt", ".ckpt"])
def test_pickle_where_safetensors_is_expected_says_what_to_do(tmp_path, suffix):
    path = tmp_path / f"weights{suffix}"
    torch.save(_model().state_dict(), path)
    for read in (read_weights_metadata, load_model):
        with pytest.raises(ValueError, match=rf"weights\{suffix}: a PyTorch \{suffix} file"):
            read(path)
    with pytest.raises(ValueError, match=r"pylon\.load_weights\(model, path\)"):
        load_model(path)
