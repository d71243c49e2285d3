"""Where data comes from: named public data sets, local paths, or URLs with a pinned sha256.

A named data set is looked for first in ``$HEARTFLOW_DATA_DIR`` (CI points it
at ``../shared/data``), then in the download cache (``$HEARTFLOW_CACHE_DIR``,
default ``~/.cache/heartflow``), and only then downloaded from its public URL.
Every downloaded file is checked against its pinned sha256.

A relative ``HEARTFLOW_DATA_DIR`` or ``HEARTFLOW_CACHE_DIR`` is resolved against the
project root (:func:`project_root`), not the working folder: a notebook's kernel runs in
the notebook's folder (``examples/``), yet ``HEARTFLOW_DATA_DIR=../shared/data`` typed at
the repository root means the same folder there as for ``heartflow run``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from heartflow.errors import DataError
from heartflow.spec.loading import LoadedSpec, located

UCI_COLUMNS = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang",
               "oldpeak", "slope", "ca", "thal", "num"]


@dataclass(frozen=True)
class NamedDataset:
    """A public data set heartflow knows by name."""

    name: str
    filename: str
    url: str
    sha256: str
    relative_paths: tuple[str, ...]
    columns: list[str] | None = field(default=None)
    description: str = ""
    # The same bytes with other line endings (the copy we pinned has CRLF).
    also_accepted: tuple[str, ...] = ()


UCI_FOLDER = "https://archive.ics.uci.edu/ml/machine-learning-databases/heart-disease/"


def _uci_site(name: str, site: str, sha256: str, description: str) -> NamedDataset:
    """One site of the UCI Heart Disease study, in UCI's processed 14-column form."""
    filename = f"processed.{site}.data"
    return NamedDataset(name=name, filename=filename, url=UCI_FOLDER + filename, sha256=sha256,
                        relative_paths=(f"uci-heart/{filename}", filename),
                        columns=UCI_COLUMNS, description=description)


NAMED_DATASETS: dict[str, NamedDataset] = {
    "heart-csv": NamedDataset(
        name="heart-csv", filename="heart.csv",
        url="https://storage.googleapis.com/download.tensorflow.org/data/heart.csv",
        sha256="a91c81831bb2126e5fde6ce4ebde147a78429da12005108a6677ba57ecde9244",
        relative_paths=("heart.csv",),
        also_accepted=("3369f450e6fdbad6019755437f0228109cb457e62b8cf7c4b29799ba1f8fc884",
                       "91a0c6b8d59a1ec09d3c6c181be7fc707a0c3603fa8524cf41ca14b324b700d5"),
        description="Cleveland heart disease, Keras tutorial version (303 rows, target)."),
    **{d.name: d for d in (
        _uci_site("uci-cleveland", "cleveland",
                  "a74b7efa387bc9d108d7d0115d831fe9b414b29ae7124f331b622b4efa0427c8",
                  "UCI processed Cleveland file (303 rows, no header, '?' missing, num 0-4)."),
        _uci_site("uci-switzerland", "switzerland",
                  "834a405ccf5b66ab4056bb77794adc8df0b7125186454c0a1d002d33c6c3b314",
                  "UCI processed Zurich/Basel file (123 rows; chol 0 means not measured)."),
        _uci_site("uci-va", "va",
                  "e7c93d8d0d2acdadfa4c5e8de768e2191e7f618b952e29623f1f0d5949ff6b8f",
                  "UCI processed V.A. Long Beach file (200 rows; chol 0 means not measured)."),
    )},
}


@dataclass(frozen=True)
class ResolvedSource:
    """A data source resolved to a local file."""

    path: Path
    columns: list[str] | None
    origin: str


PROJECT_DIR_ENV = "HEARTFLOW_PROJECT_DIR"
PROJECT_MARKER = "pyproject.toml"
DATA_DIR_ENV, CACHE_DIR_ENV = "HEARTFLOW_DATA_DIR", "HEARTFLOW_CACHE_DIR"


def project_root(start: Path | None = None) -> Path:
    """The folder relative settings are resolved against, and the local store's home.

    ``$HEARTFLOW_PROJECT_DIR`` when set; else the nearest folder, from ``start`` (the
    working folder) upward, holding a ``pyproject.toml`` (a clone of heartflow, or your
    own project); else the working folder itself.
    """
    given = os.environ.get(PROJECT_DIR_ENV)
    if given:
        return Path(given).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_MARKER).is_file():
            return folder
    return here


def _root_reason(root: Path) -> str:
    """How :func:`project_root` chose ``root``, in words."""
    if os.environ.get(PROJECT_DIR_ENV):
        return f"${PROJECT_DIR_ENV}"
    if (root / PROJECT_MARKER).is_file():
        return f"the nearest folder above the working folder {Path.cwd()} holding {PROJECT_MARKER}"
    return f"the working folder (no {PROJECT_MARKER} above it)"


def setting_path(value: str) -> Path:
    """A folder setting's path: ``~`` expanded; a relative one joined to the project root."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(os.path.normpath(project_root() / path))


def describe_setting(variable: str) -> str:
    """What an environment variable holding a folder held and where it resolved, in words."""
    value = os.environ.get(variable)
    if not value:
        return f"{variable} is not set"
    path = setting_path(value)
    state = "a folder" if path.is_dir() else "not a folder" if path.exists() else "missing"
    if Path(value).expanduser().is_absolute():
        return f"{variable}={value!r} ({state})"
    root = project_root()
    return (f"{variable}={value!r}, resolved against the project root {root} "
            f"({_root_reason(root)}) to {path} ({state})")


def data_dir() -> Path | None:
    """The local folder searched first for named data sets, if set (relative: from the
    project root, :func:`project_root`)."""
    value = os.environ.get(DATA_DIR_ENV)
    return setting_path(value) if value else None


def cache_dir() -> Path:
    """Where downloads are kept (relative: from the project root)."""
    value = os.environ.get(CACHE_DIR_ENV)
    return setting_path(value) if value else Path.home() / ".cache" / "heartflow"


def _is_url(source: str) -> bool:
    return source.startswith(("https://", "http://"))


def _local_candidates(source: str, base_dir: str | None) -> list[Path]:
    path = Path(source).expanduser()
    if path.is_absolute():
        return [path]
    out = [Path(base_dir) / path] if base_dir else []
    return [*out, Path.cwd() / path]


def check_source(source: str, base_dir: str | None) -> str | None:
    """A problem with ``source`` that is visible without reading it, or None."""
    if source in NAMED_DATASETS or _is_url(source):
        return None
    candidates = _local_candidates(source, base_dir)
    if any(p.is_file() for p in candidates):
        return None
    if any(p.is_dir() for p in candidates):
        return f"{source!r} is a directory; give the path of a CSV file"
    tried = ", ".join(str(p) for p in dict.fromkeys(candidates))
    return (f"data file {source!r} not found (looked at {tried}). Give a path to a CSV "
            f"file or a named data set: {', '.join(NAMED_DATASETS)}")


def check_spec_source(loaded: LoadedSpec) -> None:
    """Raise a located SpecError when the spec's ``data.source`` names no readable file."""
    problem = check_source(loaded.spec.data.source, loaded.base_dir)
    if problem:
        raise located(loaded, ("data", "source"), problem)


def resolve_source(source: str, base_dir: str | None = None,
                   sha256: str | None = None) -> ResolvedSource:
    """Turn a spec's ``data.source`` into a readable local file."""
    named = NAMED_DATASETS.get(source)
    if named is not None:
        return ResolvedSource(_fetch_named(named), named.columns, f"named:{named.name}")
    if _is_url(source):
        name = source.rstrip("/").rsplit("/", 1)[-1] or "data.csv"
        return ResolvedSource(_download(source, name, sha256), None, source)
    for candidate in _local_candidates(source, base_dir):
        if candidate.is_file():
            return ResolvedSource(candidate.resolve(), None, str(candidate))
    raise DataError(check_source(source, base_dir) or f"cannot read {source!r}")


def _fetch_named(named: NamedDataset) -> Path:
    local = data_dir()
    if local is not None:
        for rel in named.relative_paths:
            if (local / rel).is_file():
                return local / rel
    return _download(named.url, named.filename, named.sha256, hint=named)


def _download(url: str, filename: str, sha256: str | None,
              hint: NamedDataset | None = None) -> Path:
    target_dir = cache_dir() / (sha256[:16] if sha256 else hashlib.sha256(
        url.encode()).hexdigest()[:16])
    target = target_dir / filename
    accepted = {sha256, *(hint.also_accepted if hint else ())} if sha256 else set()
    if target.is_file() and (not accepted or file_sha256(target) in accepted):
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            payload = response.read()
    except OSError as exc:
        where = hint.relative_paths[0] if hint else filename
        looked = ""
        if hint is not None and data_dir() is not None:
            looked = (f"; {describe_setting(DATA_DIR_ENV)}, and it holds no "
                      f"{' or '.join(hint.relative_paths)}")
        raise DataError(
            f"cannot download {url} ({getattr(exc, 'reason', exc)}){looked}. If this machine "
            f"is offline, put the file at $HEARTFLOW_DATA_DIR/{where} (set HEARTFLOW_DATA_DIR "
            f"to a folder; a relative one is resolved against the project root) or at "
            f"{target}") from None
    got = hashlib.sha256(payload).hexdigest()
    if accepted and got not in accepted:
        raise DataError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}. "
                        "The file changed upstream or the download was corrupted; nothing "
                        "was saved")
    with tempfile.NamedTemporaryFile(dir=target_dir, delete=False) as tmp:
        tmp.write(payload)
    os.replace(tmp.name, target)
    return target


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
