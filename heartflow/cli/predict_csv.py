"""`heartflow predict`: score a CSV of raw records with a registered model, over the API:
read the records, check them (notes on stderr), score them with ``Model.predict``, write
the records with the prediction columns added."""

from __future__ import annotations

import sys

from heartflow import api


def predict_csv(model_uri: str, input_csv: str, output: str | None,
                plugins: list[str] | None = None) -> None:
    """Read raw rows, check and score them, write rows + prediction columns."""
    records = api.read_records(input_csv)  # a missing file is refused before any loading
    model = api.load_model(model_uri, plugins=plugins)
    for note in model.check(records).notes():
        sys.stderr.write(f"note: {note}\n")
    scored = model.predict(records)
    out = records.copy()
    for column in scored.columns:
        out[column] = scored[column].to_numpy()
    if output:
        out.to_csv(output, index=False)
        sys.stderr.write(f"wrote {len(out)} rows to {output}\n")
    else:
        out.to_csv(sys.stdout, index=False)
