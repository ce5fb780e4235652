"""Run folder names: one safe folder name per experiment, so runs stay inside --runs-dir."""

from __future__ import annotations

import re

# An experiment name is one folder name: no separators, no "." or "..", nothing absolute.
NAME_RULE = "letters, digits, '.', '_', '+', '-', starting with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def check_experiment_name(name: str, *, key: str = "experiment") -> str:
    """Return ``name`` if it is a safe single folder name; else raise ``ValueError`` (the rule)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"{key}={name!r}: a run folder name must be {NAME_RULE} (no '/', '\\', '..', "
            "absolute paths or empty names), so that runs stay inside --runs-dir"
        )
    return name
