"""PYLON against the specification: released state-dict layout, decoder wiring, variants."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pylon.models import create_model
from pylon.models.weights import load_weights

# the reference implementation's state-dict listing (name, shape), copied from shared/reference
TSV = Path(__file__).parent / "data" / "pylon_resnet50_in1_out14_state_dict.tsv"


def reference_listing() -> dict[str, tuple[int, ...]]:
    """The reference's state dict of PYLON resnet50, 1 channel, 14 classes: name -> shape."""
    listing = {}
    for line in TSV.read_text().splitlines():
        name, shape = line.split("\t")
        dims = shape.strip("()").replace(" ", "")
        listing[name] = tuple(int(d) for d in dims.split(",") if d)
    return listing


def released_state_dict() -> dict[str, torch.Tensor]:
    """A released-style checkpoint: the reference's names and shapes with random values (seed 1;
    small integers for the ``num_batches_tracked`` counters)."""
    torch.manual_seed(1)
    return {
        k: torch.randint(0, 5, s) if k.endswith("num_batches_tracked") else torch.randn(s)
        for k, s in reference_listing().items()
    }


def test_resnet50_state_dict_matches_released_listing(tmp_path):
    reference = reference_listing()
    model = create_model("pylon", encoder="resnet50", in_channels=1, num_classes=14)
    state = model.state_dict()
    assert len(reference) == 411
    assert {k: tuple(v.shape) for k, v in state.items()} == reference
    assert sum(p.numel() for p in model.parameters()) == 25_478_741

    # a released-style checkpoint (plain state dict pickle with exactly these names) loads strictly
    released = released_state_dict()
    torch.save(released, tmp_path / "pylon,nih,256.pkl")
    load_weights(model, tmp_path / "pylon,nih,256.pkl")
    for k, v in model.state_dict().items():
        assert torch.equal(v, released[k]), k


def _spec_forward(model, x):
    """The PYLON decoder written from the spec, reusing the model's layers as plain functions."""

    def up(t, like):
        return F.interpolate(t, size=like.shape[-2:], mode="bilinear", align_corners=True)

    feats = model.net.encoder(x)
    pa = model.net.decoder.pa
    c5 = feats[-1]
    mid = pa.mid(c5)
    x1 = pa.down1[1](F.max_pool2d(c5, 2))
    x2 = pa.down2[1](F.max_pool2d(x1, 2))
    x3 = pa.down3[1](F.max_pool2d(x2, 2))
    a = up(pa.conv3(x3), x2)
    a = up(pa.conv2(x2) + a, x1)
    a = up(pa.conv1(x1) + a, c5)
    y = a * mid
    for name, skip in (("up3", feats[-2]), ("up2", feats[-3]), ("up1", feats[-4])):
        y = up(y, skip) + getattr(model.net.decoder, name).conv1(skip)
    seg = model.net.segmentation_head[0](y)
    return seg, seg.flatten(2).max(dim=2).values


def test_pylon_forward_follows_the_spec():
    torch.manual_seed(0)
    model = create_model("pylon", encoder="resnet18", num_classes=3).eval()
    # non-trivial BatchNorm statistics so every branch matters
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(0.0, 0.3)
    x = torch.randn(2, 1, 288, 352)
    with torch.no_grad():
        out = model(x)
        seg, logits = _spec_forward(model, x)
    torch.testing.assert_close(out.cam, seg)
    torch.testing.assert_close(out.logits, logits)


@pytest.mark.parametrize(
    ("options", "stride", "n_up_modules"),
    [
        ({"n_up": 0}, 32, 0),
        ({"n_up": 1, "up_type": "1layer"}, 16, 1),
        ({"n_up": 2, "up_kernel_size": 3}, 8, 2),
        ({"use_pa": False, "n_dec_ch": 64, "seg_kern_size": 3}, 4, 3),
    ],
)
def test_pylon_variants(options, stride, n_up_modules):
    model = create_model("pylon", encoder="resnet18", num_classes=2, **options).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 256, 320))
    assert out.cam.shape == (1, 2, 256 // stride, 320 // stride)
    present = [n for n in ("up3", "up2", "up1") if hasattr(model.net.decoder, n)]
    assert len(present) == n_up_modules
    state = model.state_dict()
    if options.get("up_type") == "1layer":
        assert "net.decoder.up3.conv1.conv.weight" in state
    if options.get("up_kernel_size") == 3:
        assert state["net.decoder.up3.conv1.0.conv.weight"].shape[-2:] == (3, 3)
    if options.get("use_pa") is False:
        assert not any(".pa.down" in k for k in state)
        assert state["net.segmentation_head.0.weight"].shape == (2, 64, 3, 3)


@pytest.mark.parametrize("bad", [{"n_up": 4}, {"up_type": "3layer"}, {"up_kernel_size": 2}])
def test_pylon_invalid_options(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        create_model("pylon", encoder="resnet18", **bad)
