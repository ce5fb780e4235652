"""Build an smp encoder with random, downloaded ("imagenet") or local-file weights; fails fast
offline."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from unittest import mock
from urllib.parse import urlparse

import huggingface_hub.constants
from huggingface_hub import try_to_load_from_cache
from segmentation_models_pytorch.encoders import encoders as smp_encoders
from segmentation_models_pytorch.encoders import get_encoder
from segmentation_models_pytorch.encoders._utils import patch_first_conv
from torch import nn

from pylon.models.state_dict import PICKLE_SUFFIXES, match_state_dict, read_state_dict

logger = logging.getLogger(__name__)

_LOCAL_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)  # what read_state_dict reads
WEIGHTS_CHOICES = (
    "expected null (random init), a pretrained name such as 'imagenet', or the path of a local "
    f"weights file ({', '.join(_LOCAL_SUFFIXES)})"
)
# classifier tensors of a backbone checkpoint that an encoder (features only) does not have
_HEAD_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.", "_fc.")


class EncoderWeightsUnavailable(RuntimeError, OSError):
    """Pretrained encoder weights were requested but cannot be downloaded (e.g. no network).

    An ``OSError`` too: the machine's condition, not a bug (the CLI prints one line)."""


def is_weights_path(weights: str | os.PathLike) -> bool:
    """Whether ``encoder_weights`` names a file rather than pretrained weights: a path object,
    or a string with a suffix or a folder (smp's weight names have neither)."""
    if isinstance(weights, os.PathLike):
        return True
    text = str(weights)
    return bool(Path(text).suffix) or "/" in text or os.sep in text


def check_encoder_weights(
    encoder: str, weights: str | os.PathLike | None, *, where: str = "encoder_weights"
) -> None:
    """Refuse an ``encoder_weights`` value that cannot mean anything for ``encoder``, without
    touching the network or the file system (the same answer on every machine).

    Args:
        encoder: the smp encoder name (other encoders, e.g. ``tu-*``, are not checked).
        weights: ``None``, a pretrained name or a local file path.
        where: how the message names the setting, e.g. ``"model.encoder_weights"``.

    Raises:
        ValueError: naming ``where`` and listing what it accepts: a file whose suffix is not a
            weights file's, or a pretrained name ``encoder`` does not have.
    """
    if weights is None:
        return
    if is_weights_path(weights):
        path = Path(weights)
        if path.suffix.lower() not in _LOCAL_SUFFIXES:
            state = "" if path.is_file() else ", and no such file exists"
            raise ValueError(
                f"{where}={str(weights)!r}: not a weights file{state}; {WEIGHTS_CHOICES}"
            )
        return
    names = _pretrained_names(encoder)
    if names is not None and weights not in names:
        raise ValueError(
            f"{where}={weights!r}: encoder {encoder!r} has no such pretrained weights (it has "
            f"{', '.join(names) or 'none'}); {WEIGHTS_CHOICES}"
        )


def check_encoder_weights_available(
    encoder: str, weights: str | os.PathLike | None, *, where: str = "encoder_weights"
) -> None:
    """Refuse, before any work starts, ``encoder_weights`` that this machine cannot load: a file
    that does not exist, or pretrained weights that are neither in the Hugging Face cache nor
    downloadable (offline).

    Args:
        encoder: the smp encoder name.
        weights: ``None``, a pretrained name or a local file path (see :func:`build_encoder`).
        where: how the message names the setting.

    Raises:
        ValueError: for a value :func:`check_encoder_weights` refuses.
        FileNotFoundError: for a file that is not there.
        EncoderWeightsUnavailable: for pretrained weights that cannot be had offline.
    """
    check_encoder_weights(encoder, weights, where=where)
    if weights is None:
        return
    if is_weights_path(weights):
        if not Path(weights).is_file():
            raise FileNotFoundError(
                f"{where}={str(weights)!r}: the file does not exist; {WEIGHTS_CHOICES}"
            )
        try:
            read_state_dict(weights)
        except ValueError as err:
            raise ValueError(f"{where}: not a weights file: {err}; {WEIGHTS_CHOICES}") from None
        return
    settings = smp_encoders.get(encoder, {}).get("pretrained_settings", {}).get(weights)
    if settings is None:  # not an smp encoder: its builder fetches what it needs
        return
    cached = all(
        isinstance(
            try_to_load_from_cache(settings["repo_id"], name, revision=settings.get("revision")),
            str,
        )
        for name in ("config.json", "model.safetensors")
    )
    if not cached and (huggingface_hub.constants.HF_HUB_OFFLINE or not _hub_reachable()):
        raise EncoderWeightsUnavailable(f"{where}={weights!r}: {_unavailable(encoder, weights)}")


def _pretrained_names(encoder: str) -> list[str] | None:
    """The pretrained weight names smp has for ``encoder``; ``None`` for an encoder it does not
    list (``tu-*`` timm encoders, a model's own)."""
    if encoder not in smp_encoders:
        return None
    return list(smp_encoders[encoder]["pretrained_settings"])


def _unavailable(encoder: str, weights: str) -> str:
    return (
        f"cannot get {weights!r} weights for encoder {encoder!r}: the Hugging Face hub could not "
        "be reached (offline?) and they are not in its local cache. Use encoder_weights=None "
        "(random init) or encoder_weights='/path/to/encoder.safetensors' (a local state dict of "
        "the encoder)"
    )


def build_encoder(
    name: str,
    *,
    in_channels: int = 3,
    weights: str | os.PathLike | None = None,
    depth: int = 5,
    output_stride: int = 32,
) -> nn.Module:
    """Build an smp encoder (``segmentation_models_pytorch.encoders.get_encoder``).

    Args:
        name: smp encoder name.
        in_channels: input channels.
        weights: ``None`` (random init), a name smp knows for this encoder (``"imagenet"``,
            downloaded from the Hugging Face hub or taken from its cache), or the path of a local
            state dict (``.safetensors``, or a PyTorch ``.pth``/``.pt``/``.pkl``/``.bin``/``.ckpt``
            pickle) of the 3-channel encoder (the first conv is then adapted to ``in_channels``
            the way smp adapts pretrained weights) or of an ``in_channels`` one.
        depth: number of stages (5).
        output_stride: 32, or 16/8 for a dilated last stage(s).

    Returns:
        The encoder; ``EncoderWeightsUnavailable`` when downloaded weights cannot be had.
    """
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if weights is None:
        return _get_encoder(name, in_channels, None, depth, output_stride)
    check_encoder_weights(name, weights)
    if is_weights_path(weights):
        return _encoder_from_file(name, in_channels, Path(weights), depth, output_stride)
    return _download_encoder(name, in_channels, str(weights), depth, output_stride)


def _get_encoder(name, in_channels, weights, depth, output_stride) -> nn.Module:
    try:
        return get_encoder(
            name, in_channels=in_channels, depth=depth, weights=weights, output_stride=output_stride
        )
    except KeyError as err:
        # smp reports unknown encoder / weight names as KeyError with the valid choices
        raise ValueError(str(err.args[0]) if err.args else str(err)) from None


def _download_encoder(name, in_channels, weights, depth, output_stride) -> nn.Module:
    offline = huggingface_hub.constants.HF_HUB_OFFLINE or not _hub_reachable()
    hint = _unavailable(name, weights)
    try:
        # when the hub is unreachable, offline mode makes huggingface_hub use its cache or fail at
        # once instead of retrying for half a minute
        with mock.patch.object(huggingface_hub.constants, "HF_HUB_OFFLINE", offline):
            return _get_encoder(name, in_channels, weights, depth, output_stride)
    except OSError as err:  # includes the hub's HTTP and cache-miss errors
        raise EncoderWeightsUnavailable(f"{hint} ({type(err).__name__}: {err})") from err


def _hub_reachable(timeout: float = 3.0) -> bool:
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a direct probe says nothing about a proxied connection
    url = urlparse(huggingface_hub.constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _encoder_from_file(name, in_channels, path, depth, output_stride) -> nn.Module:
    if not path.is_file():
        raise FileNotFoundError(
            f"encoder_weights={str(path)!r}: the file does not exist; {WEIGHTS_CHOICES}"
        )
    state = read_state_dict(path)
    for channels in dict.fromkeys((3, in_channels)):
        encoder = _get_encoder(name, channels, None, depth, output_stride)
        report = match_state_dict(encoder, state)
        extra = [k for k in report.unexpected if not k.startswith(_HEAD_PREFIXES)]
        if not report.missing and not report.mismatched and not extra:
            break
    else:
        raise ValueError(
            f"{path}: not a state dict of encoder {name!r} with 3 or {in_channels} input channels; "
            f"missing {report.missing[:5]}, shape-mismatched {report.mismatched[:5]}, "
            f"unexpected {extra[:5]}"
        )
    encoder.load_state_dict({k: state[k] for k in report.loaded}, strict=False)
    if report.unexpected:
        logger.info("%s: ignored classifier tensors %s", path, report.unexpected)
    if channels != in_channels:
        if hasattr(encoder, "set_in_channels"):
            encoder.set_in_channels(in_channels, pretrained=True)
        else:
            patch_first_conv(encoder, in_channels, pretrained=True)
    return encoder
