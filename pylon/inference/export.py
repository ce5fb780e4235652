"""ONNX export of a trained model: ``logits`` and ``cam`` outputs, dynamic batch axis, metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from pylon.data.preprocessing import Preprocessing
from pylon.inference.predictor import check_class_names
from pylon.io import atomic_path
from pylon.models.registry import create_model_from_config
from pylon.models.weights import load_weights, read_weights_metadata

INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "cam")
# The opsets torch.onnx's exporter writes: its operator library starts at 18 (a lower request is
# "converted" down, which fails for most graphs and silently writes 18), and 23 is the newest it
# declares. Read from torch where it says so.
MIN_OPSET, MAX_OPSET = 18, 23
try:
    from torch.onnx._constants import ONNX_MAX_OPSET as MAX_OPSET
    from torch.onnx._internal.exporter._constants import TORCHLIB_OPSET as MIN_OPSET
except ImportError:  # private modules: keep the values above
    pass


def check_opset(opset: int | None) -> int | None:
    """Refuse an ONNX opset the exporter cannot write.

    Args:
        opset: the requested opset (``None``: the exporter's default).

    Returns:
        ``opset`` unchanged.

    Raises:
        ValueError: outside ``MIN_OPSET..MAX_OPSET``, naming the range.
    """
    if opset is not None and not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"--opset {opset}: the ONNX exporter writes opsets {MIN_OPSET} to {MAX_OPSET}; "
            "leave it out for the default"
        )
    return opset


class _TupleOutput(nn.Module):
    """Returns ``(logits, cam)`` as a plain tuple, the form the ONNX exporter names outputs by."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        output = self.model(image)
        return output.logits, output.cam


def export_onnx(
    weights_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    opset: int | None = None,
    batch_size: int = 2,
) -> Path:
    """Export the model of ``weights_path`` (rebuilt from its metadata) to ``out_path``.

    Input ``image`` is ``(batch, in_channels, size, size)`` float32, normalised as in training;
    outputs ``logits`` ``(batch, C)`` and ``cam`` ``(batch, C, h, w)``
    (raw scores; apply a sigmoid).
    The batch axis is dynamic. The weights' metadata (``pylon_model``, ``pylon_preprocessing``:
    transform, class names, input size, normalisation) is copied into the ONNX
    ``metadata_props``.

    Args:
        weights_path: the trained weights (safetensors with pylon's metadata).
        out_path: the ``.onnx`` file to write (atomically).
        opset: the ONNX opset, :data:`MIN_OPSET` to :data:`MAX_OPSET` (``None``: the exporter's
            default).
        batch_size: the batch of the example input traced (the axis stays dynamic).

    Returns:
        ``out_path``.

    Raises:
        ValueError: an opset out of range (checked before anything is loaded), weights without
            the architecture or with repeated class names, or an export that did not produce the
            opset asked for; nothing is written then.
    """
    check_opset(opset)
    try:
        import onnx
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError as err:
        raise ImportError(
            f"ONNX export needs the onnx and onnxscript packages ({err}); "
            "install them with: pip install 'pylon-localization[onnx]'"
        ) from err

    weights_path, out_path = Path(weights_path), Path(out_path)
    metadata = read_weights_metadata(weights_path)
    config = metadata["model"]
    if config is None:
        raise ValueError(
            f"{weights_path}: no 'pylon_model' metadata (the architecture); save the weights with "
            "pylon.save_weights(model, path) from a model built by pylon.create_model"
        )
    record = Preprocessing.from_metadata(metadata, weights_path)
    check_class_names(record.class_names, weights_path)
    size = record.size
    model = create_model_from_config(config)
    load_weights(model, weights_path, strict=True)
    wrapper = _TupleOutput(model).eval()
    example = torch.zeros(batch_size, config["in_channels"], size, size)
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        wrapper,
        (example,),
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        opset_version=opset,
        dynamic_shapes={"image": {0: batch}},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    proto = program.model_proto
    written = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    if opset is not None and written != [opset]:
        raise ValueError(
            f"--opset {opset}: the exporter could not convert this model to it (it made opset "
            f"{', '.join(map(str, written))}); nothing written"
        )
    data = record.to_dict()
    data.pop("model")
    props = {"pylon_model": json.dumps(config), **record.with_model(config).to_metadata()}
    props.update({k: json.dumps(v) for k, v in data.items()})
    for key, value in props.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(proto)
    with atomic_path(out_path) as tmp:
        onnx.save_model(proto, str(tmp))
    return out_path


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, object]:
    """The ``metadata_props`` of an exported file, JSON-decoded."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: json.loads(p.value) for p in proto.metadata_props}
