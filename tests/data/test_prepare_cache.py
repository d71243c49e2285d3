"""A file read into memory is prepared once per process for the same contents and ``data``
section (a notebook's re-runs), and read again when the file or the section changes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from heartflow.data.prepare import prepare
from heartflow.errors import DataError
from heartflow.spec.loading import load_spec
from tests.conftest import heart_csv, heart_spec


def test_a_rerun_reuses_the_prepared_file_until_it_changes(tmp_path: Path) -> None:
    csv = heart_csv(tmp_path / "heart.csv", rows=120, seed=1)
    spec = heart_spec(tmp_path / "spec.yaml")
    first = prepare(load_spec(str(spec)))
    again = prepare(load_spec(str(spec), overrides={"model.hidden.0.units": 3}))
    assert again.x is first.x  # the same encoded rows, not read and encoded again
    assert again.sha256 == hashlib.sha256(csv.read_bytes()).hexdigest()
    with pytest.raises(ValueError):
        again.x[0, 0] = 1.0  # shared between runs: read-only

    other = prepare(load_spec(str(spec), overrides={"data.split.seed": 7}))
    assert other.x is not first.x
    assert not np.array_equal(other.split.test, first.split.test)

    stat = csv.stat()
    heart_csv(csv, rows=150, seed=2)  # the file changes under the same name
    os.utime(csv, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    changed = prepare(load_spec(str(spec)))
    assert changed.rows == 150
    assert changed.sha256 == hashlib.sha256(csv.read_bytes()).hexdigest() != first.sha256

    csv.write_text("age,target\n1,0\n")  # a broken file is checked again, not reused
    os.utime(csv, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000))
    with pytest.raises(DataError):
        prepare(load_spec(str(spec)))
