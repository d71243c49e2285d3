"""Drift checks against independent references: PSI by hand, chi-square and KS with scipy
on the same arrays (and KS against scipy's two-sample test on the rows themselves), the
reference's small-cell rule, no false alarms on discrete variables, and bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from heartflow.errors import DataError
from heartflow.evaluation.drift import (
    MIN_CELL,
    CategoricalReference,
    Distribution,
    Reference,
    as_of_date,
    homogeneity_p,
    judge_batch,
    ks_test,
    psi,
    read_batch,
)
from heartflow.model.meta import ModelMeta

NUMERIC = ["age", "trestbps", "chol", "thalach", "oldpeak", "slope"]
CATEGORICAL = ["sex", "cp", "fbs", "restecg", "exang", "ca", "thal"]
META = ModelMeta("uci", "binary", tuple(NUMERIC), tuple(CATEGORICAL), ("?",), 0.25, ("0", "1"),
                 "num", "> 0", {"chol": ["0"]})


def _hand_psi(dev: np.ndarray, batch: np.ndarray, edges: tuple[float, ...]) -> float:
    """PSI written out: each value's bin by comparison with the edges, shares, the sum."""
    def shares(values: np.ndarray) -> list[float]:
        bins = [sum(1 for e in edges if v > e) for v in values]  # (-inf, e0], (e0, e1], ...
        return [bins.count(i) / len(values) for i in range(len(edges) + 1)]

    total = 0.0
    for b, r in zip(shares(batch), shares(dev), strict=True):
        b, r = max(b, 1e-4), max(r, 1e-4)
        total += (b - r) * math.log(b / r)
    return total


def test_psi_chi_square_and_ks_on_continuous_values_match_hand_and_scipy() -> None:
    rng = np.random.default_rng(7)
    dev = rng.normal(0.0, 1.0, 400)
    batch = rng.normal(0.4, 1.2, 250)
    dist = Distribution.of(dev)
    assert len(dist.edges) == 9  # deciles
    got = dist.bin_counts(batch)
    assert psi(got / len(batch), dist.shares) == pytest.approx(
        _hand_psi(dev, batch, dist.edges), rel=1e-12)
    # Chi-square of homogeneity on the same 2 x 10 table (no sparse cell to merge).
    table = np.vstack([got, np.rint(np.asarray(dist.shares) * 400)])
    assert homogeneity_p(got, dist.reference_counts(), ordered=True) == pytest.approx(
        stats.chi2_contingency(table, correction=False).pvalue, rel=1e-9)
    # KS: inside the development range the statistic is scipy's one-sample KS against the
    # reference's interpolated CDF (a callable); the p-value is the two-sample one.
    inside = batch[(batch > dist.low) & (batch < dist.high)]
    d, p = ks_test(dist, inside)
    reference = stats.kstest(inside, dist.cdf)
    assert d == pytest.approx(reference.statistic, abs=1e-12)
    assert p == pytest.approx(stats.kstwo.sf(d, round(len(inside) * 400 / (len(inside) + 400))))
    # ... and close to scipy's two-sample test on the development rows themselves.
    d_all, p_all = ks_test(dist, batch)
    two_sample = stats.ks_2samp(dev, batch, method="asymp")
    assert d_all == pytest.approx(two_sample.statistic, abs=0.02)
    assert math.log10(p_all) == pytest.approx(math.log10(two_sample.pvalue), abs=0.5)


@pytest.mark.realdata
def test_cleveland_against_va_and_switzerland_agrees_with_scipy_on_the_rows(
        shared_data: Path) -> None:
    cleveland = read_batch(META, "uci-cleveland")
    rows = np.random.default_rng(0).permutation(303)[:242]  # a development part
    dev = cleveland.features.iloc[rows].reset_index(drop=True)
    reference = Reference.of(dev, NUMERIC, CATEGORICAL)
    for site in ("uci-va", "uci-switzerland"):
        batch = read_batch(META, site)
        for ref in reference.numeric:
            values = batch.features[ref.column].dropna().to_numpy()
            if len(values) < 30:
                continue
            d, p = ks_test(ref.distribution, values)
            two_sample = stats.ks_2samp(dev[ref.column].dropna(), values, method="asymp")
            assert d == pytest.approx(two_sample.statistic, abs=0.02), (site, ref.column)
            assert p == pytest.approx(two_sample.pvalue, rel=1.0, abs=0.02), (site, ref.column)
        sex = next(r for r in reference.categorical if r.column == "sex")
        got, ref_counts = sex.counts(batch.features["sex"])
        table = pd.crosstab(np.r_[np.zeros(len(batch.features)), np.ones(len(dev))],
                            np.r_[batch.features["sex"], dev["sex"]]).to_numpy()  # 2 x levels
        assert homogeneity_p(got, ref_counts, ordered=False) == pytest.approx(
            stats.chi2_contingency(table, correction=False).pvalue, rel=1e-9)
    report = judge_batch(reference, read_batch(META, "uci-switzerland"), None, 0.25,
                         model_uri="m", model_name="m", version="1", as_of="2025-01-31")
    chol = report.check("chol.missing")  # every Swiss chol is 0 = not measured
    assert chol.drift and chol.value == 1.0 and "every row" in chol.reason
    assert report.check("chol.psi").value is None and "no row" in report.check("chol.psi").reason
    assert report.as_of == "2025-01-31"


@pytest.mark.realdata
def test_reference_keeps_no_cell_under_five_rows(shared_data: Path) -> None:
    features = read_batch(META, "uci-cleveland").features
    small = features.iloc[:60].reset_index(drop=True)  # few rows: fewer bins
    reference = Reference.of(small, NUMERIC, CATEGORICAL)
    for ref in reference.numeric:
        values = small[ref.column].dropna().to_numpy()
        dist = ref.distribution
        counts = np.rint(np.asarray(dist.shares) * dist.rows)
        assert counts.min() >= MIN_CELL and len(counts) <= max(1, len(values) // MIN_CELL)
        assert (values <= dist.low).sum() >= MIN_CELL and (values >= dist.high).sum() >= MIN_CELL
        jumps = np.asarray(dist.at_or_below) - np.asarray(dist.below)
        assert all(j == 0 or j * dist.rows >= MIN_CELL - 1e-9 for j in jumps)  # atoms >= 5 rows
    for ref in reference.categorical:
        if ref.cells:
            assert min(np.asarray(ref.shares) * ref.present) >= MIN_CELL - 1e-9
    restecg = CategoricalReference.of("restecg", features["restecg"])  # 0: 151, 2: 148, 1: 4
    assert restecg.rare == 1 and restecg.cells == (("0",), ("2",))  # "1" counted, not named
    assert restecg.cells[restecg.other] == ("2",)  # a pool of 4 rows joins the smallest level
    assert restecg.shares[restecg.other] == pytest.approx(152 / 303)
    got, ref_counts = restecg.counts(pd.Series(["0", "1", "2", "9"]))  # 9: never seen
    assert got.tolist() == [1, 3] and ref_counts.tolist() == [151, 152]
    ca = next(r for r in Reference.of(features, [], ["ca"]).categorical)
    assert ca.missing_suppressed and ca.missing_share == pytest.approx(5 / 303)  # 4 missing
    assert Reference.from_json(reference.to_json()) == reference


def test_discrete_and_continuous_variables_from_one_population_do_not_cry_wolf() -> None:
    rng = np.random.default_rng(3)
    alarms = {"ks": 0, "chi2": 0}
    for _ in range(150):
        dev, batch = rng.integers(1, 4, 240), rng.integers(1, 4, 300)  # 3 levels: ties
        dist = Distribution.of(dev)
        alarms["ks"] += ks_test(dist, batch)[1] < 0.05
        alarms["chi2"] += homogeneity_p(dist.bin_counts(batch), dist.reference_counts(),
                                        True) < 0.05
    assert alarms["ks"] <= 0.08 * 150 and alarms["chi2"] <= 0.1 * 150
    ages = Distribution.of(np.round(rng.normal(54, 9, 240)))  # integers: many ties
    d, p = ks_test(ages, np.round(rng.normal(54, 9, 300)))
    assert d < 0.1 and p > 0.01


def test_as_of_must_be_a_date() -> None:
    assert as_of_date("2025-03-31") == "2025-03-31"
    for bad in ("2025-02-30", "yesterday", "31/03/2025"):
        with pytest.raises(DataError, match="is not a date"):
            as_of_date(bad)


def test_batch_missing_a_column_names_it_and_an_empty_column_is_read(tmp_path: Path) -> None:
    frame = pd.DataFrame({c: ["1"] * 40 for c in [*NUMERIC, *CATEGORICAL, "num"]})
    frame.drop(columns=["thalach"]).to_csv(tmp_path / "no_thalach.csv", index=False)
    with pytest.raises(DataError, match="'thalach'"):
        read_batch(META, str(tmp_path / "no_thalach.csv"))
    frame.assign(chol="").drop(columns=["num"]).to_csv(tmp_path / "empty.csv", index=False)
    batch = read_batch(META, str(tmp_path / "empty.csv"))
    assert batch.features["chol"].isna().all() and not batch.has_outcome


@pytest.mark.realdata
def test_a_batch_too_small_to_judge_skips_every_check_with_its_reason(
        shared_data: Path) -> None:
    rng = np.random.default_rng(5)
    dev = read_batch(META, "uci-cleveland").features
    test_p = rng.uniform(0.05, 0.95, 61)
    reference = Reference.of(dev, NUMERIC, CATEGORICAL, risks=rng.uniform(0, 1, 303),
                             test_y=(rng.random(61) < test_p).astype(float), test_p=test_p,
                             threshold=0.25)
    va = read_batch(META, "uci-va")
    small = type(va)(va.source, va.sha256, "va", va.features.head(20), va.y[:20], True)
    report = judge_batch(reference, small, rng.uniform(0, 1, 20), 0.25, model_uri="m",
                         model_name="m", version="1")
    assert not report.drift
    assert all(c.value is None for c in report.checks)
    assert report.check("age.psi").reason == "20 rows with a value; the check needs at least 30"
    assert report.check("risk.ks").reason == "20 rows; the check needs at least 30"
    assert "20 rows with an outcome" in report.check("roc_auc").reason
    few_events = type(va)(va.source, va.sha256, "va", va.features, np.r_[np.zeros(7),
                                                                          np.ones(193)], True)
    report = judge_batch(reference, few_events, rng.uniform(0, 1, 200), 0.25, model_uri="m",
                         model_name="m", version="1")
    assert "7 rows without the outcome; the check needs at least 10" in report.check(
        "roc_auc").reason
    assert report.check("calibration_intercept").value is not None  # needs 5 of each
