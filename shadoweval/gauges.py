"""Gauges of /metrics read from the database at scrape time (queues, heartbeats, budget,
deliveries, quality). The top of the import graph: it reads every stage, and nothing but
the app imports it (the counters live in `shadoweval.metrics`, which ingest writes to).

Clocks: budget and quality gauges ("today", "last 24 h") are decision time, each router's
watermark (`clock.py`), so a replayed log shows its own days; heartbeat ages, verdict
lags (by finish time) and the label watermark's lag behind now are wall-clock questions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Table, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from shadoweval import clock
from shadoweval.alerts import delivery_records
from shadoweval.alerts import service as alerts_service
from shadoweval.analytics import calibration_service, snapshots
from shadoweval.analytics.harm import harm_rates
from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.judge.models import Verdict
from shadoweval.runtime import service as runtime_service
from shadoweval.sampling.models import BudgetDay
from shadoweval.shadow.models import ShadowRun
from shadoweval.sql import table_of

log = logging.getLogger(__name__)
QUEUES: dict[str, Table] = {
    "shadow_run": table_of(ShadowRun),
    "verdict": table_of(Verdict),
}
KeyT = TypeVar("KeyT", bound=tuple[str, ...])
FigureT = TypeVar("FigureT")
DEFAULT_SKEW_SECONDS = float(Settings.model_fields["decision_clock_skew_seconds"].default)


class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time: queue depths and worker heartbeats.

    Read at scrape time so every API replica reports the same truth, whatever
    worker wrote it.
    """

    def __init__(self, engine: Engine, skew_seconds: float = DEFAULT_SKEW_SECONDS) -> None:
        self.engine = engine
        self.skew_seconds = skew_seconds

    def describe(self) -> list[Metric]:
        return []  # no database access when the collector is registered

    def collect(self) -> Iterator[Metric]:
        try:
            depths = queue_depths(self.engine)
            beats = runtime_service.heartbeats(self.engine)
            budgets = _budget_today(self.engine, self.skew_seconds)
        except SQLAlchemyError as error:
            log.warning("metrics: database gauges unavailable: %s", error)
            return
        depth = GaugeMetricFamily(
            "shadoweval_queue_depth", "Work items per queue and status.", labels=["queue", "status"]
        )
        for (queue, status), count in sorted(depths.items()):
            depth.add_metric([queue, status], count)
        yield depth
        now = utcnow()
        age = GaugeMetricFamily(
            "shadoweval_worker_heartbeat_age_seconds",
            "Seconds since each worker last reported.",
            labels=["worker", "leader"],
        )
        failures = CounterMetricFamily(
            "shadoweval_worker_job_failures",
            "Job failures per worker since it started.",
            labels=["worker", "job"],
        )
        for beat in beats:
            age.add_metric(
                [beat["worker_id"], str(bool(beat["is_leader"])).lower()],
                (now - beat["last_seen_at"]).total_seconds(),
            )
            for job, stats in (beat["jobs"] or {}).items():
                failures.add_metric([beat["worker_id"], job], float(stats.get("failures", 0)))
        yield age
        yield failures
        reserved = GaugeMetricFamily(
            "shadoweval_budget_reserved_usd",
            "Shadow spend reserved for the current decision day (UTC day of the latest ts), "
            "by budget account.",
            labels=["account"],
        )
        limit = GaugeMetricFamily(
            "shadoweval_budget_limit_usd",
            "The current decision day's budget by account.",
            labels=["account"],
        )
        # A counter (exposed as `_total`): it only grows through a decision day and starts
        # again at 0 on the next one, which rate()/increase() read as a counter reset.
        refused = CounterMetricFamily(
            "shadoweval_budget_refused_decisions",
            "Decisions of the current decision day not sampled because the budget was spent "
            "(restarts at 0 each decision day).",
            labels=["account"],
        )
        exhausted = GaugeMetricFamily(
            "shadoweval_budget_exhausted",
            "1 when the current decision day's budget is spent and sampling has stopped.",
            labels=["account"],
        )
        for budget in budgets:
            account = str(budget["account"])
            reserved.add_metric([account], float(budget["reserved_usd"]))
            limit.add_metric([account], float(budget["budget_usd"]))
            refused.add_metric([account], float(budget["refused"]))
            exhausted.add_metric([account], 1.0 if budget["exhausted_at"] is not None else 0.0)
        yield reserved
        yield limit
        yield refused
        yield exhausted
        yield from _delivery_gauges(self.engine)
        yield from _quality_gauges(self.engine, self.skew_seconds)


class ReplicaLagCollector(Collector):
    """`shadoweval_replica_lag_seconds`: how far the read replica's data is behind the
    primary, read on the replica at scrape time (wall clock: a replication question)."""

    def __init__(self, read_engine: Engine) -> None:
        self.read_engine = read_engine

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            lag = replica_lag_seconds(self.read_engine)
        except SQLAlchemyError as error:
            log.warning("metrics: replica lag unavailable: %s", error)
            return
        gauge = GaugeMetricFamily(
            "shadoweval_replica_lag_seconds",
            "Seconds the read replica's last replayed transaction is behind now (0 when it "
            "has replayed all the WAL it received, or the read URL is not a standby).",
        )
        gauge.add_metric([], lag)
        yield gauge


def replica_lag_seconds(read_engine: Engine) -> float:
    """On a PostgreSQL standby, now − pg_last_xact_replay_timestamp(), or 0 once it has
    replayed everything it received (an idle primary writes nothing, and the last replayed
    transaction's age is then no lag); 0 on a primary or SQLite."""
    if read_engine.dialect.name != "postgresql":
        return 0.0
    with read_engine.connect() as connection:
        lag = connection.exec_driver_sql(
            "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0"
            " WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
            " ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)"
            " END"
        ).scalar_one()
    return max(0.0, float(lag))


def _budget_today(engine: Engine, skew_seconds: float) -> list[dict[str, Any]]:
    """Budget rows of the deployment's decision day: budgets are kept per UTC day of `ts`,
    and the wall clock's day has none while a historical log is replayed."""
    with engine.connect() as connection:
        today = clock.deployment_now(connection, skew_seconds=skew_seconds)
    return [] if today is None else budget_today(engine, today)


def queue_depths(engine: Engine) -> dict[tuple[str, str], int]:
    """Rows per (queue, status)."""
    depths: dict[tuple[str, str], int] = {}
    with engine.connect() as connection:
        for queue, table in QUEUES.items():
            rows = connection.execute(select(table.c.status, func.count()).group_by(table.c.status))
            for status, count in rows:
                depths[(queue, status)] = int(count)
    return depths


def budget_today(engine: Engine, now: datetime) -> list[dict[str, Any]]:
    """Today's (UTC) budget rows per account."""
    table = table_of(BudgetDay)
    with engine.connect() as connection:
        return [
            dict(row._mapping)
            for row in connection.execute(
                select(table).where(table.c.day == now.strftime("%Y-%m-%d"))
            )
        ]


def _delivery_gauges(engine: Engine) -> Iterator[Metric]:
    """Alert outbox backlog per channel: a receiver that is down shows as pending rising."""

    try:
        counts = delivery_records.open_counts(engine, utcnow())
    except SQLAlchemyError as error:
        log.warning("metrics: alert delivery gauges unavailable: %s", error)
        return
    pending = GaugeMetricFamily(
        "shadoweval_alert_deliveries_pending",
        "Alert deliveries not yet delivered (pending or in flight), by channel.",
        labels=["channel"],
    )
    failed = GaugeMetricFamily(
        "shadoweval_alert_deliveries_failed",
        "Alert deliveries given up on (refused, or older than the max age), by channel.",
        labels=["channel"],
    )
    oldest = GaugeMetricFamily(
        "shadoweval_alert_delivery_oldest_pending_age_seconds",
        "Age of the oldest undelivered alert delivery, by channel (0 when none).",
        labels=["channel"],
    )
    for row in counts:
        pending.add_metric([row["channel"]], float(row["pending"]))
        failed.add_metric([row["channel"]], float(row["failed"]))
        oldest.add_metric([row["channel"]], float(row["oldest_open_age_s"]))
    yield pending
    yield failed
    yield oldest


# Quality gauges read the last day of decision time; calibration refits on every verdict of
# that day, so it is cached between scrapes (several Prometheus servers may scrape).
QUALITY_WINDOW = timedelta(hours=24)
CALIBRATION_CACHE_SECONDS = 60.0
CalibrationFigure = tuple[str, str, float | None, float | None, int]  # router, judge, ECE, Brier, n
_calibration_cache: dict[str, tuple[float, list[CalibrationFigure]]] = {}


def _quality_gauges(engine: Engine, skew_seconds: float) -> Iterator[Metric]:
    """Harm rate per segment with its 95 % interval, calibration per router, alert states and
    label freshness, for teams that alert through Alertmanager."""
    try:
        families = _quality_families(engine, utcnow(), skew_seconds)
    except SQLAlchemyError as error:
        log.warning("metrics: quality gauges unavailable: %s", error)
        return
    yield from families


def _quality_families(
    engine: Engine, now: datetime, skew_seconds: float = DEFAULT_SKEW_SECONDS
) -> list[Metric]:
    """`now` is the wall clock: it bounds the routers' watermarks (the decision time the
    "last 24 h" end at) and measures the wall-clock lags."""

    with Session(engine) as session:
        watermarks = clock.decision_now_by_router(session, skew_seconds=skew_seconds, wall_now=now)
        harm = _harm_rates(session, watermarks)
        calibration = _calibration(engine, session, watermarks)
        firing_counts = alerts_service.firing_counts(session)
        firing = alerts_service.firing_alerts(session)
        lags = _verdict_lags(session, now)
    watermark_lag = (now - snapshots.watermark(engine, now)).total_seconds()

    labels = ["router", "segment", "judge"]
    rate = GaugeMetricFamily(
        "shadoweval_harm_ratio",
        "Weighted share (0-1) of cheap-routed requests that needed the strong tier, last 24 h "
        "of ts.",
        labels=labels,
    )
    low = GaugeMetricFamily(
        "shadoweval_harm_ci_low_ratio",
        "Lower end of the harm ratio's 95 % interval.",
        labels=labels,
    )
    high = GaugeMetricFamily(
        "shadoweval_harm_ci_high_ratio",
        "Upper end of the harm ratio's 95 % interval.",
        labels=labels,
    )
    n = GaugeMetricFamily(
        "shadoweval_harm_labels", "Judged pairs behind the harm ratio, last 24 h.", labels=labels
    )
    for (router, segment, judge_key), estimate in _one_prompt_per_judge_model(
        harm, 2, lambda estimate: estimate.n
    ):
        key = [router, segment, judge_model(judge_key)]
        n.add_metric(key, float(estimate.n))
        if estimate.estimate == estimate.estimate:  # NaN: no weight yet
            rate.add_metric(key, estimate.estimate)
            low.add_metric(key, estimate.ci_low)
            high.add_metric(key, estimate.ci_high)
    ece = GaugeMetricFamily(
        "shadoweval_calibration_ece",
        "Weighted expected calibration error of router_score, last 24 h (biased upward).",
        labels=["router", "judge"],
    )
    brier = GaugeMetricFamily(
        "shadoweval_calibration_brier",
        "Weighted Brier score of router_score against strong_needed, last 24 h.",
        labels=["router", "judge"],
    )
    calibration_n = GaugeMetricFamily(
        "shadoweval_calibration_labels",
        "Labelled pairs with a p_strong_needed score, last 24 h.",
        labels=["router", "judge"],
    )
    calibration_by_key = [((figure[0], figure[1]), figure) for figure in calibration]
    for _, (router, judge_key, ece_value, brier_value, count) in _one_prompt_per_judge_model(
        calibration_by_key, 1, lambda figure: figure[4]
    ):
        judge = judge_model(judge_key)
        calibration_n.add_metric([router, judge], float(count))
        if ece_value is not None:
            ece.add_metric([router, judge], ece_value)
        if brier_value is not None:
            brier.add_metric([router, judge], brier_value)
    counts = GaugeMetricFamily(
        "shadoweval_alerts_firing",
        "Firing alerts by rule, severity and level (warn | alert).",
        labels=["rule", "severity", "level"],
    )
    for rule, severity, level, count in firing_counts:
        counts.add_metric([rule, severity, level], float(count))
    states = GaugeMetricFamily(
        "shadoweval_alert_firing",
        "1 per firing alert, labelled by its dedup key's parts.",
        labels=["rule", "router", "segment", "level", "severity"],
    )
    for alert in firing:
        states.add_metric(
            [alert.rule, alert.router or "", alert.segment or "", alert.level, alert.severity], 1.0
        )
    lag = GaugeMetricFamily(
        "shadoweval_verdict_lag_seconds",
        "Seconds from a decision's ts to its finished verdict, over verdicts of the last hour.",
        labels=["quantile"],
    )
    for quantile, seconds in lags:
        lag.add_metric([quantile], seconds)
    watermark = GaugeMetricFamily(
        "shadoweval_label_watermark_lag_seconds",
        "Seconds from the oldest decision still waiting for its verdict to now (0 when none).",
    )
    watermark.add_metric([], max(0.0, watermark_lag))
    judges = GaugeMetricFamily(
        "shadoweval_judge_info",
        "1 per judge model and prompt hash (rubric) behind the quality gauges, last 24 h.",
        labels=["judge", "prompt_hash"],
    )
    judge_keys = {key[2] for key, _ in harm} | {figure[1] for figure in calibration}
    for judge_key in sorted(judge_keys):
        judges.add_metric([judge_model(judge_key), prompt_hash(judge_key)], 1.0)
    return [
        rate,
        low,
        high,
        n,
        ece,
        brier,
        calibration_n,
        judges,
        counts,
        states,
        lag,
        watermark,
    ]


def judge_model(judge_key: str) -> str:
    """The judge model of a judge key (`model#prompt_hash`, judge.service.JudgeIdentity): the
    `judge` label, so a rubric edit does not start new series for every segment."""
    return judge_key.split("#", 1)[0]


def prompt_hash(judge_key: str) -> str:
    """The prompt hash of a judge key ("" for a key without one)."""
    return judge_key.partition("#")[2]


def _one_prompt_per_judge_model(
    figures: Iterable[tuple[KeyT, FigureT]],
    judge_at: int,
    labels_of: Callable[[FigureT], int],
) -> list[tuple[KeyT, FigureT]]:
    """One figure per series once the prompt hash leaves the label: when a judge model ran
    under two prompts in the window (a rubric change), the prompt with more labels speaks
    for it, as the one most of the window's verdicts came from (ties: the later key)."""
    chosen: dict[tuple[Any, ...], tuple[KeyT, FigureT]] = {}
    for key, figure in figures:
        series = (*key[:judge_at], judge_model(key[judge_at]), *key[judge_at + 1 :])
        best = chosen.get(series)
        if best is None or (labels_of(figure), key[judge_at]) > (
            labels_of(best[1]),
            best[0][judge_at],
        ):
            chosen[series] = (key, figure)
    return [chosen[series] for series in sorted(chosen)]


def _harm_rates(
    session: Any, watermarks: dict[str, datetime]
) -> list[tuple[tuple[str, str, str], Any]]:
    # The one harm-rate reduction, shared with the quality_drop alert.

    rates: list[tuple[tuple[str, str, str], Any]] = []
    for router, now in sorted(watermarks.items()):
        rates.extend(harm_rates(session, since=now - QUALITY_WINDOW, router=router).items())
    return rates


def _calibration(
    engine: Engine, session: Any, watermarks: dict[str, datetime]
) -> list[CalibrationFigure]:

    key = engine.url.render_as_string(hide_password=True)
    cached = _calibration_cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < CALIBRATION_CACHE_SECONDS:
        return cached[1]
    figures = []
    for router, now in sorted(watermarks.items()):
        # No labelled verdicts in the window: no report, so no gauge for the router.
        for report in calibration_service.calibration_reports(
            session=session, router=router, since=now - QUALITY_WINDOW
        ):
            figures.append(
                (
                    router,
                    report.judge_key,
                    report.expected_calibration_error,
                    report.brier.get("brier"),
                    report.n,
                )
            )
    _calibration_cache[key] = (time.monotonic(), figures)
    return figures


def _verdict_lags(session: Any, now: datetime) -> list[tuple[str, float]]:

    v = table_of(Verdict).c
    rows = session.execute(
        select(v.ts, v.finished_at)
        .where(v.status == "done", v.finished_at >= now - timedelta(hours=1))
        .limit(100_000)
    ).all()
    lags = sorted((finished - ts).total_seconds() for ts, finished in rows)
    if not lags:
        return []
    return [
        ("0.5", lags[len(lags) // 2]),
        ("0.95", lags[min(len(lags) - 1, int(0.95 * len(lags)))]),
        ("1", lags[-1]),
    ]
