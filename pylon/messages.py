"""The one-line text of an error, shared by the command line and the viewer's page."""

import re

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_NUMPY_SCALAR = re.compile(r"\bnp\.(?:u?int\d*|float\d*|bool_?|str_)\(([^()]*)\)")


def message_of(err: Exception | str) -> str:
    """The one-line text of an error: ANSI escapes removed, ``np.int64(3)`` shown as ``3``,
    line breaks joined, and what a missing file is called kept (``OSError`` text).

    Args:
        err: the error, or a message.

    Returns:
        One line.
    """
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        text = f"{err.filename}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    text = _NUMPY_SCALAR.sub(r"\1", _ANSI.sub("", text))
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
