"""`heartflow predict`: score a CSV of raw records with a registered model."""

from __future__ import annotations

import sys

from heartflow.data.table import read_csv
from heartflow.errors import DataError
from heartflow.model.scorer import missing_columns


def predict_csv(model_uri: str, input_csv: str, output: str | None,
                plugins: list[str] | None = None) -> None:
    """Read raw rows, check columns, score, write rows + prediction columns."""
    from heartflow import api
    from heartflow.data.dataset import prepare_features

    table = read_csv(input_csv)
    model = api.load_model(model_uri, plugins=plugins)
    meta = model.scorer.meta
    frame = table.frame
    missing = missing_columns(frame, meta)
    if missing:
        raise DataError(f"{input_csv}: missing required column(s): {', '.join(missing)}")
    extra = [c for c in frame.columns if c not in set(model.columns)]
    if extra:
        sys.stderr.write(f"note: ignoring column(s) the model does not use: {', '.join(extra)}\n")
    typed = prepare_features(frame, meta["numeric"], meta["categorical"], meta["na_values"],
                             table.where, input_csv, meta.get("missing_codes"))
    unseen = model.scorer.encoder.unseen_levels(typed)
    if unseen:
        sys.stderr.write("note: categories not seen in training (encoded as all zeros): "
                         + "; ".join(f"{c}: {', '.join(v)}" for c, v in unseen.items()) + "\n")
    missing_cells = int(typed.isna().sum().sum())
    if missing_cells:
        sys.stderr.write(f"note: {missing_cells} missing value(s) filled by the training rule "
                         "(numeric median, categorical mode); column 'imputed' counts them "
                         "per row\n")
    result = model.scorer.predict(typed)
    out = frame.copy()
    for column in result.columns:
        out[column] = result[column].to_numpy()
    if output:
        out.to_csv(output, index=False)
        sys.stderr.write(f"wrote {len(out)} rows to {output}\n")
    else:
        out.to_csv(sys.stdout, index=False)
