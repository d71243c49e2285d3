"""Updating a binary risk model by evidence: the closed testing procedure of Vergouwe et al.,
"A closed testing procedure to select an appropriate method for updating prediction models",
Stat Med 2017;36:4529-4539.

Four nested updates of a model's risks p on a site's rows, least extensive first:

- ``none``: the model as it is (0 parameters estimated at the site).
- ``intercept``: recalibration in the large, logit(p') = a + logit(p) (1 parameter; a
  binomial GLM with logit(p) as offset).
- ``logistic``: logistic recalibration, logit(p') = a + b logit(p) (2 parameters).
- ``revision``: the output layer re-estimated on the frozen hidden layers,
  logit(p') = c' + w' . h, where h is what the output layer reads (the last hidden layer's
  activations; the encoded inputs for a network without hidden layers). Parameters: the rank
  of [1, h] on the site's rows (columns constant there, e.g. ReLU units that never fire, or
  linearly dependent ones, e.g. a one-hot group beside the intercept, are dropped and get a
  weight of 0). It nests ``logistic``: logit(p) = w . h + c is linear in h.

Each is fitted by maximum likelihood (statsmodels GLM, Binomial, logit link). Nested fits are
compared with likelihood-ratio tests: 2 (log L_bigger - log L_smaller) against a chi-square
on the difference in parameters.

**The procedure** (``auto``, alpha 0.05). Every test is against the most extensive update
(model revision; df p + 1, p and p - 1 for a revision of p + 1 parameters), and the
extensiveness increases progressively from the original model, as the paper's abstract puts
it ("from a minimum (the original model) to a maximum (a completely revised model)") and as
published implementations of it run; the paper's full text was not at hand to check more:

1. revision against none: not significant -> ``none`` (no evidence the model needs updating);
2. else revision against intercept: not significant -> ``intercept``;
3. else revision against logistic: not significant -> ``logistic``;
4. else ``revision``.

An update is chosen only once every less extensive one was rejected against revision
(``intercept``: test 1; ``logistic``: tests 1-2; ``revision``: tests 1-3), which keeps the
chance of updating a model that needs no update near alpha (the closure principle). The
tests, each with its LR statistic, df and p-value, are reported in the order run.

**Refusals.** An update is refused, with the reason, when the rows are too few to estimate it
(fewer than :data:`MIN_ROWS` rows, or fewer than :data:`MIN_EVENTS_PER_PARAMETER` rows of the
rarer outcome per parameter estimated), when no finite fit exists (separation: the risks or
activations order the outcomes (almost) perfectly, the fit does not converge, or its linear
predictor runs past +-:data:`MAX_LOGIT`), when logistic recalibration's slope is at or below
0 (it would reverse the model's ranking), or when revision adds nothing to logistic
recalibration (the output layer's inputs span no more than logit(p) at the site). The
procedure then runs over the updates left, with the most extensive of them in revision's
place; with none left it chooses ``none``.

A forced method (``intercept``, ``logistic``, ``revision``) is fitted and reported with its
test against ``none``, whatever that test says; a refused forced method is a DataError.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import linalg, stats
from statsmodels.genmod import families
from statsmodels.genmod.generalized_linear_model import GLM
from statsmodels.tools.sm_exceptions import PerfectSeparationError, PerfectSeparationWarning

from heartflow.errors import DataError
from heartflow.model.recalibration import logit
from heartflow.model.revision import revised_network
from heartflow.model.scorer import Scorer

METHODS = ("none", "intercept", "logistic", "revision")  # nested, least extensive first
CHOICES = ("auto", *METHODS)
ALPHA = 0.05
MIN_ROWS = 50
MIN_EVENTS_PER_PARAMETER = 10  # rows of the rarer outcome per parameter estimated at the site
MAX_LOGIT = 30.0  # |linear predictor| beyond this (a risk within 1e-13 of 0 or 1): separation
RANK_TOLERANCE = 1e-7  # relative, of float32 activations: columns dependent up to it are dropped
NAN = math.nan


@dataclass(frozen=True)
class Update:
    """One candidate update fitted on the site's rows, or refused (``refused`` says why)."""

    method: str
    parameters: int  # estimated at the site (0 for none)
    log_likelihood: float = NAN
    refused: str = ""
    intercept: float = NAN  # intercept and logistic: logit(p') = intercept + slope logit(p)
    slope: float = NAN
    kernel: tuple[float, ...] = ()  # revision: one weight per column of h (0 where dropped)
    bias: float = NAN  # revision: the output layer's new bias
    fitted: np.ndarray | None = field(default=None, repr=False, compare=False)  # p' per row

    @property
    def usable(self) -> bool:
        """Fitted, not refused."""
        return not self.refused

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: method, parameters, log-likelihood, refusal and coefficients."""
        out: dict[str, Any] = {"method": self.method, "parameters": self.parameters,
                               "log_likelihood": _num(self.log_likelihood),
                               "refused": self.refused or None}
        if self.method in ("intercept", "logistic") and self.usable:
            out.update(intercept=self.intercept, slope=self.slope)
        if self.method == "revision" and self.usable:
            out.update(bias=self.bias, kernel=list(self.kernel))
        return out


@dataclass(frozen=True)
class LikelihoodRatioTest:
    """``update`` against the less extensive ``against`` on the same rows."""

    update: str
    against: str
    statistic: float  # 2 (log L_update - log L_against)
    df: int
    p_value: float
    alpha: float = ALPHA

    @property
    def significant(self) -> bool:
        """p < alpha: evidence that ``update`` fits better than ``against``."""
        return self.p_value < self.alpha

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"update": self.update, "against": self.against, "statistic": self.statistic,
                "df": self.df, "p_value": self.p_value, "significant": self.significant}

    def line(self) -> str:
        """One line: "revision vs none: LR 12.30 on 5 df, p = 0.031"."""
        return (f"{self.update} vs {self.against}: LR {self.statistic:.2f} on {self.df} df, "
                f"p = {self.p_value:.3g}")


@dataclass(frozen=True)
class UpdateEvidence:
    """The candidates, the tests run and the update chosen."""

    requested: str  # auto or a forced method
    method: str  # chosen
    reason: str
    alpha: float
    rows: int
    events: int
    updates: dict[str, Update]
    tests: tuple[LikelihoodRatioTest, ...]

    @property
    def chosen(self) -> Update:
        """The chosen update's fit."""
        return self.updates[self.method]

    def rule(self) -> dict[str, Any] | None:
        """The recalibration rule (``heartflow.model.recalibration``) of a chosen intercept or
        logistic update; None for none and revision."""
        u = self.chosen
        if self.method not in ("intercept", "logistic"):
            return None
        return {"method": self.method, "intercept": u.intercept, "slope": u.slope,
                "rows": self.rows}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"requested": self.requested, "method": self.method, "reason": self.reason,
                "alpha": self.alpha, "rows": self.rows, "events": self.events,
                "tests": [t.as_dict() for t in self.tests],
                "updates": {m: u.as_dict() for m, u in self.updates.items()}}


def _num(value: float) -> float | None:
    return None if value != value else value


def required_rows(parameters: int) -> tuple[int, int]:
    """(rows, rows of the rarer outcome) needed to estimate ``parameters`` at a site."""
    return MIN_ROWS, MIN_EVENTS_PER_PARAMETER * parameters


def too_few(y: np.ndarray, parameters: int) -> str:
    """Why the rows are too few to estimate ``parameters`` ('' when they suffice)."""
    rows, per_class = required_rows(parameters)
    events = int(np.sum(y > 0.5))
    rarer = min(events, len(y) - events)
    if len(y) < rows:
        return f"{len(y)} rows; at least {rows} are needed"
    if rarer < per_class:
        which = "with" if events <= len(y) - events else "without"
        return (f"{rarer} rows {which} the outcome; {parameters} parameter(s) need at least "
                f"{per_class} ({MIN_EVENTS_PER_PARAMETER} per parameter)")
    return ""


def log_likelihood(y: np.ndarray, p: np.ndarray) -> float:
    """Bernoulli log-likelihood of outcomes ``y`` under risks ``p`` (kept within the
    recalibration's EPS of 0 and 1, as the scorer's logit keeps them)."""
    z = logit(p)
    return float(np.sum(y * z - np.logaddexp(0.0, z)))


def _glm(y: np.ndarray, x: np.ndarray, offset: np.ndarray | None = None
         ) -> tuple[np.ndarray, float, np.ndarray] | str:
    """(parameters, log-likelihood, fitted risks) of a binomial GLM, or why there is none."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = GLM(y, x, family=families.Binomial(), offset=offset).fit(maxiter=100)
        except PerfectSeparationError:
            return "separation: the fit has no finite maximum"
        except (np.linalg.LinAlgError, ValueError) as error:
            return f"the logistic fit failed ({error})"
    if any(issubclass(w.category, PerfectSeparationWarning) for w in caught):
        return "separation: the fit has no finite maximum"
    params = np.asarray(fit.params, dtype=np.float64)
    eta = x @ params + (0.0 if offset is None else offset)
    if not (fit.converged and np.isfinite(params).all() and np.isfinite(fit.llf)):
        return "the logistic fit did not converge (near-separation)"
    if np.abs(eta).max() > MAX_LOGIT:
        return (f"near-separation: fitted risks within {1 / (1 + math.exp(MAX_LOGIT)):.0e} of "
                "0 or 1")
    return params, float(fit.llf), 1.0 / (1.0 + np.exp(-eta))


def independent_columns(h: np.ndarray) -> list[int]:
    """Columns of ``h`` that, with an intercept, span the column space of [1, h] (pivoted QR
    of the centred columns; columns constant on these rows are dropped)."""
    if h.shape[1] == 0:
        return []
    centred = h - h.mean(axis=0)
    scale = np.abs(centred).max()
    if scale == 0:
        return []
    _, r, pivot = linalg.qr(centred / scale, mode="economic", pivoting=True)
    diag = np.abs(np.diag(r))
    rank = int(np.sum(diag > RANK_TOLERANCE * max(diag[0], 1e-300) * max(h.shape)))
    return sorted(int(c) for c in pivot[:rank])


def fit_updates(y: np.ndarray, p: np.ndarray, h: np.ndarray | None,
                revision_refused: str = "") -> dict[str, Update]:
    """Every candidate update of risks ``p`` on outcomes ``y``; ``h`` (rows by width) is what
    the output layer reads (None, with ``revision_refused`` saying why, when there is no such
    layer to revise)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    z = logit(p)
    ones = np.ones((len(y), 1))
    out = {"none": Update("none", 0, log_likelihood(y, p), fitted=np.clip(p, 0, 1))}
    if len(np.unique(y)) < 2:
        why = "every row has the same outcome"
        return {**out, **{m: Update(m, k, refused=why) for m, k in
                          (("intercept", 1), ("logistic", 2), ("revision", 0))}}

    def fitted(method: str, parameters: int, x: np.ndarray, offset: np.ndarray | None = None
               ) -> Update | tuple[np.ndarray, float, np.ndarray]:
        why = too_few(y, parameters)
        result = why or _glm(y, x, offset)
        return Update(method, parameters, refused=result) if isinstance(result, str) else result

    got = fitted("intercept", 1, ones, offset=z)
    out["intercept"] = got if isinstance(got, Update) else Update(
        "intercept", 1, got[1], intercept=float(got[0][0]), slope=1.0, fitted=got[2])
    if np.ptp(z) <= 1e-9:
        out["logistic"] = Update("logistic", 2, refused="all risks are identical: no slope")
    else:
        got = fitted("logistic", 2, np.column_stack([ones, z]))
        if isinstance(got, Update):
            out["logistic"] = got
        elif got[0][1] <= 0:
            out["logistic"] = Update("logistic", 2, refused=(
                f"the slope on logit(p) is {got[0][1]:.3f}: at or below 0 it would reverse "
                "the model's ranking of patients"))
        else:
            out["logistic"] = Update("logistic", 2, got[1], intercept=float(got[0][0]),
                                     slope=float(got[0][1]), fitted=got[2])
    out["revision"] = _revision(y, h, revision_refused, fitted)
    return out


def _revision(y: np.ndarray, h: np.ndarray | None, refused: str, fitted: Any) -> Update:
    if h is None:
        return Update("revision", 0, refused=refused or "no output layer to revise")
    h = np.asarray(h, dtype=np.float64)
    keep = independent_columns(h)
    parameters = len(keep) + 1
    if parameters <= 2:
        return Update("revision", parameters, refused=(
            f"the output layer's {h.shape[1]} input(s) vary in {len(keep)} independent "
            "direction(s) on these rows: revision would add nothing to logistic "
            "recalibration"))
    got = fitted("revision", parameters, np.column_stack([np.ones(len(y)), h[:, keep]]))
    if isinstance(got, Update):
        return got
    kernel = np.zeros(h.shape[1])
    kernel[keep] = got[0][1:]
    return Update("revision", parameters, got[1], kernel=tuple(float(k) for k in kernel),
                  bias=float(got[0][0]), fitted=got[2])


def likelihood_ratio(bigger: Update, smaller: Update, alpha: float = ALPHA
                     ) -> LikelihoodRatioTest:
    """The likelihood-ratio test of ``bigger`` against the nested ``smaller``."""
    df = bigger.parameters - smaller.parameters
    statistic = max(0.0, 2.0 * (bigger.log_likelihood - smaller.log_likelihood))
    return LikelihoodRatioTest(bigger.method, smaller.method, statistic, df,
                               float(stats.chi2.sf(statistic, df)), alpha)


def closed_test(updates: dict[str, Update], alpha: float = ALPHA
                ) -> tuple[str, tuple[LikelihoodRatioTest, ...], str]:
    """(chosen method, tests run in order, reason): the closed testing procedure over the
    updates that were not refused (see the module docstring)."""
    chain = [m for m in METHODS if updates[m].usable]
    top = chain[-1]
    if top == "none":
        refusals = "; ".join(f"{m}: {updates[m].refused}" for m in METHODS[1:])
        return "none", (), f"every update was refused ({refusals})"
    tests = []
    for method in chain[:-1]:
        test = likelihood_ratio(updates[top], updates[method], alpha)
        tests.append(test)
        if not test.significant:
            if method == "none":
                why = (f"no evidence that the model needs updating: {test.line()} "
                       f">= {alpha:g}")
            else:
                why = (f"{test.line()} >= {alpha:g}: {method} fits as well as {top}; "
                       "earlier tests rejected every less extensive update")
            return method, tuple(tests), why
    return top, tuple(tests), (f"every less extensive update was rejected ({tests[-1].line()} "
                               f"< {alpha:g})")


def choose_update(y: np.ndarray, p: np.ndarray, h: np.ndarray | None, method: str = "auto",
                  alpha: float = ALPHA, revision_refused: str = "") -> UpdateEvidence:
    """Fit every candidate on the site's rows and choose one: by the closed testing
    procedure (``auto``) or as forced (reported with its test against none)."""
    if method not in CHOICES:
        raise ValueError(f"unknown update method {method!r}; use one of {', '.join(CHOICES)}")
    y = np.asarray(y, dtype=np.float64).ravel()
    updates = fit_updates(y, p, h, revision_refused)
    rows, events = len(y), int(np.sum(y > 0.5))
    if method == "auto":
        chosen, tests, reason = closed_test(updates, alpha)
        refused = [f"{m} refused: {u.refused}" for m, u in updates.items() if u.refused]
        if refused and tests:  # (with no test, the reason lists the refusals already)
            reason += " (" + "; ".join(refused) + ")"
        return UpdateEvidence(method, chosen, reason, alpha, rows, events, updates, tests)
    if method == "none":
        return UpdateEvidence(method, "none", "forced: no update", alpha, rows, events,
                              updates, ())
    if updates[method].refused:
        raise DataError(f"{method} update refused: {updates[method].refused}")
    test = likelihood_ratio(updates[method], updates["none"], alpha)
    return UpdateEvidence(method, method, f"forced; {test.line()}", alpha, rows, events,
                          updates, (test,))


CROSS_FIT_FOLDS = 5


def cross_fitted(y: np.ndarray, p: np.ndarray, h: np.ndarray | None, method: str,
                 seed: int = 0) -> np.ndarray:
    """Each row's risk under ``method`` refitted without the row's fold (5 folds, stratified
    by outcome): the honest estimate of what a new patient from the site gets, beside the
    apparent figure on the rows the update was fitted on. Rows of a fold whose fit does not
    exist (separation) are NaN."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if method == "none":
        return p
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for label in (0.0, 1.0):
        rows = rng.permutation(np.flatnonzero(y == label))
        fold[rows] = np.arange(len(rows)) % CROSS_FIT_FOLDS
    z, ones = logit(p), np.ones((len(y), 1))
    out = np.full(len(y), NAN)
    for k in range(CROSS_FIT_FOLDS):
        held, kept = fold == k, fold != k
        offset = z if method == "intercept" else np.zeros(len(y))
        if method == "intercept":
            x = ones
        elif method == "logistic":
            x = np.column_stack([ones, z])
        else:
            x = np.column_stack([ones, np.asarray(h)[:, independent_columns(h[kept])]])
        got = _glm(y[kept], x[kept], offset[kept])
        if not isinstance(got, str):
            out[held] = 1.0 / (1.0 + np.exp(-(x[held] @ got[0] + offset[held])))
    return out


def require_updatable(scorer: Scorer, model_uri: str) -> None:
    """A DataError unless the model's risks can be updated: a binary model whose risks are
    the network's own or pass through an intercept or logistic recalibration (an isotonic
    step function is neither linear on the logit scale nor composable with an update)."""
    if scorer.task != "binary":
        raise DataError(f"{model_uri} is a {scorer.task} model; updating is for binary risk "
                        "models")
    rule = scorer.meta.recalibration
    if rule and rule.get("method") not in ("intercept", "logistic"):
        raise DataError(f"{model_uri} applies a {rule.get('method')} recalibration, which an "
                        "update cannot build on; update the version it was recalibrated "
                        "from")


def updated_scorer(scorer: Scorer, evidence: UpdateEvidence, facts: dict[str, Any]
                   ) -> Scorer | None:
    """The scorer that applies the chosen update to raw rows (None for ``none``).

    Intercept and logistic updates become the meta's recalibration rule, composed with the
    rule the model applies already (logit p = a0 + b0 logit(q) for network risk q, updated
    to a + b logit p: intercept a + b a0, slope b b0), with ``facts`` (site, data sha256,
    source model) added to the rule. Revision is a new network with the refitted output
    layer and no recalibration."""
    update = evidence.chosen
    if evidence.method == "none":
        return None
    if evidence.method == "revision":
        network = revised_network(scorer.network, np.asarray(update.kernel), update.bias)
        return Scorer(scorer.encoder, network, scorer.meta.with_recalibration(None))
    base = scorer.meta.recalibration or {"intercept": 0.0, "slope": 1.0}
    rule = {**(evidence.rule() or {}), **facts,
            "intercept": update.intercept + update.slope * float(base["intercept"]),
            "slope": update.slope * float(base["slope"])}
    return Scorer(scorer.encoder, scorer.network, scorer.meta.with_recalibration(rule))
