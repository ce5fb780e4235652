"""Freezing a model's encoder for the first phase of two-phase (transfer) training."""

from __future__ import annotations

from typing import Any

from torch import nn


def _set_batchnorm_eval(module: nn.Module, args: Any) -> None:
    module.training = False


def freeze_encoder(model: nn.Module, *, bn_eval: bool = False) -> int:
    """Stop training ``model.encoder``.

    Args:
        model: a model with an ``encoder`` submodule, changed in place.
        bn_eval: ``False`` (default, the reference's ``requires_grad_(False)``): only gradients
            are turned off, so in train mode the encoder's BatchNorm running statistics keep
            adapting to the new data. ``True``: its BatchNorm layers also stay in eval mode
            (using and keeping their running statistics) even after ``model.train()``, so the
            encoder is fixed entirely.

    Returns:
        The number of frozen parameters.
    """
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"{type(model).__name__} has no 'encoder' submodule to freeze")
    count = 0
    for param in encoder.parameters():
        param.requires_grad_(False)
        count += param.numel()
    if bn_eval:
        for module in encoder.modules():
            is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
            if is_bn and _set_batchnorm_eval not in module._forward_pre_hooks.values():
                module.eval()
                # model.train() (Lightning calls it every epoch) flips BN back to training;
                # the hook undoes that before each call
                module.register_forward_pre_hook(_set_batchnorm_eval)
    return count
