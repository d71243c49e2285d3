"""The model card flow: ``heartflow card`` / ``hf.model_card``.

The card is rebuilt from what the registry holds now (the training run, every site judged so
far, any recalibration) and logged with the version's run; training, site evaluation and
recalibration call :func:`write_card` as their last step, so the logged card is never stale.
"""

from __future__ import annotations

from prefect import flow

from heartflow.errors import DataError
from heartflow.evaluation.card import card_html, render_card
from heartflow.tracking.registry import model_version
from heartflow.tracking.version_record import card_facts, log_card


def write_card(name: str, version: str) -> str:
    """Render the card of ``name`` version ``version`` and log it (markdown and HTML) with
    the version's run; returns the markdown."""
    card = render_card(card_facts(name, version))
    log_card(name, version, card, card_html(card))
    return card


@flow(name="heartflow-card", persist_result=False, validate_parameters=False)
def card_flow(model_uri: str) -> str:
    """The card of ``models:/name/version`` or ``models:/name@alias``, as it stands now."""
    name, version = model_version(model_uri)
    if not name or not version:
        raise DataError(f"{model_uri!r} is not a registered version; use models:/NAME/VERSION "
                        "or models:/NAME@ALIAS")
    return write_card(name, version)
