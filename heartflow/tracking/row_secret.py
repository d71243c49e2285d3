"""The secret that keys row keys before they leave the process (split manifests, the
promotion gate's rows; see :class:`heartflow.data.split.RowKeyer`).

Where it comes from, in order:

1. ``HEARTFLOW_ROW_KEY_SECRET``, when set: a team sets the same value on every machine
   that trains against its tracking server (from its secrets manager; at least
   :data:`MIN_CHARS` characters, e.g. ``python -c "import secrets; print(secrets.token_hex(32))"``),
   so manifests written on one machine are read by gates on another.
2. For a local store (``sqlite:///.../mlflow.db``, or a file store): a random secret
   created once beside the store, in ``.heartflow-row-key`` (owner-only, 0600), created
   atomically under a file lock, so processes starting together end with one secret.
3. Otherwise (a tracking server and no variable): a :class:`TrackingError` before
   training, saying to set the variable.

The secret itself is never printed, logged, tagged or recorded: only
:attr:`RowKeyer.key_id <heartflow.data.split.RowKeyer.key_id>`, a one-way name of it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from urllib.parse import urlsplit

from filelock import FileLock

from heartflow.errors import TrackingError
from heartflow.tracking.store import redact, tracking_uri

SECRET_ENV = "HEARTFLOW_ROW_KEY_SECRET"
MIN_CHARS = 16
SECRET_FILE = ".heartflow-row-key"
_GENERATE = 'python -c "import secrets; print(secrets.token_hex(32))"'


def row_key_secret(uri: str | None = None) -> bytes:
    """The row-key secret for the tracking store ``uri`` (the configured one when None)."""
    value = os.environ.get(SECRET_ENV, "")
    if value:
        if len(value) < MIN_CHARS:
            raise TrackingError(f"{SECRET_ENV} is too short ({len(value)} characters; at "
                                f"least {MIN_CHARS}): set it to a long random value, e.g. "
                                f"from {_GENERATE}, the same on every machine that trains")
        return value.encode("utf-8")
    uri = tracking_uri() if uri is None else uri
    folder = local_store_folder(uri)
    if folder is None:
        raise TrackingError(
            f"the tracking store {redact(uri)} is shared, so the row keys heartflow records "
            f"(split manifests) must be keyed by a secret every training machine shares: set "
            f"{SECRET_ENV} (at least {MIN_CHARS} random characters, e.g. from {_GENERATE}) "
            "on every machine that trains, and keep it secret")
    return _local_secret(folder)


def local_store_folder(uri: str) -> str | None:
    """The folder of a local store (where its row-key secret lives), or None for a server."""
    parts = urlsplit(uri)
    if parts.scheme == "sqlite":
        path = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else ""
        if not path or path.startswith(":memory:"):
            return os.path.abspath(".")
        return os.path.dirname(os.path.abspath(path)) or "."
    if parts.scheme == "file":
        return os.path.abspath(parts.path)
    if parts.scheme == "" or (len(parts.scheme) == 1 and os.name == "nt"):  # a plain path
        return os.path.abspath(uri)
    return None


def _local_secret(folder: str) -> bytes:
    path = os.path.join(folder, SECRET_FILE)
    found = _read(path)
    if found is not None:
        return found
    os.makedirs(folder, exist_ok=True)
    with FileLock(path + ".lock"):
        found = _read(path)  # another process may have made it while this one waited
        if found is not None:
            return found
        fd, tmp = tempfile.mkstemp(prefix=SECRET_FILE + ".", dir=folder)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, path)  # never replaces a secret that exists: fails instead
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links: the lock serialises us
                os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    found = _read(path)
    if found is None:
        raise TrackingError(f"could not create the row-key secret {path}")
    return found


def _read(path: str) -> bytes | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TrackingError(f"the row-key secret {path} is readable by others "
                            f"(mode {stat.S_IMODE(info.st_mode):o}): chmod 600 {path}")
    with open(path, encoding="ascii") as fh:
        text = fh.read().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < 16:
        raise TrackingError(f"the row-key secret {path} is damaged (not 64 hex digits); "
                            "restore it from a backup (manifests recorded with the old one "
                            "can no longer be matched) or delete it to start a new one")
    return secret
