"""Checkpoints trained with the reference implementation load into the matching pylon model.

Each layout below is written from the reference's ``model/*.py`` (and the smp modules they build
on): the names and shapes its ``state_dict()`` has, for resnet18 (encoder channels 64, 64, 128,
256, 512). The encoder's own names are smp ``get_encoder``'s, which the reference calls. A file
in that layout must load strictly, every tensor landing where the documented name map says.
Also: the reference's forward details that differ from smp's defaults (Li 2018 resize, PAN)."""

import pytest
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.encoders import get_encoder

from pylon.models import create_model
from pylon.models.weights import load_weights

C1, C2, C3, C4, C5 = 64, 64, 128, 256, 512  # resnet18 features at strides 2..32
N = 5  # classes


def encoder(prefix: str) -> dict[str, tuple]:
    state = get_encoder("resnet18", in_channels=1, weights=None).state_dict()
    return {prefix + k: tuple(v.shape) for k, v in state.items()}


def conv(name, cin, cout, k=1, bias=True, groups=1):
    out = {f"{name}.weight": (cout, cin // groups, k, k)}
    if bias:
        out[f"{name}.bias"] = (cout,)
    return out


def bn(name, c):
    stats = ("weight", "bias", "running_mean", "running_var")
    return {**{f"{name}.{s}": (c,) for s in stats}, f"{name}.num_batches_tracked": ()}


def gn(name, c):
    return {f"{name}.weight": (c,), f"{name}.bias": (c,)}


def conv_bn_relu(name, cin, cout, k):  # the reference's ConvBnRelu: biased conv, BN
    return {**conv(f"{name}.conv", cin, cout, k), **bn(f"{name}.bn", cout)}


def separable(name, cin, cout, k=3):  # smp SeparableConv2d: depthwise, pointwise, no bias
    return {**conv(f"{name}.0", cin, cin, k, False, cin), **conv(f"{name}.1", cin, cout, 1, False)}


def baseline():  # model/baseline.py: net = get_encoder, out = Conv2d(C5, n_out, 1)
    return {**encoder("net."), **conv("out", C5, N)}


def li2018():  # model/li2018.py: out = [UpsamplingBilinear2d, conv3x3 512, BN, ReLU, conv1x1]
    return {
        **encoder("net."),
        **conv("out.1", C5, 512, 3),
        **bn("out.2", 512),
        **conv("out.4", 512, N),
    }


def fpn(norm):  # model/fpn.py FPNCustom: smp FPN decoder, custom segmentation blocks
    d = "net.decoder"
    out = {**encoder("net.encoder."), **conv(f"{d}.p5", C5, 256)}
    for i, skip in ((4, C4), (3, C3), (2, C2)):
        out.update(conv(f"{d}.p{i}.skip_conv", skip, 256))
    for i, n_upsamples in enumerate((3, 2, 1, 0)):
        for j in range(max(1, n_upsamples)):
            block = f"{d}.seg_blocks.{i}.block.{j}.block"
            out.update(conv(f"{block}.0", 256 if j == 0 else 128, 128, 3, bias=False))
            out.update((bn if norm == "batchnorm" else gn)(f"{block}.1", 128))
    return {**out, **conv("net.segmentation_head.0", 128, N)}


def unet():  # model/unet.py: smp Unet, decoder channels (256, 128, 64, 64, 64)
    out = encoder("net.encoder.")
    ins, skips, outs = (C5, 256, 128, 64, 64), (C4, C3, C2, C1, 0), (256, 128, 64, 64, 64)
    for i, (cin, skip, cout) in enumerate(zip(ins, skips, outs, strict=True)):
        block = f"net.decoder.blocks.{i}"
        out.update(conv(f"{block}.conv1.0", cin + skip, cout, 3, bias=False))
        out.update(bn(f"{block}.conv1.1", cout))
        out.update(conv(f"{block}.conv2.0", cout, cout, 3, bias=False))
        out.update(bn(f"{block}.conv2.1", cout))
    return {**out, **conv("net.segmentation_head.0", 64, N, 3)}


def deeplabv3plus(gap):  # model/deeplab.py (smp) and deeplab_custom.py (ASPPNoGAP)
    a = "net.decoder.aspp"
    out = {**encoder("net.encoder."), **conv(f"{a}.0.convs.0.0", C5, 256, bias=False)}
    out.update(bn(f"{a}.0.convs.0.1", 256))
    for i in (1, 2, 3):
        out.update(separable(f"{a}.0.convs.{i}.0", C5, 256))
        out.update(bn(f"{a}.0.convs.{i}.1", 256))
    if gap:
        out.update(conv(f"{a}.0.convs.4.1", C5, 256, bias=False))
        out.update(bn(f"{a}.0.convs.4.2", 256))
    out.update(conv(f"{a}.0.project.0", (5 if gap else 4) * 256, 256, bias=False))
    out.update(bn(f"{a}.0.project.1", 256))
    out.update({**separable(f"{a}.1", 256, 256), **bn(f"{a}.2", 256)})
    out.update(
        {**conv("net.decoder.block1.0", C2, 48, bias=False), **bn("net.decoder.block1.1", 48)}
    )
    out.update({**separable("net.decoder.block2.0", 304, 256), **bn("net.decoder.block2.1", 256)})
    return {**out, **conv("net.segmentation_head.0", 256, N)}


def pan(gap):  # model/pan.py: PANCore, 128 decoder channels, head kernel 3
    f, ch = "net.decoder.fpa", 128
    out = encoder("net.encoder.")
    if gap:
        out.update(conv_bn_relu(f"{f}.branch1.1", C5, ch, 1))
    out.update(conv_bn_relu(f"{f}.mid.0", C5, ch, 1))
    out.update(conv_bn_relu(f"{f}.down1.1", C5, 1, 7))
    out.update(conv_bn_relu(f"{f}.down2.1", 1, 1, 5))
    out.update({**conv_bn_relu(f"{f}.down3.1", 1, 1, 3), **conv_bn_relu(f"{f}.down3.2", 1, 1, 3)})
    out.update({**conv_bn_relu(f"{f}.conv2", 1, 1, 5), **conv_bn_relu(f"{f}.conv1", 1, 1, 7)})
    for name, skip in (("gau3", C4), ("gau2", C3), ("gau1", C2)):
        if gap:
            out.update(conv_bn_relu(f"net.decoder.{name}.conv1.1", ch, ch, 1))
        out.update(conv_bn_relu(f"net.decoder.{name}.conv2", skip, ch, 3))
    return {**out, **conv("net.segmentation_head.0", ch, N, 3)}


def pylon_net():  # pylon.py: PA + three 2-layer UP modules, kernel 1, head conv 1x1
    d = "net.decoder"
    out = {**encoder("net.encoder."), **conv_bn_relu(f"{d}.pa.mid.0", C5, 128, 1)}
    out.update(conv_bn_relu(f"{d}.pa.down1.1", C5, 1, 7))
    out.update(
        {**conv_bn_relu(f"{d}.pa.down2.1", 1, 1, 5), **conv_bn_relu(f"{d}.pa.down3.1", 1, 1, 3)}
    )
    for i, k in ((3, 3), (2, 5), (1, 7)):
        out.update(conv_bn_relu(f"{d}.pa.conv{i}", 1, 1, k))
    for name, skip in (("up3", C4), ("up2", C3), ("up1", C2)):
        out.update(conv_bn_relu(f"{d}.{name}.conv1.0", skip, skip, 1))
        out.update(conv_bn_relu(f"{d}.{name}.conv1.1", skip, 128, 1))
    return {**out, **conv("net.segmentation_head.0", 128, N)}


# the documented renames (docs/models.md): reference prefix -> ours
CAM_NAMES = {"net.": "encoder.", "out.": "classifier."}
LI_NAMES = {"net.": "encoder.", "out.1.": "head.0.", "out.2.": "head.1.", "out.4.": "head.3."}
NOGAP = {"aspp_pooling": False}
# (id, reference layout, pylon model, options, renames)
LAYOUTS = [
    ("baseline-maxpool", baseline, "cam", {}, CAM_NAMES),
    ("baseline-avgpool", baseline, "cam", {"pool": "avg"}, CAM_NAMES),
    ("li2018", li2018, "li2018", {}, LI_NAMES),
    ("fpn-custom-bn", lambda: fpn("batchnorm"), "fpn", {"norm": "batchnorm"}, {}),
    ("fpn-original-gn", lambda: fpn("groupnorm"), "fpn", {"norm": "groupnorm"}, {}),
    ("unet", unet, "unet", {}, {}),
    ("deeplabv3+", lambda: deeplabv3plus(True), "deeplabv3plus", {}, {}),
    ("deeplabv3+-nogap", lambda: deeplabv3plus(False), "deeplabv3plus", NOGAP, {}),
    ("pan", lambda: pan(True), "pan", {}, {}),
    ("pan-nogap", lambda: pan(False), "pan", {"gap": False}, {}),
    ("pylon", pylon_net, "pylon", {}, {}),
]  # fmt: skip


def _ours(name: str, renames: dict[str, str]) -> str:
    for old in sorted(renames, key=len, reverse=True):
        if name.startswith(old):
            return renames[old] + name[len(old) :]
    return name


@pytest.mark.parametrize(("layout", "model_name", "options", "renames"),
                         [row[1:] for row in LAYOUTS], ids=[row[0] for row in LAYOUTS])  # fmt: skip
def test_reference_checkpoint_loads_strictly(tmp_path, layout, model_name, options, renames):
    torch.manual_seed(0)
    reference = {
        k: torch.randint(0, 9, s) if k.endswith("num_batches_tracked") else torch.randn(s)
        for k, s in layout().items()
    }
    path = tmp_path / "model.pkl"  # the reference saves checkpoints/best/model.pkl
    torch.save(reference, path)
    model = create_model(model_name, encoder="resnet18", num_classes=N, **options)
    report = load_weights(model, path)  # strict
    assert report.complete and len(report.loaded) == len(reference)
    state = model.state_dict()
    for k, v in reference.items():
        assert torch.equal(state[_ours(k, renames)], v), k


def test_reference_single_file_checkpoint_loads(tmp_path):
    """The reference's older checkpoints hold the weights under "net", beside the optimizer's
    state and the trainer's counters."""
    torch.manual_seed(0)
    reference = {k: torch.randn(s) for k, s in baseline().items()}
    reference = {
        k: v.long() if k.endswith("num_batches_tracked") else v for k, v in reference.items()
    }
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=1e-4)
    path = tmp_path / "checkpoint.pkl"
    torch.save({"net": reference, "opt": optimizer.state_dict(), "state": {"i_itr": 7}}, path)
    model = create_model("cam", encoder="resnet18", num_classes=N)
    report = load_weights(model, path)  # strict
    assert report.complete and len(report.loaded) == len(reference)
    assert torch.equal(model.state_dict()["classifier.weight"], reference["out.weight"])


def test_our_own_names_still_load(tmp_path):
    """A file in our names (e.g. an older pylon run) is not renamed."""
    source = create_model("li2018", encoder="resnet18", num_classes=N)
    torch.save(source.state_dict(), tmp_path / "ours.pt")
    target = create_model("li2018", encoder="resnet18", num_classes=N)
    assert load_weights(target, tmp_path / "ours.pt").complete
    assert torch.equal(target.head[0].weight, source.head[0].weight)


def test_li2018_resizes_with_align_corners_true():
    torch.manual_seed(0)
    model = create_model("li2018", encoder="resnet18", num_classes=3).eval()
    x = torch.randn(2, 1, 256, 288)
    with torch.no_grad():
        feature = model.encoder(x)[-1]
        aligned = F.interpolate(feature, size=(20, 20), mode="bilinear", align_corners=True)
        unaligned = F.interpolate(feature, size=(20, 20), mode="bilinear", align_corners=False)
        cam = model(x).cam
        torch.testing.assert_close(cam, model.head(aligned))
        assert not torch.allclose(cam, model.head(unaligned), atol=1e-3)


def test_fpn_decoder_has_no_dropout_and_batchnorm_blocks():
    model = create_model("fpn", encoder="resnet18").train()
    assert model.net.decoder.dropout.p == 0.0
    norms = [
        type(m).__name__
        for m in model.net.decoder.seg_blocks.modules()
        if "Norm" in type(m).__name__
    ]
    assert norms and set(norms) == {"BatchNorm2d"}
    x = torch.randn(2, 1, 64, 64)
    torch.testing.assert_close(model(x).cam, model(x).cam)  # no random dropout in training


@pytest.mark.parametrize("gap", [True, False])
def test_pan_follows_the_reference(gap):
    """PAN written from the reference's model/pan.py with the model's layers: 128 channels, an
    undilated encoder (stride 32), and with use_gap=False no FPA global branch and no GAU
    attention (GAU = up(high) + conv2(low))."""

    def up(t, size):
        return F.interpolate(t, size=size, mode="bilinear", align_corners=True)

    torch.manual_seed(0)
    model = create_model("pan", encoder="resnet18", num_classes=3, gap=gap).eval()
    for m in model.modules():  # non-trivial statistics so every branch matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.bias.data.uniform_(0.0, 0.3)
    x = torch.randn(2, 1, 256, 320)
    dec = model.net.decoder
    with torch.no_grad():
        feats = model.encoder(x)
        assert feats[-1].shape[-2:] == (8, 10)  # stride 32: not dilated
        c5 = feats[-1]
        h, w = c5.shape[-2:]
        fpa = dec.fpa
        x1 = fpa.down1(c5)
        x2 = fpa.down2(x1)
        x3 = up(fpa.down3(x2), (h // 4, w // 4))
        a = up(fpa.conv2(x2) + x3, (h // 2, w // 2))
        a = up(fpa.conv1(x1) + a, (h, w))
        y = a * fpa.mid(c5)
        if gap:
            y = y + up(fpa.branch1(c5), (h, w))
        assert y.shape[1] == 128
        for gau, low in ((dec.gau3, feats[-2]), (dec.gau2, feats[-3]), (dec.gau1, feats[-4])):
            conv = gau.conv2(low)
            if gap:
                conv = conv * gau.conv1(y)
            y = up(y, low.shape[-2:]) + conv
        expected = model.net.segmentation_head(y)
        torch.testing.assert_close(model(x).cam, expected)
    params = [k for k in model.state_dict() if "branch1" in k or ".conv1.1." in k]
    assert bool(params) == gap
