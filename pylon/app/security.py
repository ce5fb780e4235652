"""What keeps ``pylon view`` safe by default: the ``[app]`` extra check, Gradio's environment
(no telemetry, its file cache inside the viewer's own folder), the credentials of ``--auth-file``
or ``$PYLON_VIEW_AUTH``, the warning for a server reachable beyond this machine, and
:class:`FileGuard`, the middleware that refuses every file request outside the viewer's cache.

Gradio (>= 6.20) already refuses ``/gradio_api/file=`` paths it did not create or was not
allowed; :class:`FileGuard` is a second, narrower rule of pylon's own in front of it: only
files whose real path (symlinks resolved) lies inside the viewer's cache folder are served, and
a URL is never fetched (Gradio would fetch public ``http(s)`` URLs on the server's behalf).
"""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

APP_EXTRA_HINT = "pylon view needs gradio: pip install 'pylon-localization[app]'"
AUTH_ENV = "PYLON_VIEW_AUTH"
# Gradio's routes that send a file named by the client; ``proxy=`` fetches a URL.
_FILE_ROUTE = re.compile(r"^(?:/gradio_api)?/file(?:=|/)(?P<path>.*)$", re.DOTALL)
_PROXY_ROUTE = re.compile(r"^(?:/gradio_api)?/proxy=", re.DOTALL)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def require_gradio(*, load: bool = True):
    """Import gradio (or, with ``load=False``, only check that it is installed, so that
    :func:`prepare_environment` can still run before its import), or raise one line saying
    which extra to install.

    Returns:
        The ``gradio`` module (``None`` with ``load=False``).

    Raises:
        ImportError: :data:`APP_EXTRA_HINT`.
    """
    if not load:
        try:
            found = importlib.util.find_spec("gradio") is not None
        except ValueError:  # sys.modules["gradio"] is None: blocked, as if not installed
            found = False
        if not found:
            raise ImportError(APP_EXTRA_HINT)
        return None
    try:
        return importlib.import_module("gradio")
    except ImportError:
        raise ImportError(APP_EXTRA_HINT) from None


ENVIRONMENT = (
    "GRADIO_ANALYTICS_ENABLED",
    "GRADIO_TEMP_DIR",
    "GRADIO_EXAMPLES_CACHE",
    "GRADIO_RUN_HISTORY",
)


def prepare_environment(cache: Path, environ: dict | None = None) -> dict[str, str | None]:
    """Point Gradio at the viewer's cache and turn its telemetry off; call before importing
    gradio (some values are read at import; the rest when the app is built).

    Args:
        cache: the viewer's own cache folder, also Gradio's temporary folder (its uploads and
            copies), so the overlays rendered into it are served without a copy; Gradio's
            examples cache goes to ``cache/examples``.
        environ: the environment to set (default ``os.environ``).

    Returns:
        The earlier values of :data:`ENVIRONMENT` (``None``: unset), for
        :func:`restore_environment`.
    """
    env = os.environ if environ is None else environ
    earlier = {key: env.get(key) for key in ENVIRONMENT}
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    env["GRADIO_TEMP_DIR"] = str(cache)
    env["GRADIO_EXAMPLES_CACHE"] = str(cache / "examples")
    env["GRADIO_RUN_HISTORY"] = "False"
    return earlier


def restore_environment(earlier: dict[str, str | None], environ: dict | None = None) -> None:
    """Put back what :func:`prepare_environment` changed, except telemetry, which stays off."""
    env = os.environ if environ is None else environ
    for key, value in earlier.items():
        if key == "GRADIO_ANALYTICS_ENABLED":
            continue
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value


def parse_auth(text: str, source: str) -> tuple[str, str]:
    """``user:password`` -> ``(user, password)``; the password may hold ``:``.

    Raises:
        ValueError: no ``:``, or an empty user or password (naming ``source``, never the text).
    """
    user, sep, password = text.strip().partition(":")
    if not sep or not user or not password:
        raise ValueError(f"{source}: expected one line user:password (both non-empty)")
    return user, password


def read_auth(auth_file: Path | None, environ: Mapping[str, str] | None = None):
    """The login the server asks for: from ``auth_file`` (its first non-empty line,
    ``user:password``) or else ``$PYLON_VIEW_AUTH``; never from the command line.

    Args:
        auth_file: a file only its owner can read (refused when group or others can).
        environ: where to look for :data:`AUTH_ENV` (default ``os.environ``).

    Returns:
        ``(user, password)``, or None when neither is given.

    Raises:
        ValueError: a malformed value, or an auth file others can read.
        OSError: the file cannot be read.
    """
    env = os.environ if environ is None else environ
    if auth_file is not None:
        mode = auth_file.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ValueError(
                f"{auth_file}: readable by other users (mode {stat.S_IMODE(mode):o}); "
                f"run chmod 600 {auth_file}"
            )
        lines = [line for line in auth_file.read_text().splitlines() if line.strip()]
        return parse_auth(lines[0] if lines else "", str(auth_file))
    if env.get(AUTH_ENV):
        return parse_auth(env[AUTH_ENV], f"${AUTH_ENV}")
    return None


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches (127.0.0.0/8, ::1, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, has_auth: bool) -> str | None:
    """The warning for a server other machines can reach without a login, else None."""
    if is_loopback(host) or has_auth:
        return None
    return (
        f"warning: --host {host} makes the viewer reachable from other machines WITHOUT a "
        "login: anyone who can reach this port sees the cases and can run the model. Set "
        f"${AUTH_ENV}=user:password or --auth-file FILE, or use an SSH tunnel to 127.0.0.1."
    )


def inside(path: str | os.PathLike, roots: Iterable[Path]) -> bool:
    """True when the real path of ``path`` (symlinks resolved) lies inside one of ``roots``
    (themselves resolved by the caller)."""
    real = Path(os.path.realpath(path))
    return any(real == root or root in real.parents for root in roots)


class FileGuard:
    """ASGI middleware in front of Gradio: a file route (``/gradio_api/file=``,
    ``/gradio_api/file/``) is served only when the file's real path lies inside ``roots``; a
    URL in it, or the ``proxy=`` route, gets 403. Everything else passes through.

    Args:
        app: the ASGI app it wraps (Starlette builds it from ``Middleware(FileGuard, roots=...)``).
        roots: folders whose files may be served (the viewer's cache).
    """

    def __init__(self, app, roots: Iterable[str | os.PathLike]):
        self.app = app
        self.roots = [Path(os.path.realpath(root)) for root in roots]

    def allows(self, path: str) -> bool:
        """Whether the (already percent-decoded) request path may go on to Gradio."""
        if _PROXY_ROUTE.match(path):
            return False
        match = _FILE_ROUTE.match(path)
        if match is None:
            return True
        target = match["path"]
        if not target or _SCHEME.match(target) or "\x00" in target:
            return False
        return inside(target, self.roots)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not self.allows(scope.get("path", "")):
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": b"File not allowed."})
            return
        await self.app(scope, receive, send)
