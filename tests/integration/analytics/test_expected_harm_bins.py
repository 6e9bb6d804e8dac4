"""Expected harm from score bins grouped in SQL equals expected harm from every score."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.analytics import harm
from shadoweval.stats.expected_harm import bootstrap_calibration, expected_harm_by_group
from tests.integration.analytics.test_calibration_economics_api import START, scored_verdicts


def test_binned_expected_harm_matches_every_score_per_hour(engine: Engine) -> None:
    rng = np.random.default_rng(11)
    scores = rng.beta(2, 5, 300)
    scores[:3] = (-0.2, 1.3, 1.0)  # out of range: clamped like the map's input
    labels = rng.binomial(1, np.clip(scores, 0, 1))
    scored_verdicts(engine, scores, labels, START)  # one decision a minute: 5 hours
    clamped = np.clip(scores, 0.0, 1.0)
    fitted = bootstrap_calibration(clamped, labels, np.full(300, 0.5), n_boot=30)
    hours = [START + timedelta(hours=i // 60) for i in range(300)]
    _, exact = expected_harm_by_group([], [], [], clamped, hours, bootstrapped=fitted)

    with Session(engine) as session:
        bins = harm.cheap_routed_score_bins(
            session,
            router="r",
            segment="all",
            since=START,
            until=START + timedelta(days=1),
            by_hour=True,
        )
        window = harm.cheap_routed_score_bins(
            session, router="r", segment="all", since=START, until=START + timedelta(hours=2)
        )
    binned = harm.expected_harm(fitted, bins)

    assert set(binned) == set(exact) == {START + timedelta(hours=i) for i in range(5)}
    for hour, figure in exact.items():
        assert binned[hour].decisions == figure.decisions == 60
        assert binned[hour].estimate == pytest.approx(figure.estimate, abs=1e-3)
        assert binned[hour].ci_low == pytest.approx(figure.ci_low, abs=2e-3)
        assert binned[hour].ci_high == pytest.approx(figure.ci_high, abs=2e-3)
    (whole,) = harm.expected_harm(fitted, window).values()
    _, by_group = expected_harm_by_group([], [], [], clamped[:120], [0] * 120, bootstrapped=fitted)
    first_two = by_group[0]
    assert whole.decisions == 120
    assert whole.estimate == pytest.approx(first_two.estimate, abs=1e-3)


def test_no_decisions_no_expected_harm(engine: Engine) -> None:
    with Session(engine) as session:
        bins = harm.cheap_routed_score_bins(
            session, router="r", segment="none", since=START, until=START + timedelta(days=1)
        )
    fitted = bootstrap_calibration([0.1, 0.9], [0, 1], n_boot=5)
    assert harm.expected_harm(fitted, bins) == {}
