"""Relative folder settings and the default store resolve against the project root, so a
notebook whose kernel runs in ``examples/`` sees what the README's command typed at the
repository root means."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from heartflow.data.sources import NAMED_DATASETS, data_dir, project_root, resolve_source
from heartflow.errors import DataError


@pytest.fixture
def clone(tmp_path: Path, monkeypatch) -> Path:
    """``tmp/repo`` (pyproject.toml at its root) with ``examples/``, and ``tmp/shared/data``
    holding a heart.csv; the working folder is ``examples/``, as a notebook kernel's is."""
    repo = tmp_path / "repo"
    (repo / "examples").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "heart.csv").write_text("age,target\n61,1\n")
    monkeypatch.delenv("HEARTFLOW_PROJECT_DIR", raising=False)
    monkeypatch.chdir(repo / "examples")
    return repo


def test_project_root_is_the_nearest_folder_with_pyproject(clone: Path) -> None:
    assert project_root() == clone.resolve()


def test_project_root_is_the_working_folder_outside_any_project(tmp_path: Path,
                                                                 monkeypatch) -> None:
    monkeypatch.delenv("HEARTFLOW_PROJECT_DIR", raising=False)
    if any((p / "pyproject.toml").is_file() for p in tmp_path.resolve().parents):
        pytest.skip("the temporary folder lies inside a project")
    monkeypatch.chdir(tmp_path)
    assert project_root() == tmp_path.resolve()


def test_heartflow_project_dir_names_the_root(clone: Path, tmp_path: Path,
                                              monkeypatch) -> None:
    monkeypatch.setenv("HEARTFLOW_PROJECT_DIR", str(tmp_path / "shared"))
    assert project_root() == (tmp_path / "shared").resolve()


def test_relative_data_dir_from_the_notebook_folder_finds_the_readme_folder(
        clone: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HEARTFLOW_DATA_DIR", "../shared/data")  # typed at the repo root
    expected = (tmp_path / "shared" / "data" / "heart.csv").resolve()
    assert data_dir().resolve() == (tmp_path / "shared" / "data").resolve()
    assert resolve_source("heart-csv").path.resolve() == expected


def test_offline_error_says_what_the_variable_held_and_where_it_resolved(
        clone: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HEARTFLOW_DATA_DIR", "../nowhere")
    monkeypatch.setenv("HEARTFLOW_CACHE_DIR", str(tmp_path / "cache"))
    offline = dataclasses.replace(NAMED_DATASETS["heart-csv"], url="http://127.0.0.1:9/h.csv")
    monkeypatch.setitem(NAMED_DATASETS, "heart-csv", offline)
    with pytest.raises(DataError) as info:
        resolve_source("heart-csv")
    message = str(info.value)
    assert "HEARTFLOW_DATA_DIR='../nowhere'" in message
    assert f"project root {clone.resolve()}" in message
    assert str(tmp_path.resolve() / "nowhere") in message and "missing" in message


def test_default_store_is_at_the_project_root(clone: Path, monkeypatch) -> None:
    import mlflow

    from heartflow.tracking.store import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    if mlflow.is_tracking_uri_set():
        pytest.skip("a tracking URI was set in this process (mlflow.set_tracking_uri)")
    assert tracking_uri() == f"sqlite:///{clone.resolve() / 'mlflow.db'}"


def test_configure_sets_where_runs_go_and_data_comes_from(clone: Path, tmp_path: Path,
                                                          monkeypatch) -> None:
    import mlflow

    import heartflow as hf

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///placeholder.db")
    monkeypatch.setenv("HEARTFLOW_DATA_DIR", "x")
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    try:
        settings = hf.configure(tracking_uri=uri, data_dir="../../shared/data")  # Python's rule
        assert mlflow.get_tracking_uri() == uri
    finally:
        mlflow.set_tracking_uri(None)  # other tests' stores come from the environment
    assert settings.tracking_uri == uri
    assert Path(settings.project_root) == clone.resolve()
    assert str((tmp_path / "shared" / "data").resolve()) in settings.data_dir
    assert len(repr(settings).splitlines()) == 4
