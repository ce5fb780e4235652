"""pylon in the clinic: findings as standard DICOM objects, DICOMweb and a DICOM network node.

Layering: above ``pylon.inference`` (it turns :class:`pylon.inference.Prediction` results into
DICOM), below the viewer and the command line. Needs the ``[clinical]`` extra (highdicom,
pynetdicom, dicomweb-client): :func:`require` names it in one line where it is missing.
"""

from __future__ import annotations

import importlib


def require(module: str, feature: str = "DICOM output"):
    """Import ``module`` of the ``[clinical]`` extra, or raise one clear line saying what to
    install.

    Args:
        module: e.g. ``"highdicom"``, ``"pynetdicom"``, ``"dicomweb_client"``.
        feature: what needs it, for the message.

    Returns:
        The imported module.

    Raises:
        ImportError: the extra is missing.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{feature} needs {module}: pip install 'pylon-localization[clinical]'"
        ) from None
