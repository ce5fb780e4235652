"""Shareable model folders (``model.safetensors``, ``config.json``, ``README.md``) and
``from_pretrained``: loading one, from disk or from the Hugging Face Hub, strictly.

A model folder is what ``pylon export-model`` writes (:mod:`pylon.inference.model_folder`):

- ``model.safetensors``: the weights, with the metadata every pylon loader reads (the model's
  config under ``pylon_model``, the preprocessing record under ``pylon_preprocessing``);
- ``config.json``: the same two records in readable form (:data:`FORMAT`, the pylon version,
  ``model``: architecture and options, ``preprocessing``: transform, input size, channels,
  normalisation, class names) and where the weights came from; it must agree with the weights'
  metadata, else the folder is refused;
- ``README.md``: the model card.

Sources: a local folder, or ``hf-hub:ORG/NAME`` (optionally ``@REVISION``), fetched with
``huggingface_hub.snapshot_download`` into its usual cache. The cache is tried first without the
network; offline (``HF_HUB_OFFLINE=1``, or no connection) a model that is not cached fails at
once with a message naming the source.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from torch import nn

from pylon.models.state_dict import match_state_dict, read_state_dict
from pylon.models.weights import MODEL_METADATA_KEY, read_weights_metadata

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
FOLDER_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)
FORMAT = "pylon-model-folder"
FORMAT_VERSION = 1
HUB_PREFIX = "hf-hub:"
# the preprocessing record's key in the weights' metadata (pylon.data.preprocessing.METADATA_KEY;
# models does not import data)
PREPROCESSING_KEY = "pylon_preprocessing"
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# bounds one metadata request to the Hub (huggingface_hub's default is 10 s)
_HUB_TIMEOUT_S = 5.0


def is_hub_source(source: str | os.PathLike) -> bool:
    """True for ``hf-hub:ORG/NAME[@REVISION]``."""
    return isinstance(source, str) and source.startswith(HUB_PREFIX)


def is_repo_id(name: str | None) -> bool:
    """True for ``None`` or a Hub repository id ``ORG/NAME``."""
    return name is None or bool(_REPO_ID.match(name))


def parse_hub_source(source: str) -> tuple[str, str | None]:
    """``hf-hub:ORG/NAME[@REVISION]`` -> ``(ORG/NAME, REVISION or None)``.

    Raises:
        ValueError: naming the source and the expected form.
    """
    repo, at, revision = source.removeprefix(HUB_PREFIX).partition("@")
    if not _REPO_ID.match(repo) or (at and not revision):
        raise ValueError(
            f"{source!r}: expected hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION (a Hugging Face "
            "model repository)"
        )
    return repo, revision or None


def resolve_source(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """The local model folder of ``source``, downloading a Hub repository where needed.

    Args:
        source: a model folder, or ``hf-hub:ORG/NAME[@REVISION]``.
        revision: a branch, tag or commit of the Hub repository (overrides ``@REVISION``).
        cache_dir: the Hub cache (default: huggingface_hub's, ``$HF_HOME/hub``).

    Returns:
        The folder (checked to hold ``model.safetensors`` and ``config.json``).

    Raises:
        FileNotFoundError: a local folder that does not exist or lacks those files; a Hub model
            that is neither cached nor downloadable (offline: at once), naming the source.
    """
    if not is_hub_source(source):
        return check_folder(source)
    repo, at = parse_hub_source(str(source))
    folder = _download(str(source), repo, revision or at, cache_dir)
    return check_folder(folder, source=str(source))


def _download(source: str, repo: str, revision: str | None, cache_dir) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    options = {
        "repo_id": repo,
        "revision": revision,
        "cache_dir": cache_dir,
        "allow_patterns": list(FOLDER_FILES),
    }
    try:  # the cache first: no request at all when the model is there
        return Path(snapshot_download(**options, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    hint = (
        "download it where there is a network (hf download "
        f"{repo}{f' --revision {revision}' if revision else ''} --local-dir DIR) and pass the "
        "local folder DIR instead"
    )
    # huggingface_hub reads the variable when it is imported; a later setting counts too
    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    if constants.HF_HUB_OFFLINE or offline:
        raise FileNotFoundError(
            f"{source}: not in the Hugging Face cache and HF_HUB_OFFLINE is set, so it cannot be "
            f"downloaded; {hint}"
        ) from None
    try:
        return Path(snapshot_download(**options, etag_timeout=_HUB_TIMEOUT_S))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        reason = " ".join(str(err).split())[:300]
        raise FileNotFoundError(
            f"{source}: cannot be downloaded from the Hugging Face Hub ({reason}); {hint}"
        ) from None


def check_folder(folder: str | os.PathLike, *, source: str | None = None) -> Path:
    """Check that ``folder`` is a model folder: ``model.safetensors`` and ``config.json``.

    Args:
        folder: the folder.
        source: how messages name it (default: the folder).

    Returns:
        ``folder`` as a ``Path``.

    Raises:
        FileNotFoundError: naming the folder and what it lacks.
    """
    folder = Path(folder)
    name = source or str(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {name}")
    missing = [f for f in (WEIGHTS_NAME, CONFIG_NAME) if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{name}: not a pylon model folder: {' and '.join(missing)} missing (a folder "
            "written by pylon export-model holds model.safetensors, config.json and README.md)"
        )
    return folder


def read_folder_config(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``config.json`` of a model folder.

    Args:
        folder: the folder.

    Returns:
        The config: ``format``, ``format_version``, ``pylon_version``, ``model``,
        ``preprocessing`` and ``source``.

    Raises:
        ValueError: naming the file and field when it is not JSON or lacks a field.
    """
    path = Path(folder) / CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{path}: not a pylon model folder config (expected format {FORMAT!r})")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {config['format_version']} is newer than this pylon reads "
            f"({FORMAT_VERSION}); upgrade pylon"
        )
    for key in ("model", "preprocessing"):
        if not isinstance(config.get(key), dict):
            raise ValueError(f"{path}: lacks the {key!r} record (a mapping)")
    return config


def folder_weights(folder: str | os.PathLike) -> Path:
    """The weights file of a model folder, once ``config.json`` is checked against its metadata.

    Args:
        folder: a model folder.

    Returns:
        ``folder/model.safetensors``.

    Raises:
        FileNotFoundError: not a model folder.
        ValueError: ``config.json`` and the weights' metadata disagree (naming the fields).
    """
    folder = check_folder(folder)
    config = read_folder_config(folder)
    weights = folder / WEIGHTS_NAME
    metadata = read_weights_metadata(weights)
    record = metadata.get(PREPROCESSING_KEY)
    if metadata.get("model") is None or not isinstance(record, dict):
        raise ValueError(
            f"{weights}: lacks the '{MODEL_METADATA_KEY}' and '{PREPROCESSING_KEY}' metadata "
            "that pylon export-model writes"
        )
    record = {k: v for k, v in record.items() if k != "model"}
    for key, stored in (("model", metadata["model"]), ("preprocessing", record)):
        differ = _differing_fields(config[key], stored)
        if differ:
            raise ValueError(
                f"{folder / CONFIG_NAME}: {key}.{', {key}.'.join(differ)} disagree(s) with the "
                f"metadata of {weights}; the folder was edited by hand: export it again"
            )
    return weights


def _differing_fields(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def weights_file(path: str | os.PathLike) -> Path:
    """A weights file as given, or a model folder's checked ``model.safetensors``.

    Args:
        path: a ``.safetensors`` file or a model folder.

    Returns:
        The weights file.
    """
    path = Path(path)
    return folder_weights(path) if path.is_dir() else path


def load_folder(folder: str | os.PathLike) -> nn.Module:
    """Build the model a folder describes and load its weights strictly.

    Args:
        folder: a model folder (see :func:`check_folder`).

    Returns:
        The model in eval mode on the CPU; ``pylon_config`` is its architecture and
        ``pylon_preprocessing`` its :class:`~pylon.data.preprocessing.Preprocessing` record
        (``eval_transform()`` makes its inputs; ``class_names`` names its outputs).

    Raises:
        ValueError: a tensor missing from the file, one the model lacks, or one of another
            shape (naming them), or a config that disagrees with the weights.
    """
    from pylon.data.preprocessing import Preprocessing
    from pylon.models.registry import create_model_from_config

    weights = folder_weights(folder)
    metadata = read_weights_metadata(weights)
    preprocessing = Preprocessing.from_metadata(metadata, weights)
    model = create_model_from_config(metadata["model"])
    state = read_state_dict(weights)
    report = match_state_dict(model, state)
    if not report.complete:
        raise ValueError(
            f"{weights}: does not hold exactly the tensors of the model in {CONFIG_NAME} "
            f"({report.summary()}); a model folder is loaded strictly: export it again"
        )
    model.load_state_dict(state, strict=True)
    model.pylon_preprocessing = preprocessing
    return model.eval()


def from_pretrained(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> nn.Module:
    """Load a shared pylon model, like ``timm.create_model(..., pretrained=True)``.

    Args:
        source: a model folder (``pylon export-model``), or ``hf-hub:ORG/NAME[@REVISION]``.
        revision: Hub branch, tag or commit (overrides ``@REVISION``).
        cache_dir: the Hub cache (default: huggingface_hub's).

    Returns:
        The model (an ``nn.Module`` in eval mode, on the CPU), with its preprocessing record
        attached as ``model.pylon_preprocessing`` (a
        :class:`~pylon.data.preprocessing.Preprocessing`: ``eval_transform()``, ``size``,
        ``mean``, ``std``, ``class_names``). ``model(x)`` returns a
        :class:`~pylon.models.ModelOutput` (``logits``, ``cam``). For images in and
        probabilities, peaks and heatmaps out, use ``pylon.Predictor(folder)``.

    Raises:
        FileNotFoundError: the folder does not exist, or a Hub model is neither cached nor
            downloadable (offline: at once, naming the source).
        ValueError: a tensor missing, unexpected or of another shape (named), or
            ``config.json`` disagreeing with the weights.
    """
    return load_folder(resolve_source(source, revision=revision, cache_dir=cache_dir))
