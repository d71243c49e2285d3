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


def test_tensorflow_startup_noise_is_filtered_not_discarded() -> None:
    from heartflow.runtime.quiet_import import startup_lines_to_show

    said = "\n".join([
        "WARNING: All log messages before absl::InitializeLog() is called are written to "
        "STDERR",
        "I0000 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not "
        "be used.",
        "I0000 port.cc:153] oneDNN custom operations are on. You may see slightly different "
        "numerical results.",
        "E0000 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call "
        "to cuInit: UNKNOWN ERROR (303)",
        "W0000 dso_loader.cc:78] Could not load dynamic library 'libcudnn.so.9'; dlerror: "
        "libcudnn.so.9: cannot open shared object file",
        "W0000 some_op.cc:10] a real warning the user must read",
    ])
    without_driver = startup_lines_to_show(said, nvidia_driver=False)
    assert [line.split("]")[0] for line in without_driver] == ["W0000 dso_loader.cc:78",
                                                               "W0000 some_op.cc:10"]
    with_driver = startup_lines_to_show(said, nvidia_driver=True)
    assert any("failed call to cuInit" in line for line in with_driver)  # a GPU worker sees it
    assert len(with_driver) == 3
