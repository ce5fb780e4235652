"""Model registry (timm style): ``@register_model`` adds a builder, ``create_model`` builds one."""

from __future__ import annotations

import importlib
import inspect
import json
import os
from collections.abc import Callable
from typing import Any

from torch import nn

from pylon.options import check_options, keyword_parameters

# modules whose import registers the built-in models
_BUILTIN_MODULES = (
    "pylon.models.pylon_net",
    "pylon.models.cam",
    "pylon.models.li2018",
    "pylon.models.fpn",
    "pylon.models.unet",
    "pylon.models.deeplabv3plus",
    "pylon.models.pan",
)
_COMMON_ARGS = ("encoder", "in_channels", "num_classes", "encoder_weights")
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model class or builder function under ``name``.

    Args:
        name: the name :func:`create_model` takes. Names starting with ``_`` are private
            (test doubles); the model-contract tests skip them.

    Returns:
        The decorator; it returns the builder unchanged. The builder must accept ``encoder,
        in_channels, num_classes, encoder_weights`` as keywords (its other keyword parameters,
        with defaults, are the model's options) and should return a
        :class:`~pylon.models.base.ClassMapModel`.
    """
    if not isinstance(name, str) or not name:
        raise TypeError('use @register_model("name") with the model\'s name')

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        params = inspect.signature(builder).parameters
        missing = [arg for arg in _COMMON_ARGS if arg not in params]
        if missing:
            raise TypeError(f"model builder {name!r} must accept {missing}")
        _REGISTRY[name] = builder
        return builder

    return decorator


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def list_models() -> list[str]:
    """Return the names accepted by :func:`create_model`, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def model_options(name: str) -> dict[str, Any]:
    """The options of a model.

    Args:
        name: a name of :func:`list_models`.

    Returns:
        ``{option: default}``: the builder's keyword parameters beyond encoder, channels,
        classes and weights.
    """
    params = inspect.signature(_builder(name)).parameters
    return {k: p.default for k, p in params.items() if k not in _COMMON_ARGS}


def check_model_options(name: str, options: Any, *, where: str = "options") -> None:
    """Refuse an option model ``name`` does not take, or a value of the wrong type.

    Args:
        name: a name of :func:`list_models` (else ``ValueError`` listing them).
        options: ``{option: value}`` as :func:`create_model` would get them.
        where: how the message names the options, e.g. ``"model.options"``.

    Raises:
        ValueError: one line naming ``where.<option>``, the model and its options.
    """
    params = keyword_parameters(_builder(name), exclude=_COMMON_ARGS)
    check_options(options, params, where=where, owner=f"model {name!r}")


def _builder(name: str) -> Callable[..., nn.Module]:
    _load_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_model(
    name: str,
    *,
    encoder: str = "resnet50",
    in_channels: int = 1,
    num_classes: int = 14,
    encoder_weights: str | os.PathLike | None = None,
    **options: Any,
) -> nn.Module:
    """Build model ``name`` on an smp encoder.

    Args:
        name: a name of :func:`list_models`.
        encoder: smp encoder name (``resnet50``, ``resnet18``, ``efficientnet-b0``, ...).
        in_channels: input channels (1 for X-rays, 3 for RGB).
        num_classes: classes (class maps).
        encoder_weights: ``None`` (random), ``"imagenet"`` or a local encoder state-dict file.
        options: the model's variants (e.g. ``pool="avg"`` for ``cam``; see
            :func:`model_options`).

    Returns:
        The model, with a ``pylon_config`` dict from which :func:`create_model_from_config`
        rebuilds it.
    """
    builder = _builder(name)
    defaults = model_options(name)
    check_model_options(name, options)
    if in_channels < 1 or num_classes < 1:
        raise ValueError(
            f"in_channels and num_classes must be >= 1, got {in_channels} and {num_classes}"
        )
    model = builder(
        encoder=encoder,
        in_channels=in_channels,
        num_classes=num_classes,
        encoder_weights=encoder_weights,
        **options,
    )
    config = {
        "name": name,
        "encoder": encoder,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "options": {**defaults, **options},
    }
    # in its JSON form (tuples become lists), as save_weights stores it
    model.pylon_config = json.loads(json.dumps(config))
    return model


def create_model_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a model (random weights) from its ``pylon_config``.

    Args:
        config: ``{"name", "encoder", "in_channels", "num_classes", "options"}``.

    Returns:
        The model (see :func:`create_model`).
    """
    try:
        return create_model(
            config["name"],
            encoder=config["encoder"],
            in_channels=config["in_channels"],
            num_classes=config["num_classes"],
            **config.get("options", {}),
        )
    except KeyError as err:
        raise ValueError(f"model config lacks the field {err.args[0]!r}: {config}") from None
