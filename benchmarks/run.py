"""heartflow's benchmarks: every target measured side by side with its reference.

    python benchmarks/run.py            # everything (about 10 minutes on 2 cores)
    python benchmarks/run.py --quick    # skip the 10M-row file

Prints a table (figure, heartflow, reference, ratio, target, pass/fail) and rewrites the
table in benchmarks/README.md with the machine it came from. Timings are medians of at
least 3 runs unless the row says otherwise. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
PY = sys.executable
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PREFECT_LOGGING_LEVEL": "ERROR",
       "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def heart_csv() -> str:
    """The real heart.csv when HEARTFLOW_DATA_DIR has it, else a generated 303-row file."""
    data_dir = os.environ.get("HEARTFLOW_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    if (Path(data_dir) / "heart.csv").is_file():
        ENV["HEARTFLOW_DATA_DIR"] = data_dir
        return str(Path(data_dir) / "heart.csv")
    from heartflow.data.synthetic import heart_like

    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "heart.csv"
    heart_like(303, 0).to_csv(path, index=False)
    return str(path)


def timed(cmd: list[str], cwd: str | None = None, env: dict | None = None,
          ok: tuple[int, ...] = (0,)) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KB) of the command's own process, and its stdout (``ok``:
    the exit statuses that are not failures)."""
    # Output goes to files, not pipes: a child that writes more than a pipe holds (a
    # sweep's JSON) would block on a full pipe while we wait for it to exit.
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env or ENV, stdout=out_file,
                                stderr=err_file, text=True)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    if os.waitstatus_to_exitcode(status) not in ok:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return wall, usage.ru_maxrss, out


def median_of(n: int, fn) -> float:
    return statistics.median(fn() for _ in range(n))


def row(figure, heartflow, reference, ratio, target, ok, note=""):
    return {"figure": figure, "heartflow": heartflow, "reference": reference,
            "ratio": ratio, "target": target, "pass": ok, "note": note}


def bench_startup() -> list[dict]:
    spec = str(ROOT / "specs/heart_16.yaml")
    rows = []
    for name, args in (("heartflow --help", ["--help"]),
                       ("heartflow validate heart_16", ["validate", spec])):
        seconds = median_of(5, lambda a=args: timed([PY, "-m", "heartflow", *a])[0])
        rows.append(row(f"{name} (s)", f"{seconds:.3f}", "-", "-", "< 0.5 s", seconds < 0.5))
    return rows


FIT_SCRIPT = r"""
import json, os, sys, time
import numpy as np, keras
from heartflow.spec import load_spec
from heartflow.data.prepare import prepare
from heartflow.model.builder import build_model
from heartflow.model.training import train_model
from heartflow.evaluation import metrics as M
loaded = load_spec(sys.argv[1]); spec = loaded.spec
spec.train.early_stopping = None          # the same 100 epochs for both
p = prepare(loaded)
(xt, yt), (xv, yv), (xs, ys) = p.part("train"), p.part("validation"), p.part("test")
def naive():
    keras.utils.set_random_seed(spec.train.seed)
    m = build_model(spec, p.width)
    m.compile(optimizer=keras.optimizers.Adam(spec.train.optimizer.learning_rate),
              loss="binary_crossentropy", metrics=["accuracy"])
    t = time.perf_counter(); m.fit(xt, yt, batch_size=32, epochs=100, verbose=0)
    return time.perf_counter() - t, M.roc_auc(ys, m.predict(xs, verbose=0).ravel())
def ours():
    r = train_model(spec, p.width, xt, yt, xv, yv, validation_metrics=M.epoch_metrics("binary"))
    return r.seconds, M.roc_auc(ys, np.asarray(r.model(xs)).ravel())
naive(); ours()                                  # warm-up (tracing)
n = [naive() for _ in range(3)]; o = [ours() for _ in range(3)]
print(json.dumps({"naive": n, "ours": o}))
"""


def bench_fit() -> list[dict]:
    _wall, _rss, out = timed([PY, "-c", FIT_SCRIPT, str(ROOT / "specs/heart_16.yaml")])
    data = json.loads(out.strip().splitlines()[-1])
    naive = statistics.median(t for t, _ in data["naive"])
    ours = statistics.median(t for t, _ in data["ours"])
    auc_n = statistics.median(a for _, a in data["naive"])
    auc_o = statistics.median(a for _, a in data["ours"])
    ratio = ours / naive
    return [row("fit heart_16, 100 epochs, batch 32 (s)", f"{ours:.2f}", f"{naive:.2f}",
                f"{ratio:.2f}", "<= 0.35", ratio <= 0.35,
                "heartflow also validates every epoch; naive does not"),
            row("test ROC AUC of that fit", f"{auc_o:.4f}", f"{auc_n:.4f}",
                f"{auc_o - auc_n:+.4f}", "within ±0.03", abs(auc_o - auc_n) <= 0.03)]


def _spec_variant(name: str, edit) -> str:
    """A copy of heart_16.yaml changed by ``edit(text)`` (in benchmarks/out)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    text = edit((ROOT / "specs/heart_16.yaml").read_text())
    path.write_text(text.replace("source: heart-csv", f"source: {heart_csv()}"))
    return str(path)


def _without_cv(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.strip().startswith("cv:"))


def bench_end_to_end(csv: str) -> list[dict]:
    """Like with like: 100 epochs, no early stopping, no CV on either side."""
    work = tempfile.mkdtemp(prefix="heartflow-bench-")
    spec = _spec_variant("e2e_100_epochs.yaml", lambda t: _without_cv(t).replace(
        "  early_stopping: {monitor: val_loss, patience: 10, restore_best: true}\n", ""))
    env = {k: v for k, v in ENV.items() if k != "PREFECT_API_URL"}
    timed([PY, "-m", "heartflow", "run", "-q", spec], cwd=work, env=env)  # create the store
    ours, naive = [], []
    for _ in range(3):  # alternated
        ours.append(timed([PY, "-m", "heartflow", "run", "-q", spec], cwd=work, env=env)[0])
        naive.append(timed([PY, str(ROOT / "benchmarks/naive_heart16.py"), csv, "100", "32"],
                           cwd=work)[0])
    o, n = statistics.median(ours), statistics.median(naive)
    return [row("heartflow run heart_16, 100 epochs, no early stopping, whole process (s)",
                f"{o:.2f}", f"{n:.2f}", f"{o / n:.2f}", "<= 0.6", o / n <= 0.6,
                "reference: the plain script, 100 epochs; medians of 3 alternated")]


def _alternated_runs(work: str, first: str, second: str
                     ) -> tuple[list[float], list[float], float, str]:
    """``heartflow run -q`` of two specs, 3 pairs alternated in one store (made first by a
    run of ``second``): both sides' times, the ratio of their medians and the pairs."""
    env = {k: v for k, v in ENV.items() if k != "PREFECT_API_URL"}
    timed([PY, "-m", "heartflow", "run", "-q", second], cwd=work, env=env)  # the store
    a, b = [], []
    for _ in range(3):
        a.append(timed([PY, "-m", "heartflow", "run", "-q", first], cwd=work, env=env)[0])
        b.append(timed([PY, "-m", "heartflow", "run", "-q", second], cwd=work, env=env)[0])
    pairs = ", ".join(f"{x / y:.2f}" for x, y in zip(a, b, strict=True))
    return a, b, statistics.median(a) / statistics.median(b), pairs


def bench_cv() -> list[dict]:
    """heart_16 as shipped (5x5 CV, trained together) against the same run without CV."""
    work = tempfile.mkdtemp(prefix="heartflow-cv-")
    with_cv = _spec_variant("cv_5x5.yaml", lambda t: t)
    without = _spec_variant("cv_none.yaml", _without_cv)
    a, b, ratio, pairs = _alternated_runs(work, with_cv, without)
    return [row("heartflow run heart_16 with 5x5 CV vs without, whole process (s)",
                f"{statistics.median(a):.2f}", f"{statistics.median(b):.2f}", f"{ratio:.2f}",
                "<= 2.0", ratio <= 2.0, f"medians of 3 alternated; pairs: {pairs}")]


WARM_SCRIPT = r"""
import json, os, sys, time
import heartflow as hf
hf.run(sys.argv[1])  # the first run of the process: imports, tracing, the store
wall, cpu = [], []
for units in (8, 4, 12):  # a notebook's loop: change the network, run again
    t, c = time.perf_counter(), time.process_time()
    hf.run(sys.argv[1], overrides={"model.hidden.0.units": units})
    wall.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
print(json.dumps({"wall": wall, "cpu": cpu, "load": os.getloadavg()[0]}))
"""


def bench_warm() -> list[dict]:
    """Re-runs in one Python process (a notebook): heart_16 with its 5x5 CV, the 2nd-4th
    runs of a child process, each with other hidden units, every figure logged."""
    work = tempfile.mkdtemp(prefix="heartflow-warm-")
    spec = _spec_variant("warm.yaml", lambda t: t)
    env = {k: v for k, v in ENV.items() if k != "PREFECT_API_URL"}
    _wall, _rss, out = timed([PY, "-c", WARM_SCRIPT, spec], cwd=work, env=env)
    data = json.loads(out.strip().splitlines()[-1])
    wall, cpu = statistics.median(data["wall"]), statistics.median(data["cpu"])
    runs = ", ".join(f"{w:.2f}" for w in data["wall"])
    return [row("warm hf.run of heart_16 with 5x5 CV, 2nd-4th run in one process, median (s)",
                f"{wall:.2f}", "-", "-", "<= 1.0 s", wall <= 1.0,
                f"runs {runs}; CPU {cpu:.2f} s; load average {data['load']:.1f} on "
                f"{os.cpu_count()} cores")]


def _streaming_spec(path: Path, rows: int) -> Path:
    spec = OUT / f"scale_{rows}.yaml"
    text = _without_cv((ROOT / "specs/heart_16.yaml").read_text())
    text = text.replace("source: heart-csv", f"source: {path}")
    text = text.replace("split: {test: 0.2, validation: 0.2, stratify: true, seed: 42}",
                        "split: {test: 0.2, validation: 0.2, seed: 42}\n  streaming: true")
    text = text.replace("batch_size: 32", "batch_size: 1024")
    text = text.replace("epochs: 100", "epochs: 1")
    text = text.replace("  early_stopping: {monitor: val_loss, patience: 10, restore_best: true}"
                        "\n", "")
    text = text.replace("model_name: heart-disease", f"model_name: scale-{rows}")
    spec.write_text(text)
    return spec


def bench_scale(quick: bool) -> list[dict]:
    """Streaming: 2M rows against the plain in-memory script (whole processes, medians of
    3 alternated), and throughput and memory at 1M and 10M rows."""
    from heartflow.data.synthetic import write_heart_like
    from heartflow.runtime.prefect_server import LocalPrefectServer

    OUT.mkdir(parents=True, exist_ok=True)
    sizes = [1_000_000, 2_000_000] if quick else [1_000_000, 2_000_000, 10_000_000]
    server = LocalPrefectServer().start()
    env = {**ENV, "PREFECT_API_URL": server.api_url}
    results: dict[int, tuple[float, int]] = {}
    training: dict[int, float] = {}  # training rows/s of the run's own fit (no start-up)
    versus: tuple[list, list, list, list] = ([], [], [], [])
    try:
        server.wait()
        for rows in sizes:
            path = OUT / f"heart_{rows}.csv"
            if not path.exists():
                write_heart_like(path, rows, seed=rows)
            spec = _streaming_spec(path, rows)
            repeats = 3 if rows == 2_000_000 else 1
            for _ in range(repeats):
                work = tempfile.mkdtemp(prefix="heartflow-scale-")
                wall, rss, out = timed([PY, "-m", "heartflow", "run", "-q", "--json",
                                        str(spec)], cwd=work, env=env)
                results[rows] = min((wall, rss), results.get(rows, (wall, rss)))
                outcome = json.loads(out)
                training[rows] = max(training.get(rows, 0.0), outcome["split"]["train"]
                                     / outcome["train_seconds"])
                if rows == 2_000_000:
                    plain, plain_rss, _ = timed([PY, str(ROOT / "benchmarks/naive_heart16.py"),
                                                 str(path), "1", "1024"], cwd=work)
                    for box, value in zip(versus, (wall, rss, plain, plain_rss), strict=True):
                        box.append(value)
    finally:
        server.stop()
    out = []
    if versus[0]:
        ours, ours_rss, plain, plain_rss = (statistics.median(v) for v in versus)
        pairs = ", ".join(f"{a / b:.2f}" for a, b in zip(versus[0], versus[2], strict=True))
        out.append(row("2M rows streamed, 1 epoch, batch 1024, whole process (s)",
                       f"{ours:.1f}", f"{plain:.1f}", f"{ours / plain:.2f}", "<= 1.0",
                       ours / plain <= 1.0, "reference: pandas + one-hot + fit in memory; "
                       f"medians of 3 alternated; pairs: {pairs}"))
        out.append(row("2M rows: peak RSS (MB)", f"{ours_rss / 1024:.0f}",
                       f"{plain_rss / 1024:.0f}", f"{ours_rss / plain_rss:.2f}", "< 1536",
                       ours_rss / 1024 < 1536))
    if 1_000_000 in results and 10_000_000 in results:
        (w1, r1), (w10, r10) = results[1_000_000], results[10_000_000]
        f1, f10 = training[1_000_000], training[10_000_000]
        out.append(row("training rows/s of a streamed epoch, 10M rows vs 1M rows",
                       f"{f10:,.0f}", f"{f1:,.0f}", f"{f10 / f1:.2f}", ">= 0.9 (linear)",
                       f10 / f1 >= 0.9, "the run's own train_seconds: reading, encoding and "
                       "fitting, no start-up"))
        marginal = 9_000_000 / (w10 - w1)
        out.append(row("whole-process rows/s, 10M rows vs 1M rows", f"{10_000_000 / w10:,.0f}",
                       f"{1_000_000 / w1:,.0f}", f"{w1:.0f} s -> {w10:.0f} s", "-", None,
                       f"each extra row costs the same: {marginal:,.0f} rows/s from 1M to "
                       "10M (start-up weighs more at 1M)"))
        out.append(row("peak RSS, 10M rows vs 1M rows (MB)", f"{r10 / 1024:.0f}",
                       f"{r1 / 1024:.0f}", f"{r10 / r1:.2f}", "<= 1.15 (flat)",
                       r10 / r1 <= 1.15))
    return out


def bench_sweep() -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="heartflow-sweep-"))
    base = _without_cv((ROOT / "specs/heart_16.yaml").read_text()).replace(
        "  threshold: 0.5", "  threshold: 0.5\n  cv: {folds: 5, repeats: 1}")
    (work / "base.yaml").write_text(base)
    (work / "sweep.yaml").write_text(
        "sweep:\n  base: base.yaml\n  axes:\n"
        "    model.hidden.0.units: [2, 4, 8, 12, 16, 24, 32, 64]\n")
    whole: dict[int, list[float]] = {1: [], 2: []}
    phase: dict[int, list[float]] = {1: [], 2: []}
    trial: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(3):  # alternated, so a slow spell of the machine hits both
        for workers in (1, 2):
            wall, _rss, out = timed([PY, "-m", "heartflow", "sweep", str(work / "sweep.yaml"),
                                     "--workers", str(workers), "--json"], cwd=work)
            result = json.loads(out)
            whole[workers].append(wall)
            phase[workers].append(result["wall_seconds"])
            trial[workers] += [t["seconds"] for t in result["trials"]]
    one, two = statistics.median(phase[1]), statistics.median(phase[2])
    speedup = one / two
    spread = ", ".join(f"{a / b:.2f}" for a, b in zip(phase[1], phase[2], strict=True))
    beside = statistics.median(trial[2]) / statistics.median(trial[1])
    return [row("sweep of 8 trials (5-fold CV each): 2 workers vs 1, trial phase",
                f"{two:.1f} s", f"{one:.1f} s", f"{speedup:.2f}x", ">= 1.7x",
                speedup >= 1.7, f"medians of 3; pairs: {spread}"),
            row("the same, whole `heartflow sweep` process",
                f"{statistics.median(whole[2]):.1f} s", f"{statistics.median(whole[1]):.1f} s",
                f"{statistics.median(whole[1]) / statistics.median(whole[2]):.2f}x", "-", None,
                "includes start-up and the final table"),
            row("one trial's own time, beside another trial vs alone",
                f"{statistics.median(trial[2]):.2f} s", f"{statistics.median(trial[1]):.2f} s",
                f"{beside:.2f}", "<= 1.15", beside <= 1.15,
                "1.00 = no slowdown from sharing the machine (workers pinned to cores)")]


def bench_seeds() -> list[dict]:
    """A sweep of 6 seeds of heart_16 (no CV), 1 worker: seeds trained together vs one by
    one (``seeds_together: false``), whole sweeps alternated, medians of 3."""
    work = Path(tempfile.mkdtemp(prefix="heartflow-seeds-"))
    (work / "base.yaml").write_text(Path(_spec_variant("seeds_base.yaml", _without_cv))
                                    .read_text())
    for together in ("true", "false"):
        (work / f"seeds_{together}.yaml").write_text(
            "sweep:\n  base: base.yaml\n  seeds: [1, 2, 3, 4, 5, 6]\n"
            f"  seeds_together: {together}\n  workers: 1\n")
    phase: dict[str, list[float]] = {"true": [], "false": []}
    for _ in range(3):
        for together in ("true", "false"):
            _wall, _rss, out = timed([PY, "-m", "heartflow", "sweep",
                                      str(work / f"seeds_{together}.yaml"), "--json"], cwd=work)
            phase[together].append(json.loads(out)["wall_seconds"])
    joint, apart = statistics.median(phase["true"]), statistics.median(phase["false"])
    return [row("sweep of 6 seeds (heart_16, no CV, 1 worker): trained together vs one by one",
                f"{joint:.1f} s", f"{apart:.1f} s", f"{apart / joint:.2f}x", "> 1.0x",
                apart / joint > 1.0, "trial phase, medians of 3 alternated; each seed is "
                "still its own run (evaluation, logging, registry)")]


def bench_import_floor(csv: str) -> list[dict]:
    """What no pipeline can beat: importing the stack heartflow runs on (TensorFlow, MLflow,
    Prefect) as a whole process, against the plain script's whole process."""
    code = "import tensorflow, keras, mlflow, prefect, sklearn"
    floor = statistics.median(timed([PY, "-c", code])[0] for _ in range(3))
    naive = statistics.median(timed([PY, str(ROOT / "benchmarks/naive_heart16.py"), csv,
                                     "100", "32"])[0] for _ in range(3))
    return [row("floor: importing TensorFlow + MLflow + Prefect + scikit-learn vs the plain "
                "script (100 epochs), whole processes (s)", f"{floor:.2f}", f"{naive:.2f}",
                f"{floor / naive:.2f}", "-", None,
                "above 0.6, the e2e target cannot be met by any work after the imports")]


def _load() -> str:
    """The machine's load while a row was measured (other work shares its cores)."""
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def _scoring_store() -> tuple[str, dict, str]:
    """A store (folder, environment, model URI) holding heart_16 (no CV) trained on heart.csv,
    registered with its ONNX graph; made once per benchmark process."""
    if not hasattr(_scoring_store, "made"):
        work = tempfile.mkdtemp(prefix="heartflow-scoring-")
        env = {k: v for k, v in ENV.items() if k != "PREFECT_API_URL"}
        spec = _spec_variant("scoring.yaml", lambda t: _without_cv(t).replace(
            "model_name: heart-disease", "model_name: bench-scoring"))
        timed([PY, "-m", "heartflow", "run", "-q", spec], cwd=work, env=env)
        _scoring_store.made = (work, env, "models:/bench-scoring@champion")
    return _scoring_store.made


def bench_predict(csv: str) -> list[dict]:
    """``heartflow predict`` of 5 rows, whole processes: through the model's ONNX graph
    (onnxruntime), through Keras (``HEARTFLOW_SCORING_RUNTIME=keras``, the former path) and
    the floor of importing TensorFlow alone; 5 rounds alternated, medians."""
    work, env, uri = _scoring_store()
    five = Path(work) / "five.csv"
    five.write_text("".join(Path(csv).read_text().splitlines(keepends=True)[:6]))
    cmd = [PY, "-m", "heartflow", "predict", uri, str(five), "-o", str(Path(work) / "o.csv")]
    folder = Path(work) / "champion"
    if not folder.exists():  # the registered model as a folder, the way the README says
        timed([PY, "-m", "mlflow", "artifacts", "download", "-u", uri, "-d", str(folder)],
              cwd=work, env=env)
    from_folder = [*cmd[:4], str(folder), str(five), "-o", str(Path(work) / "o_folder.csv")]
    # What resolving models:/NAME@ALIAS cannot avoid: MLflow and its SQL store, imported the
    # way heartflow imports them (GC paused, no interpreter teardown).
    store = ("import gc, os; gc.disable(); import mlflow; "
             "from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore; os._exit(0)")
    onnx, keras, floor, folders, stores = [], [], [], [], []
    for _ in range(5):
        onnx.append(timed(cmd, cwd=work, env=env)[0])
        keras.append(timed(cmd, cwd=work, env={**env, "HEARTFLOW_SCORING_RUNTIME": "keras"})[0])
        floor.append(timed([PY, "-c", "import tensorflow"], cwd=work, env=env)[0])
        folders.append(timed(from_folder, cwd=work, env=env)[0])
        stores.append(timed([PY, "-c", store], cwd=work, env=env)[0])
    o, k, f, d, m = (statistics.median(v) for v in (onnx, keras, floor, folders, stores))
    pairs = ", ".join(f"{a / b:.2f}" for a, b in zip(onnx, keras, strict=True))
    folder_pairs = ", ".join(f"{a / b:.2f}" for a, b in zip(folders, onnx, strict=True))
    same = (Path(work) / "o.csv").read_bytes() == (Path(work) / "o_folder.csv").read_bytes()
    return [row("heartflow predict of 5 rows, whole process: ONNX graph vs Keras path (s)",
                f"{o:.2f}", f"{k:.2f}", f"{o / k:.2f}", "<= 1.5 s", o <= 1.5,
                f"medians of 5 alternated; pairs: {pairs}; {_load()}"),
            row("heartflow predict of 5 rows (ONNX) vs `python -c \"import tensorflow\"` (s)",
                f"{o:.2f}", f"{f:.2f}", f"{o / f:.2f}", "-", None,
                "below 1.0: scoring no longer pays TensorFlow's import"),
            row("floor of models:/NAME@ALIAS: importing MLflow and its SQL store vs heartflow "
                "predict of 5 rows (s)", f"{m:.2f}", f"{o:.2f}", f"{m / o:.2f}", "-", None,
                "the registry cannot be read through MLflow's public API without these "
                "imports"),
            row("heartflow predict of 5 rows from a model folder (no registry, no MLflow) vs "
                "from models:/NAME@ALIAS (s)", f"{d:.2f}", f"{o:.2f}", f"{d / o:.2f}",
                "<= 1.5 s", d <= 1.5, f"medians of 5 alternated; pairs: {folder_pairs}; "
                f"output file {'identical to' if same else 'DIFFERENT from'} the registry's")]


def bench_monitor() -> list[dict]:
    """``heartflow monitor`` against ``heartflow predict`` of the same 1,000,000 generated
    heart-like rows: whole processes and peak RSS, 3 pairs alternated, medians."""
    from heartflow.data.synthetic import write_heart_like

    work, env, uri = _scoring_store()
    path = OUT / "heart_1000000.csv"
    if not path.exists():
        write_heart_like(path, 1_000_000, seed=1_000_000)
    mon, pred = [], []
    for _ in range(3):
        pred.append(timed([PY, "-m", "heartflow", "predict", uri, str(path), "-o",
                           str(Path(work) / "scored.csv")], cwd=work, env=env)[:2])
        mon.append(timed([PY, "-m", "heartflow", "monitor", uri, str(path), "--json"],
                         cwd=work, env=env, ok=(0, 6))[:2])  # 6: drift found
    m, p = statistics.median(t for t, _ in mon), statistics.median(t for t, _ in pred)
    m_rss = statistics.median(r for _, r in mon) / 1024
    p_rss = statistics.median(r for _, r in pred) / 1024
    pairs = ", ".join(f"{a[0] / b[0]:.2f}" for a, b in zip(mon, pred, strict=True))
    return [row("heartflow monitor vs heartflow predict, 1M rows, whole process (s)",
                f"{m:.1f}", f"{p:.1f}", f"{m / p:.2f}", "<= 1.2", m / p <= 1.2,
                f"medians of 3 alternated; pairs: {pairs}; {_load()}"),
            row("heartflow monitor, 1M rows: peak RSS (MB); reference: predict",
                f"{m_rss:.0f}", f"{p_rss:.0f}", f"{m_rss / p_rss:.2f}", "< 1536",
                m_rss < 1536)]


def bench_bootstrap() -> list[dict]:
    """heart_16 as shipped with the optimism bootstrap (``evaluate.validation: {method:
    bootstrap, resamples: 200}``) against the same spec without it, whole processes, 3
    pairs alternated, medians."""
    work = tempfile.mkdtemp(prefix="heartflow-bootstrap-")
    without = _spec_variant("bootstrap_none.yaml", lambda t: t)
    with_it = _spec_variant("bootstrap_200.yaml", lambda t: t.replace(
        "  threshold: 0.5\n",
        "  threshold: 0.5\n  validation: {method: bootstrap, resamples: 200}\n"))
    a, b, ratio, pairs = _alternated_runs(work, with_it, without)
    return [row("heartflow run heart_16 with the 200-refit optimism bootstrap vs without, "
                "whole process (s)", f"{statistics.median(a):.1f}",
                f"{statistics.median(b):.1f}", f"{ratio:.2f}", "<= 3.0", ratio <= 3.0,
                f"heart_16 as shipped (5x5 CV) on both sides; medians of 3 alternated; "
                f"pairs: {pairs}; {_load()}")]


COLUMNS = ("figure", "heartflow", "reference", "ratio", "target", "pass", "measured", "note")


def render(rows: list[dict]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |\n" + "|---" * len(COLUMNS) + "|\n"
    return head + "".join("| " + " | ".join(str(r[c]) for c in COLUMNS) + " |\n"
                          for r in rows)


def _cells(r: dict) -> dict:
    """A measured row as table cells: its verdict computed, its time stamped."""
    return {**r, "pass": _verdict(r["pass"]), "measured": time.strftime("%Y-%m-%d %H:%M")}


def merge(table: str, rows: list[dict]) -> list[dict]:
    """The README table's rows with ``rows`` replacing those of the same figure (a partial
    run, ``--only``, keeps the other rows and their own times); new figures at the end."""
    old = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(COLUMNS) and cells[0] not in ("figure", "---"):
            old.append(dict(zip(COLUMNS, cells, strict=True)))
    fresh = {r["figure"]: r for r in rows}
    merged = [fresh.pop(r["figure"], r) for r in old]
    return merged + [r for r in rows if r["figure"] in fresh]


def _verdict(ok: bool | None) -> str:
    """pass / FAIL from the row's own measurement; '-' for a row with no target."""
    return "-" if ok is None else "pass" if ok else "FAIL"


def machine() -> str:
    import multiprocessing

    mem = ""
    try:
        kb = int(next(line for line in open("/proc/meminfo") if line.startswith(
            "MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration):
        pass
    return (f"{platform.processor() or platform.machine()}, {multiprocessing.cpu_count()} "
            f"cores{mem}, {platform.system()} {platform.release()}, Python "
            f"{platform.python_version()}, no GPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the 10M-row file")
    parser.add_argument("--only", nargs="*", help="startup fit e2e cv scale sweep seeds warm "
                        "predict monitor bootstrap")
    args = parser.parse_args()
    csv = heart_csv()
    chosen = args.only or ["startup", "fit", "e2e", "cv", "scale", "sweep", "seeds", "warm",
                           "predict", "monitor", "bootstrap"]
    rows: list[dict] = []
    for name, fn in (("startup", bench_startup), ("fit", bench_fit),
                     ("e2e", lambda: bench_end_to_end(csv) + bench_import_floor(csv)),
                     ("cv", bench_cv), ("scale", lambda: bench_scale(args.quick)),
                     ("sweep", bench_sweep), ("seeds", bench_seeds), ("warm", bench_warm),
                     ("predict", lambda: bench_predict(csv)), ("monitor", bench_monitor),
                     ("bootstrap", bench_bootstrap)):
        if name in chosen:
            print(f"... {name}", file=sys.stderr, flush=True)
            rows += fn()
    rows = [_cells(r) for r in rows]
    print(render(rows))
    readme = ROOT / "benchmarks" / "README.md"
    text = readme.read_text() if readme.exists() else ""
    marker = "<!-- table -->"
    stamp = f"Machine: {machine()}. Each row says when it was last measured.\n\n"
    if marker in text:
        before, table = text.split(marker)
        keep = merge(table, rows) if args.only else rows
        readme.write_text(before + marker + "\n" + stamp + render(keep))


if __name__ == "__main__":
    main()
