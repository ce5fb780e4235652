"""ONNX export of a trained model: ``logits`` and ``cam`` outputs, dynamic batch axis, metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from pylon.data.preprocessing import Preprocessing
from pylon.io import atomic_path
from pylon.models.registry import create_model_from_config
from pylon.models.weights import load_weights, read_weights_metadata

INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "cam")


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
    """
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
