"""Start-up helpers: the GC pause around imports must always end."""

from __future__ import annotations

import gc

import pytest

from heartflow.runtime.gc_pause import imports_without_gc


@pytest.fixture(autouse=True)
def _restore_gc():
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_gc_is_paused_inside_and_resumed_after() -> None:
    gc.enable()
    with imports_without_gc():
        assert not gc.isenabled()
        import json  # noqa: F401
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0  # start-up objects are not rescanned later


def test_gc_resumes_after_an_import_error() -> None:
    gc.enable()
    with pytest.raises(ImportError), imports_without_gc():
        import heartflow_no_such_module  # noqa: F401
    assert gc.isenabled()


def test_gc_left_off_when_it_was_off() -> None:
    gc.disable()
    with imports_without_gc():
        pass
    assert not gc.isenabled()
