"""Every MLflow name heartflow writes or reads: tags, artifact paths, experiments, aliases.

One home, so a reader finds what a run, a version or an experiment carries in one place,
and a writer and its reader can never spell a name two ways (the way Ludwig keeps its
keys in ``constants.py``). Names that take a part (a split, a site, a metric) are
functions.
"""

from __future__ import annotations

import re

PREFIX = "heartflow."

# -- aliases of registered versions --------------------------------------------------------
CHAMPION = "champion"
CHALLENGER = "challenger"

# -- run tags: what the run trained on and how ---------------------------------------------
SPEC_NAME = "heartflow.spec_name"
SPEC_PATH = "heartflow.spec_path"
SPEC_HASH = "heartflow.spec_hash"
DATA_SHA256 = "heartflow.data_sha256"
DATA_SOURCE = "heartflow.data_source"
ROWS = "heartflow.rows"
STREAMING = "heartflow.streaming"
SEED = "heartflow.seed"
INPUT_WIDTH = "heartflow.input_width"
MISSING_RULE = "heartflow.missing_rule"
OVERRIDES = "heartflow.overrides"
EPOCHS_RUN = "heartflow.epochs_run"
BEST_EPOCH = "heartflow.best_epoch"
PARAMETERS = "heartflow.parameters"
THRESHOLD = "heartflow.threshold"
THRESHOLD_RULE = "heartflow.threshold_rule"
TRAINED_TOGETHER = "heartflow.trained_together"
TRAINED_WITH_FOLDS = "heartflow.trained_with_folds"  # its CV folds' networks beside it
SAMPLE_SIZE_ANTICIPATED = "heartflow.sample_size.anticipated"
SAMPLE_SIZE_WARNING = "heartflow.sample_size.warning"
STATUS_REASON = "heartflow.status_reason"
REGISTERED_MODEL = "heartflow.registered_model"
REGISTERED_VERSION = "heartflow.registered_version"
BASELINES = "heartflow.baselines"
BASELINE = "heartflow.baseline"
BASELINE_FOR = "heartflow.baseline_for"
PREFECT_FLOW_RUN = "heartflow.prefect_flow_run"
SPLIT_KEY_FORMAT = "heartflow.split.key_format"  # how the split's keys were made (manifest
# keys; a streamed run's seen file holds their first 64 bits)
SPLIT_KEY_ID = "heartflow.split.key_id"  # which secret keyed them (a one-way name of it)
DEPLOYMENT = "heartflow.deployment"
RETRAIN_REASON = "heartflow.retrain.reason"  # why a scheduled retraining ran
SCORING_RUNTIME = "heartflow.scoring.runtime"  # onnxruntime, or keras: why (run and model)


def split_size(part: str) -> str:
    """Rows of one part of the split (train, validation, test)."""
    return f"heartflow.split.{part}"


def undefined(metric: str) -> str:
    """Why a metric is undefined (NaN is never logged as a metric)."""
    return f"heartflow.undefined.{metric}"


def library_version(dist: str) -> str:
    """The installed version of a library the run used."""
    return f"heartflow.version.{dist}"


def device(fact: str) -> str:
    """Where training ran: requested, used, reason, gpus, cpus."""
    return f"heartflow.device.{fact}"


# -- run tags: which process owns a run (stale-run detection) ------------------------------
HOST = "heartflow.host"
PID = "heartflow.pid"
PID_START = "heartflow.pid_start"

# -- sweeps ---------------------------------------------------------------------------------
SWEEP = "heartflow.sweep"
WORKER = "heartflow.worker"
BEST_RUN = "heartflow.best_run"
CHOSEN_BY = "heartflow.chosen_by"
LEADER_VS_RUNNER_UP = "heartflow.leader_vs_runner_up"


def rank_metric(metric: str) -> str:
    """The metric a run is ranked by on development rows (optimism-corrected, else CV mean,
    else validation), logged under one name so the MLflow UI sorts as ``compare`` ranks."""
    return f"rank_{metric}"

# -- the promotion gate and the registry's history (version tags, mirrored on the run) ------
PREVIOUS_CHAMPION = "heartflow.previous_champion"
PROMOTION_PREFIX = "heartflow.promotion."
PROMOTED = "heartflow.promotion.promoted"
PROMOTION_REASON = "heartflow.promotion.reason"
PROMOTION_AT = "heartflow.promotion.at"
PROMOTION_BY = "heartflow.promotion.by"  # who moved champion by hand (promote, rollback)
ROLLBACK_BY = "heartflow.rollback.by"
APPROVED_BY = "heartflow.approval.by"  # heartflow approve: who, when, why
APPROVED_AT = "heartflow.approval.at"
APPROVAL_REASON = "heartflow.approval.reason"
ROLLBACK_REPLACED_BY = "heartflow.rollback.replaced_by"
ROLLBACK_RESTORED_FROM = "heartflow.rollback.restored_from"


def promotion(field: str) -> str:
    """One field of the gate's decision (see ``evaluation.gate.Decision``)."""
    return f"{PROMOTION_PREFIX}{field}"


GATE_FIELDS = ("rule", "difference", "ci_low", "ci_high")  # the evidence the gate used


def gate(field: str) -> str:
    """The gate's rule, the difference it judged and its 95% interval, and its rows."""
    return f"heartflow.gate.{field}"


# -- other sites: evaluations and recalibrations ---------------------------------------------
SITE_PREFIX = "heartflow.site."  # version tags: heartflow.site.<site> (summary), .<site>.run


def site_summary(site: str) -> str:
    """A version's one-line summary of its figures at a site."""
    return f"{SITE_PREFIX}{site}"


def site_run(site: str) -> str:
    """The evaluation run behind a site's summary."""
    return f"{SITE_PREFIX}{site}.run"


EVALUATED_MODEL_URI = "heartflow.evaluation.model_uri"
EVALUATED_SITE = "heartflow.evaluation.site"
EVALUATED_MODEL_NAME = "heartflow.evaluation.model_name"
EVALUATED_MODEL_VERSION = "heartflow.evaluation.model_version"
RECALIBRATED_FROM = "heartflow.recalibrated_from"  # version tag: the source version
RECALIBRATION = "heartflow.recalibration"  # version tag: "<method> on <site> (<n> rows)"
RECALIBRATION_MODEL_URI = "heartflow.recalibration.model_uri"
RECALIBRATION_SITE = "heartflow.recalibration.site"
RECALIBRATION_METHOD = "heartflow.recalibration.method"
# updating by evidence (heartflow update): version tags, mirrored on the evaluations run
UPDATE_METHOD = "heartflow.update.method"  # none, intercept, logistic or revision (chosen)
UPDATE_REQUESTED = "heartflow.update.requested"  # auto or the forced method
UPDATE_TESTS = "heartflow.update.tests"  # JSON: [{update, against, statistic, df, p_value}]
UPDATE_REASON = "heartflow.update.reason"
UPDATE_SITE = "heartflow.update.site"
UPDATE_DATA_SHA256 = "heartflow.update.data_sha256"  # the site's rows the update was fitted on
UPDATE_FROM = "heartflow.update.from"  # the source version
UPDATE_MODEL_URI = "heartflow.update.model_uri"  # run tag: the source model's URI
UPDATE_DRIFT_EVENT = "heartflow.update.drift_event"  # the Prefect event that started it
UPDATE_GATE_SCORING = "heartflow.update.gate_scoring"  # how the gate scored it on its rows

# -- monitoring: batches judged against the model's development reference -------------------
MONITORING_REFERENCE = "heartflow.monitoring.reference"  # training run: why it has none
MONITORED_MODEL_URI = "heartflow.monitoring.model_uri"
MONITORED_MODEL_NAME = "heartflow.monitoring.model_name"
MONITORED_MODEL_VERSION = "heartflow.monitoring.model_version"
MONITORED_SITE = "heartflow.monitoring.site"
MONITORED_AS_OF = "heartflow.monitoring.as_of"  # ISO date the batch stands for
MONITORING_DRIFT = "heartflow.monitoring.drift"  # "true" / "false"
MONITORING_FAILED_CHECKS = "heartflow.monitoring.failed_checks"  # comma-separated names
DRIFT_EVENT = "heartflow.model.drift"  # the Prefect event a drifting batch emits


def model_resource(name: str, version: str) -> str:
    """The Prefect resource id of a model version (drift events are about it)."""
    return f"heartflow.model.{name}.{version}"


def check_metric(check: str) -> str:
    """The MLflow metric of a monitoring check's value (``age.psi``, ``net_benefit@0.25``);
    characters a metric name cannot hold become ``_``."""
    return "monitor/" + re.sub(r"[^A-Za-z0-9_.\- /]+", "_", check.replace("@", "_at_"))


# -- experiments ----------------------------------------------------------------------------


def evaluations_experiment(model_name: str | None) -> str:
    """Where a model's site evaluations and recalibrations are recorded."""
    return f"{model_name or 'models'}-evaluations"


def monitoring_experiment(model_name: str | None) -> str:
    """Where a model's monitoring runs (one per batch) are recorded."""
    return f"{model_name or 'models'}-monitoring"


# -- artifact paths within a run -------------------------------------------------------------
MODEL_ARTIFACT = "model"
SPEC_ARTIFACT = "spec/spec.yaml"
RESOLVED_SPEC_ARTIFACT = "spec/resolved.yaml"
SWEEP_ARTIFACT = "spec/sweep.yaml"
ENCODER_ARTIFACT = "preprocessing/encoder.json"
POPULATION_ARTIFACT = "data/population.json"
MANIFEST_ARTIFACT = "split/manifest.csv"  # in memory: keyed key, part of every row
SEEN_ARTIFACT = "split/seen.npy"  # streamed: keyed-key prefixes of train+validation rows
PLOTS_FOLDER = "plots"
REPORT_ARTIFACT = "report.html"
CV_REPORT_ARTIFACT = "report_cv.html"
SUBGROUPS_ARTIFACT = "evaluation/subgroups.csv"
CV_FOLDS_ARTIFACT = "evaluation/cv_folds.csv"  # each fold's figures (repeat, fold, rows)
OPTIMISM_ARTIFACT = "evaluation/optimism.csv"
CARD_ARTIFACT = "model_card.md"
CARD_HTML_ARTIFACT = "model_card.html"
MONITORING_REFERENCE_ARTIFACT = "monitoring/reference.json"  # with the training run
MONITORING_REPORT_ARTIFACT = "monitoring/report.json"  # with each monitoring run
MONITORING_HTML_ARTIFACT = "monitoring/report.html"
UPDATE_EVIDENCE_ARTIFACT = "updating/evidence.json"  # candidates, tests and choice (update runs)
