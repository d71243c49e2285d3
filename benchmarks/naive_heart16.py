"""The reference: the plain Keras script a user would write for heart_16, without tracking.

load + encode (29 inputs) + model.fit on numpy arrays + evaluate test ROC AUC.
Run as a whole process: `python benchmarks/naive_heart16.py PATH_TO_heart.csv [EPOCHS
[BATCH]]` (defaults 100 and 32; the streaming comparison uses 1 and 1024 on a large file).
Prints JSON: fit seconds, test AUC, whole-process seconds.
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


def main(path: str, epochs: int = 100, batch_size: int = 32, seed: int = 42) -> dict:
    frame = pd.read_csv(path)
    y = frame["target"].to_numpy(dtype="float32")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(frame))
    n_test = round(len(frame) * 0.2)
    test, train = order[:n_test], order[n_test:]
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
    auc = roc_auc_score(y[test], model.predict(x[test], verbose=0).ravel())
    return {"inputs": int(x.shape[1]), "parameters": int(model.count_params()),
            "fit_seconds": fit_seconds, "test_roc_auc": float(auc)}


if __name__ == "__main__":
    result = main(sys.argv[1], *(int(a) for a in sys.argv[2:4]))
    result["process_seconds"] = time.perf_counter() - START
    print(json.dumps(result))
