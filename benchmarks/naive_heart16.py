"""The reference: the plain Keras script a user would write for heart_16, without tracking.

load + encode (29 inputs) + model.fit on numpy arrays + evaluate validation and test ROC AUC.
The rows are split in the shares of heartflow's heart_16 (`split: {test: 0.2, validation:
0.2}`): the network is fitted on 60% of the rows, validated on 20% (scored once, after
fitting: this script has no per-epoch validation) and scored on the last 20%. (heartflow's
split by row hash gives each part a binomial count around its share: 193/65/45 of
heart.csv's 303 rows, here 181/61/61.)
Run as a whole process: `python benchmarks/naive_heart16.py PATH_TO_heart.csv [EPOCHS
[BATCH]]` (defaults 100 and 32; the streaming comparison uses 1 and 1024 on a large file).
Prints JSON: rows per part, fit seconds, validation and test AUC, whole-process seconds.
"""

import json
import os
import sys
import time

START = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

CATEGORICAL = ["sex", "cp", "fbs", "restecg", "exang", "ca", "thal"]
NUMERIC = ["age", "trestbps", "chol", "thalach", "oldpeak", "slope"]
TEST, VALIDATION = 0.2, 0.2  # heartflow's split of heart_16: train 60%


def main(path: str, epochs: int = 100, batch_size: int = 32, seed: int = 42) -> dict:
    frame = pd.read_csv(path)
    y = frame["target"].to_numpy(dtype="float32")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(frame))
    n_test, n_validation = round(len(frame) * TEST), round(len(frame) * VALIDATION)
    test, validation = order[:n_test], order[n_test:n_test + n_validation]
    train = order[n_test + n_validation:]
    x = pd.get_dummies(frame[CATEGORICAL].astype(str), dtype="float32")
    numeric = frame[NUMERIC].astype("float32")
    numeric = (numeric - numeric.iloc[train].mean()) / numeric.iloc[train].std(ddof=0)
    x = pd.concat([numeric, x], axis=1).to_numpy(dtype="float32")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(shape=(x.shape[1],)),
                              keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="binary_crossentropy",
                  metrics=["accuracy"])
    fit_start = time.perf_counter()
    model.fit(x[train], y[train], batch_size=batch_size, epochs=epochs, verbose=0)
    fit_seconds = time.perf_counter() - fit_start
    validation_auc = roc_auc_score(y[validation],
                                   model.predict(x[validation], verbose=0).ravel())
    auc = roc_auc_score(y[test], model.predict(x[test], verbose=0).ravel())
    return {"inputs": int(x.shape[1]), "parameters": int(model.count_params()),
            "rows": {"train": len(train), "validation": len(validation), "test": len(test)},
            "fit_seconds": fit_seconds, "validation_roc_auc": float(validation_auc),
            "test_roc_auc": float(auc)}


if __name__ == "__main__":
    result = main(sys.argv[1], *(int(a) for a in sys.argv[2:4]))
    result["process_seconds"] = time.perf_counter() - START
    print(json.dumps(result))
