"""register.promote.require_approval: a version the gate passes stays challenger until a
person approves it; the approval records who, when and why."""

from __future__ import annotations

import getpass
import os

import pytest

from heartflow.errors import RegistryError
from tests.conftest import heart_csv, heart_spec

pytestmark = pytest.mark.slow
MODEL = "heart-test"


def test_a_passed_version_waits_for_approval(tmp_path, prefect_server) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    import heartflow as hf

    heart_csv(tmp_path / "heart.csv", rows=300)
    spec = heart_spec(tmp_path / "spec.yaml", epochs=20)
    spec.write_text(spec.read_text().replace("rule: point,",
                                             "rule: point, require_approval: true,"))
    outcome = hf.run(str(spec))
    assert outcome.promoted is False and "awaiting approval" in outcome.decision
    client = MlflowClient()
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(MODEL, "champion")  # nobody approved yet
    done = hf.approve(MODEL, outcome.version, reason="reviewed by the board")
    assert done.version == outcome.version and done.previous is None
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == outcome.version
    tags = client.get_model_version(MODEL, outcome.version).tags
    expected = os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()
    assert tags["heartflow.approval.by"] == expected
    assert tags["heartflow.approval.reason"] == "reviewed by the board"
    assert tags["heartflow.approval.at"][:4].isdigit()
    with pytest.raises(RegistryError, match="not awaiting approval"):
        hf.approve(MODEL, outcome.version)  # approved once is enough
    with pytest.raises(RegistryError) as unknown:
        hf.approve(MODEL, "9")
    assert unknown.value.exit_code == 5
