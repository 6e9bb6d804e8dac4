"""`shadoweval bench scenario`: the issue-13 scenario through the real pipeline, seed by seed.

What it runs. For each seed, `scenario_traffic.ScenarioTraffic` generates a realistic
router log (8 topic segments, sessions, diurnal load, a `p_strong_needed` score with
threshold 0.5, fallbacks; ~20,000 decisions a day over 3 days of historical `ts`); the 5 %
`legal` segment's harm rate rises 0.10 → 0.25 at 40 % of the stream and the cheap model is
swapped at 70 %, leaving the router over-confident. A fresh database (SQLite in a temp
dir, or a database of its own on the `--database-url` PostgreSQL server) gets the
router's pool through `PUT /v1/pool`'s service, as a new user sets it up first; then the
log goes in decision-hour by decision-hour, in `ts` order:

- in-process: `ingest.service.ingest_decisions` in batches of 500, with the sampling plan
  reloaded before each batch as the API's writer does;
- `--http` (one extra run of the first seed): the log is written as NDJSON, read back with
  `shadoweval replay`'s reader and posted hour by hour by its `replay()` to the real API
  under uvicorn;

and after each decision-hour the worker runs passes of every job
(`runtime.worker.run_worker(runtime, once=True)`) until no sampled work is open; at the
end it drains. Answers and verdicts come from the simulated provider (no network), whose
hidden tag makes the judge follow the generator's truth, with a 10 % position bias that
the two-order judging turns into inconsistent pairs. Settings are the defaults but for
the daily shadow budget (`--budget-usd`, $20 buying ~900 labels a day at this scenario's
token counts and the judge model below), the simulated provider, the judge model, the
plan reload (every batch), the worker's claim size (one pass takes an hour's samples), the
provider rate limits (per wall-clock minute, so they would only make a replay of days in
minutes sleep) and, for the final drain only, how soon idle sampling periods close.

What it measures, per run, from the database through the read services:
- detection delay in the changed segment: labels of that segment judged after the change
  up to its first `quality_drop` event, and decision hours from the change to the event's
  ts (also when the harness first saw it, an hour-resolution upper bound);
- false quality alarms: `quality_drop` events in any other segment, or in the changed
  segment before its change;
- model events (`model_change`; exactly one expected: the cheap-model swap);
- calibration alerts: the decision time at which the first `calibration_drift` alert
  fired (its `fired_ts`; where the service records none, the hour just ingested when the
  harness first saw it), before or after the swap; pending alerts that never fired do not
  count;
- spend per decision-day (`/v1/spend`: shadow runs and judge calls per UTC day of `ts`)
  against the daily shadow budget plus what the separate boost budget reserved that day;
- interval coverage: per segment and 6-hour window, whether the 95 % interval of the
  harm rate (`analytics.harm.harm_rates`, the estimator behind `/v1/segments?since=…`)
  holds the generator's true harm rate of the window's cheap-routed decisions.
Aggregated over the runs beside the issue's targets. A figure the pipeline never produced
(no alarm, no alert) is reported as missing, never filled in.

Speed. One run keeps about one core busy (ingest and the worker's passes take turns); with
`--jobs N` the seeds run N at a time, each in a spawned process with its own database, which
changes no figure (a run depends only on its seed; the HTTP run then goes in the parent).
Where a run's time goes (py-spy, one decision day, seed 0; shares of busy time): alert
evaluation ~1/3 (calibration-drift bootstrap, session windows, cache loss), ingest ~1/4
(redaction ~1/7), judge and shadow work ~1/5, the period planner ~6 %, generating the log ~5 %.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import math
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from shadoweval.bench.scenario_traffic import ScenarioConfig, ScenarioTraffic

Progress = Callable[[str], None]

# The judge: Claude Opus 4.6 prices a label (strong-tier shadow + two judge calls on this
# scenario's prompts and answers) at ~$0.021, so the issue's $20 a day buys ~900 labels.
JUDGE_MODEL = "claude-opus-4-6"
INGEST_BATCH = 500
# Claimed per job per pass: above an hour's samples at the diurnal peak, so one pass after
# each decision-hour judges that hour's work, as a live worker would within the hour.
WORK_BATCH = 256
MAX_PASSES_PER_HOUR = 4
PROVIDER_UNLIMITED = 1e12
DRAIN_ROUNDS = 6
# At the end of the stream, open sampling periods close after this long without
# decision-time progress (the setting's default, 15 min, would only add waiting).
DRAIN_IDLE_CLOSE_SECONDS = 0.25
COVERAGE_WINDOW_HOURS = 6

QUALITY_EVENT = "quality_drop"
MODEL_EVENT = "model_change"
CALIBRATION_ALERT = "calibration_drift"
QUALITY_ALERT = "quality_drop"

TARGETS: dict[str, tuple[str, float]] = {
    "median_delay_labels": ("<=", 150.0),
    "median_delay_hours": ("<=", 8.0),
    "share_runs_without_false_alarm": (">=", 0.95),
    "share_runs_one_model_event": (">=", 1.0),
    "share_runs_calibration_alert_after_swap_only": (">=", 1.0),
    "max_spend_over_budget": ("<=", 1.01),
    "coverage": (">=", 0.93),
}


# --- databases ------------------------------------------------------------------------------


@dataclass
class _Database:
    url: str
    data_dir: Path
    server_url: str | None  # PostgreSQL server the database was created on, to drop it


def _fresh_database(server_url: str | None, name: str) -> _Database:
    from shadoweval.bench.ingest import _fresh_database as fresh

    url, data_dir = fresh(server_url, name)
    return _Database(url=url, data_dir=data_dir, server_url=server_url)


def _remove_database(database: _Database) -> None:
    if database.server_url is not None:
        from shadoweval.bench.ingest import _drop_databases

        _drop_databases(database.server_url, [database.url])
    shutil.rmtree(database.data_dir, ignore_errors=True)


def scenario_settings(database_url: str, data_dir: Path, budget_usd: float) -> Any:
    """The deployment's settings for one run (see the module docstring for what differs)."""
    from shadoweval.config import Settings

    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        use_simulated_provider=True,
        judge_model=JUDGE_MODEL,
        daily_shadow_budget_usd=budget_usd,
        plan_refresh_seconds=0,
        worker_batch_size=WORK_BATCH,
        # The provider limits are per wall-clock minute; the replay compresses days into
        # minutes against a simulated provider that has none, so they would only sleep.
        provider_requests_per_minute=PROVIDER_UNLIMITED,
        provider_tokens_per_minute=PROVIDER_UNLIMITED,
        log_level="WARNING",
    )


# --- the API for --http -----------------------------------------------------------------------


@contextlib.contextmanager
def _serve(app: Any) -> Iterator[str]:
    """`app` under uvicorn on a free local port for the block; yields its base URL."""
    import uvicorn

    from shadoweval.bench.ingest import _free_port

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the scenario's API server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# --- one run ----------------------------------------------------------------------------------


@dataclass
class _Timeline:
    """When (in decision time: the end of the hour just ingested) the harness first saw each
    event, and each alert fired (pending alerts, which notify nobody, do not count)."""

    events: dict[int, datetime] = field(default_factory=dict)
    alerts: dict[int, datetime] = field(default_factory=dict)

    def observe(self, engine: Any, decision_time: datetime) -> None:
        from sqlalchemy import select
        from sqlmodel import Session

        from shadoweval.alerts.models import Alert
        from shadoweval.events.models import Event

        events = cast(Any, Event).__table__.c
        alerts = cast(Any, Alert).__table__.c
        # An alert fired when it has a fired decision time; without pending periods (before
        # issue 13) every alert row fired.
        fired = alerts.fired_ts.is_not(None) if "fired_ts" in alerts else alerts.id.is_not(None)
        with Session(engine) as session:
            newest_event = max(self.events, default=0)
            for (new_id,) in session.execute(select(events.id).where(events.id > newest_event)):
                self.events[int(new_id)] = decision_time
            for (alert_id,) in session.execute(select(alerts.id).where(fired)):
                self.alerts.setdefault(int(alert_id), decision_time)


def _open_work(engine: Any) -> int:
    """Sampled decisions still without a verdict, plus verdicts not finished."""
    from sqlalchemy import func, select
    from sqlmodel import Session

    from shadoweval.ingest.models import Decision
    from shadoweval.judge.models import OPEN_VERDICT_STATUSES, Verdict

    d = cast(Any, Decision).__table__.c
    v = cast(Any, Verdict).__table__.c
    with Session(engine) as session:
        open_verdicts = session.scalar(
            select(func.count()).where(v.status.in_(OPEN_VERDICT_STATUSES))
        )
        unplanned = session.scalar(
            select(func.count()).where(
                d.sampled.is_(True), ~select(v.id).where(v.decision_id == d.id).exists()
            )
        )
    return int(open_verdicts or 0) + int(unplanned or 0)


async def _passes(runtime: Any, max_passes: int) -> int:
    """Worker passes until no sampled work is open (or `max_passes`); returns the passes."""
    from shadoweval.runtime.worker import run_worker

    for done in range(1, max_passes + 1):
        await run_worker(runtime, once=True)
        if await asyncio.to_thread(_open_work, runtime.engine) == 0:
            return done
    return max_passes


class _InProcessIngest:
    """`ingest_decisions` in batches, with the plan reloaded as the API's writer does."""

    def __init__(self, engine: Any, settings: Any) -> None:
        from shadoweval.sampling.service import SamplingPlan

        self.engine, self.settings = engine, settings
        self.plan = SamplingPlan()

    def __call__(self, items: list[dict[str, Any]]) -> None:
        from sqlmodel import Session

        from shadoweval.ingest import service as ingest_service
        from shadoweval.ingest.parsing import ParsedBody

        for start in range(0, len(items), INGEST_BATCH):
            self.plan.refresh_if_stale(self.engine, self.settings.plan_refresh_seconds)
            with Session(self.engine) as session:
                outcome = ingest_service.ingest_decisions(
                    session=session,
                    settings=self.settings,
                    parsed=ParsedBody(items=items[start : start + INGEST_BATCH]),
                    plan=self.plan,
                )
            if outcome.errors:
                raise RuntimeError(f"ingest refused scenario decisions: {outcome.errors[:3]}")


class _HttpIngest:
    """`shadoweval replay`'s poster against the live API, one decision-hour at a time."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key

    def __call__(self, items: list[dict[str, Any]]) -> None:
        from shadoweval.ingest.replay import replay

        result = replay(items=items, url=self.url, key=self.key, batch_size=INGEST_BATCH)
        if result.invalid or result.stored + result.duplicates != len(items):
            raise RuntimeError(f"replay did not store every decision: {result}")


def _build_runtime(engine: Any, settings: Any) -> tuple[Any, Callable[[], Any]]:
    from shadoweval.runtime.worker import build_runtime

    runtime, close = build_runtime(settings, engine)
    return runtime, close


def _put_pool(engine: Any, settings: Any, config: ScenarioConfig) -> None:
    """The router's pool as a new user sets it up before sending traffic."""
    from sqlmodel import Session

    from shadoweval.pool import service as pool_service
    from shadoweval.pool.models import PoolIn

    pool = PoolIn(
        router=config.router,
        tiers={"cheap": [config.cheap_model], "strong": [config.strong_model]},
    )
    # Called as `PUT /v1/pool` calls it; older versions of the service also took settings.
    extra = (
        {"settings": settings}
        if "settings" in inspect.signature(pool_service.put_pool).parameters
        else {}
    )
    with Session(engine) as session:
        pool_service.put_pool(session=session, pool=pool, **extra)


async def _run_stream(
    traffic: ScenarioTraffic,
    engine: Any,
    settings: Any,
    ingest: Callable[[list[dict[str, Any]]], None],
    items_of_hour: Callable[[slice], list[dict[str, Any]]],
    timing: dict[str, float],
    progress: Progress | None,
    label: str,
) -> tuple[_Timeline, dict[str, Any]]:
    """Ingest hour by hour with worker passes after each, then drain; returns what the
    harness saw and the worker's job statistics."""
    config = traffic.config
    runtime, close = _build_runtime(engine, settings)
    timeline = _Timeline()
    passes = 0
    day = -1
    started = time.perf_counter()
    try:
        for hour_end, part in traffic.hour_slices():
            hour_day = int((hour_end - config.start - timedelta(seconds=1)).days)
            if hour_day != day and progress is not None:
                day = hour_day
                progress(
                    f"{label}: decision day {day + 1}/{math.ceil(config.days)}, "
                    f"{time.perf_counter() - started:.0f} s"
                )
            t0 = time.perf_counter()
            items = items_of_hour(part)
            t1 = time.perf_counter()
            if items:
                await asyncio.to_thread(ingest, items)
            t2 = time.perf_counter()
            passes += await _passes(runtime, MAX_PASSES_PER_HOUR)
            t3 = time.perf_counter()
            await asyncio.to_thread(timeline.observe, engine, hour_end)
            timing["generate_s"] += t1 - t0
            timing["ingest_s"] += t2 - t1
            timing["worker_s"] += t3 - t2
        # The end of the stream: let open sampling periods close on idleness, then drain.
        t0 = time.perf_counter()
        runtime.settings = settings.model_copy(
            update={"sampling_idle_close_seconds": DRAIN_IDLE_CLOSE_SECONDS}
        )
        for _ in range(DRAIN_ROUNDS):
            await asyncio.sleep(DRAIN_IDLE_CLOSE_SECONDS + 0.1)
            passes += await _passes(runtime, MAX_PASSES_PER_HOUR * 2)
            planned = runtime.stats.get("plan_sampling")
            last = planned.last_result if planned is not None else None
            idle = not (isinstance(last, dict) and (last.get("periods") or last.get("late")))
            if idle and await asyncio.to_thread(_open_work, engine) == 0:
                break
        await asyncio.to_thread(timeline.observe, engine, config.end)
        timing["drain_s"] += time.perf_counter() - t0
    finally:
        await close()
    jobs = {
        name: {"runs": stats.runs, "failures": stats.failures, "last_error": stats.last_error}
        for name, stats in runtime.stats.items()
    }
    return timeline, {"passes": passes, "jobs": jobs}


def run_seed(
    *,
    traffic: ScenarioTraffic,
    budget_usd: float,
    database_url: str | None = None,
    http: bool = False,
    progress: Progress | None = None,
    label: str = "",
) -> dict[str, Any]:
    """One run of `traffic` through the pipeline on a fresh database; its figures."""
    from shadoweval.db import create_db_engine, upgrade_database

    config = traffic.config
    started = time.perf_counter()
    database = _fresh_database(
        database_url, f"scenario_{config.seed}_{'http' if http else 'inproc'}"
    )
    timing = {"generate_s": 0.0, "ingest_s": 0.0, "worker_s": 0.0, "drain_s": 0.0}
    try:
        settings = scenario_settings(database.url, database.data_dir, budget_usd)
        upgrade_database(settings)
        engine = create_db_engine(settings)
        try:
            _put_pool(engine, settings, config)
            if http:
                timeline, worker = _run_http(traffic, engine, settings, timing, progress, label)
            else:
                timeline, worker = asyncio.run(
                    _run_stream(
                        traffic,
                        engine,
                        settings,
                        _InProcessIngest(engine, settings),
                        traffic.decisions,
                        timing,
                        progress,
                        label,
                    )
                )
            t0 = time.perf_counter()
            figures = measure(engine, settings, traffic, timeline)
            timing["measure_s"] = time.perf_counter() - t0
        finally:
            engine.dispose()
    finally:
        _remove_database(database)
    figures.update(
        seed=config.seed,
        path="http" if http else "in-process",
        database="postgresql" if database_url else "sqlite",
        decisions=len(traffic),
        worker_passes=worker["passes"],
        job_failures={name: job for name, job in worker["jobs"].items() if job["failures"] > 0},
        seconds=round(time.perf_counter() - started, 1),
        timing={k: round(v, 1) for k, v in timing.items()},
    )
    return figures


def _run_http(
    traffic: ScenarioTraffic,
    engine: Any,
    settings: Any,
    timing: dict[str, float],
    progress: Progress | None,
    label: str,
) -> tuple[_Timeline, dict[str, Any]]:
    from sqlmodel import Session

    from shadoweval.app import create_app
    from shadoweval.auth import service as auth_service
    from shadoweval.auth.models import Scope
    from shadoweval.ingest.replay import read_log

    with Session(engine) as session:
        key = auth_service.create_key(session=session, scopes=[Scope.INGEST], name="scenario").key
    # The recorded log, as a user would hand it to `shadoweval replay`.
    t0 = time.perf_counter()
    path = Path(tempfile.mkdtemp(prefix="shadoweval-scenario-log-")) / "decisions.ndjson"
    try:
        with path.open("w", encoding="utf-8") as handle:
            for hour_items in (traffic.decisions(part) for _, part in traffic.hour_slices()):
                handle.writelines(json.dumps(item) + "\n" for item in hour_items)
        items = read_log(path)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    if [item["request_id"] for item in items[:: max(1, len(items) // 1000)]] != [
        traffic.decision(i)["request_id"] for i in range(0, len(items), max(1, len(items) // 1000))
    ]:
        raise RuntimeError("the replayed log is not in the generator's ts order")
    timing["generate_s"] += time.perf_counter() - t0
    with _serve(create_app(settings, engine)) as url:
        return asyncio.run(
            _run_stream(
                traffic,
                engine,
                settings,
                _HttpIngest(url, key),
                lambda part: items[part],
                timing,
                progress,
                label,
            )
        )


# --- measuring ----------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _hours(later: datetime, earlier: datetime) -> float:
    return round((later - earlier).total_seconds() / 3600.0, 2)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def _digest(rows: list[Any]) -> str:
    return hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()[:16]


def measure(
    engine: Any, settings: Any, traffic: ScenarioTraffic, timeline: _Timeline
) -> dict[str, Any]:
    """Every figure of one run, read back from the database through the read services."""
    from sqlalchemy import select
    from sqlmodel import Session

    from shadoweval.alerts import service as alerts_service
    from shadoweval.analytics import service as analytics_service
    from shadoweval.analytics.harm import harm_rates
    from shadoweval.events import service as events_service
    from shadoweval.ingest.models import Decision
    from shadoweval.judge.models import Verdict, VerdictStatus
    from shadoweval.sampling import service as sampling_service

    config = traffic.config
    truth = traffic.truth
    v = cast(Any, Verdict).__table__.c
    d = cast(Any, Decision).__table__.c
    with Session(engine) as session:
        verdicts = session.execute(
            select(
                v.request_id,
                v.ts,
                v.segment_value,
                v.direction,
                v.status,
                v.strong_needed,
                v.consistent,
            ).where(v.router == config.router)
        ).all()
        decision_rows = session.execute(
            select(d.request_id, d.sampled, d.inclusion_probability)
            .where(d.router == config.router)
            .order_by(d.request_id)
        ).all()
        refused_from = _first_refusals(session)
        events = events_service.list_events(session=session, limit=1_000_000)
        alerts = alerts_service.list_alerts(session=session, limit=100_000).items
        spend = analytics_service.spend_per_day(
            session=session, since=config.start, until=config.end
        )
        budget_rows = sampling_service.list_budget(session=session)
        coverage = _coverage(session, harm_rates, traffic)

    done = [r for r in verdicts if r.status == VerdictStatus.DONE]
    forward = [r for r in done if r.direction == "forward"]
    index_of = {f"sc{config.seed}-{i:07d}": i for i in range(len(traffic))}
    forward_truth = [bool(truth.label[index_of[r.request_id]]) for r in forward]
    days = max(config.days, 1e-9)
    labels = {
        "forward": len(forward),
        "reverse": len(done) - len(forward),
        "per_day": round(len(done) / days, 1),
        "not_done": {
            status: sum(1 for r in verdicts if r.status == status)
            for status in sorted({r.status for r in verdicts} - {VerdictStatus.DONE})
        },
        # The judge follows the generator: observed harm of the labelled pairs beside the
        # truth of the same pairs, and the share of inconsistent pairs (position bias).
        "observed_harm": round(sum(int(r.strong_needed or 0) for r in forward) / len(forward), 4)
        if forward
        else None,
        "true_harm_of_labelled": round(sum(forward_truth) / len(forward_truth), 4)
        if forward_truth
        else None,
        # The generator knows each label the judge should give: the share it did give.
        "agreement_with_truth": round(
            sum(
                int(r.strong_needed or 0) == label
                for r, label in zip(forward, forward_truth, strict=True)
            )
            / len(forward),
            4,
        )
        if forward
        else None,
        "inconsistent_share": round(sum(1 for r in done if r.consistent is False) / len(done), 4)
        if done
        else None,
    }
    figures: dict[str, Any] = {"labels": labels}
    figures["detection"] = _detection(traffic, events, forward, timeline)
    figures["model_events"] = [
        {"ts": _iso(e.ts), "hours_after_swap": _hours(_aware(e.ts), config.swap_ts), **e.details}
        for e in sorted(events, key=lambda e: e.id)
        if e.kind == MODEL_EVENT and e.router == config.router
    ]
    figures["calibration"] = _calibration(traffic, alerts, timeline)
    figures["quality_alerts"] = sorted(
        {
            str(a.segment)
            for a in alerts
            if a.kind == QUALITY_ALERT
            and a.router == config.router
            and _fired_at(a, timeline) is not None
        }
    )
    figures["spend"] = _spend(settings, spend, budget_rows, config)
    for day in figures["spend"]["days"]:
        first = refused_from.get(day["day"])
        # Decision hour (period start, 0–23) its shadow budget ran out; None: it lasted.
        day["budget_out_hour"] = (
            None
            if first is None
            else _hours(first, datetime.fromisoformat(day["day"] + "T00:00:00+00:00"))
        )
    figures["coverage"] = coverage
    sampled = sum(1 for r in decision_rows if r.sampled)
    figures["sampling"] = {
        "sampled": sampled,
        "share_sampled": round(sampled / max(1, len(decision_rows)), 4),
        # Fingerprints to compare runs of one seed (HTTP against in-process).
        "sampled_digest": _digest(
            [
                (r.request_id, bool(r.sampled), round(float(r.inclusion_probability or 0), 9))
                for r in decision_rows
            ]
        ),
    }
    # Per decision, to compare two runs of one seed (HTTP against in-process); dropped from
    # the figures once compared.
    figures["_decisions"] = {
        r.request_id: (bool(r.sampled), float(r.inclusion_probability or 0.0))
        for r in decision_rows
    }
    figures["events_digest"] = _digest(
        sorted(
            (e.kind, e.router, _iso(e.ts), json.dumps(e.details, sort_keys=True, default=str))
            for e in events
            if e.kind != "judge_changed"
        )
    )
    figures["alerts_digest"] = _digest(
        # Alerts that never fired (pending, cancelled) have no time: "" sorts them first.
        sorted(
            (a.rule, a.router, a.segment or "", _iso(_fired_at(a, timeline)) or "") for a in alerts
        )
    )
    return figures


def _first_refusals(session: Any) -> dict[str, datetime]:
    """UTC day → start of the day's first sampling period whose shadow budget refused a
    decision (boost-account refusals, after the model swap, are not counted)."""
    from sqlalchemy import select

    from shadoweval.sampling.models import SamplingPeriod

    p = cast(Any, SamplingPeriod).__table__.c
    first: dict[str, datetime] = {}
    rows = session.execute(
        select(p.period_start).where(p.refused > p.boost_refused).order_by(p.period_start)
    ).all()
    for (start,) in rows:
        at = _aware(start)
        first.setdefault(at.date().isoformat(), at)
    return first


def _detection(
    traffic: ScenarioTraffic, events: list[Any], forward: list[Any], timeline: _Timeline
) -> dict[str, Any]:
    config = traffic.config
    change = config.change_ts
    alarms = [
        (e, str(e.details.get("segment")))
        for e in events
        if e.kind == QUALITY_EVENT and e.router == config.router
    ]
    hits = sorted(
        (
            e
            for e, segment in alarms
            if segment == config.changed_segment and _aware(e.ts) >= change
        ),
        key=lambda e: _aware(e.ts),
    )
    false = [
        {"segment": segment, "ts": _iso(e.ts)}
        for e, segment in alarms
        if segment != config.changed_segment or _aware(e.ts) < change
    ]
    detection: dict[str, Any] = {
        "detected": bool(hits),
        "delay_labels": None,
        "delay_hours": None,
        "seen_delay_hours": None,
        "event_ts": None,
        "false_alarms": false,
        "false_alarm_segments": sorted({f["segment"] for f in false}),
        # One change, one alarm: more than one here is the same episode alarming again.
        "alarms_after_change": len(hits),
        # The detector's pre-change side: what a 5 % segment most lacks (architecture.md).
        "changed_segment_labels_before_change": sum(
            1
            for r in forward
            if r.segment_value == config.changed_segment and _aware(r.ts) < change
        ),
        "changed_segment_labels_after_change": sum(
            1
            for r in forward
            if r.segment_value == config.changed_segment and _aware(r.ts) >= change
        ),
    }
    if hits:
        first = hits[0]
        at = _aware(first.ts)
        detection.update(
            event_ts=_iso(at),
            delay_hours=_hours(at, change),
            delay_labels=sum(
                1
                for r in forward
                if r.segment_value == config.changed_segment and change <= _aware(r.ts) <= at
            ),
            seen_delay_hours=_hours(timeline.events[first.id], change)
            if first.id in timeline.events
            else None,
        )
    return detection


def _fired_at(alert: Any, timeline: _Timeline) -> datetime | None:
    """Decision time an alert fired at: the service's `fired_ts` where it records one, else
    when the harness first saw it; None for an alert that never fired (pending, dropped)."""
    if "fired_ts" in type(alert).model_fields:
        return None if alert.fired_ts is None else _aware(alert.fired_ts)
    return timeline.alerts.get(alert.id)


def _calibration(
    traffic: ScenarioTraffic, alerts: list[Any], timeline: _Timeline
) -> dict[str, Any]:
    config = traffic.config
    swap = config.swap_ts
    fired = sorted(
        (at, alert.id, alert)
        for alert in alerts
        if alert.kind == CALIBRATION_ALERT and alert.router == config.router
        for at in [_fired_at(alert, timeline)]
        if at is not None
    )
    before = [at for at, _, _ in fired if at <= swap]
    after = [at for at, _, _ in fired if at > swap]
    first = fired[0] if fired else None
    return {
        "alerts": len(fired),
        "first_fired_ts": _iso(first[0]) if first else None,
        "first_hours_after_swap": _hours(first[0], swap) if first else None,
        "first_seen_hours_after_swap": _hours(timeline.alerts[first[1]], swap)
        if first and first[1] in timeline.alerts
        else None,
        "first_level": first[2].level if first else None,
        "first_summary": first[2].summary if first else None,
        "before_swap": len(before),
        "after_swap": len(after),
        "after_swap_only": bool(after) and not before,
    }


def _spend(
    settings: Any, spend: list[Any], budget_rows: list[Any], config: ScenarioConfig
) -> dict[str, Any]:
    budget = float(settings.daily_shadow_budget_usd)
    boost = {r.day: float(r.reserved_usd) for r in budget_rows if r.account == "boost"}
    reserved = {r.day: float(r.reserved_usd) for r in budget_rows if r.account == "shadow"}
    refused = {r.day: int(r.refused) for r in budget_rows if r.account == "shadow"}
    days = []
    for row in spend:
        allowed = budget + boost.get(row.day, 0.0)
        days.append(
            {
                "day": row.day,
                "spend_usd": round(float(row.total_usd), 4),
                "shadow_usd": round(float(row.shadow_usd), 4),
                "judge_usd": round(float(row.judge_usd), 4),
                "verdicts": int(row.verdicts),
                "reserved_shadow_usd": round(reserved.get(row.day, 0.0), 4),
                "reserved_boost_usd": round(boost.get(row.day, 0.0), 4),
                "budget_refused": refused.get(row.day, 0),
                "over_budget": round(float(row.total_usd) / allowed, 4) if allowed > 0 else None,
                "over_shadow_budget": round(float(row.total_usd) / budget, 4) if budget else None,
            }
        )
    ratios = [day["over_budget"] for day in days if day["over_budget"] is not None]
    return {"budget_usd": budget, "days": days, "max_over_budget": max(ratios, default=None)}


def _coverage(session: Any, harm_rates: Any, traffic: ScenarioTraffic) -> dict[str, Any]:
    config = traffic.config
    windows = math.ceil(config.days * 24 / COVERAGE_WINDOW_HOURS)
    covered = checked = without_labels = 0
    misses: list[dict[str, Any]] = []
    by_segment: dict[str, list[int]] = {}
    for k in range(windows):
        since = config.start + timedelta(hours=COVERAGE_WINDOW_HOURS * k)
        until = min(since + timedelta(hours=COVERAGE_WINDOW_HOURS), config.end)
        truth = traffic.harm_truth(since, until)
        estimates = {
            segment: estimate
            for (router, segment, _judge), estimate in harm_rates(
                session, since=since, until=until, router=config.router
            ).items()
            if router == config.router
        }
        for segment, true in truth.items():
            estimate = estimates.get(segment)
            if estimate is None or estimate.n == 0 or not math.isfinite(estimate.ci_low):
                without_labels += 1
                continue
            checked += 1
            inside = estimate.ci_low - 1e-12 <= true.harm_rate <= estimate.ci_high + 1e-12
            covered += inside
            tally = by_segment.setdefault(segment, [0, 0])
            tally[0] += inside
            tally[1] += 1
            if not inside:
                misses.append(
                    {
                        "segment": segment,
                        "window_start": _iso(since),
                        "truth": round(true.harm_rate, 4),
                        "estimate": round(estimate.estimate, 4),
                        "ci": [round(estimate.ci_low, 4), round(estimate.ci_high, 4)],
                        "n": estimate.n,
                    }
                )
    return {
        "windows_checked": checked,
        "windows_covered": covered,
        "windows_without_labels": without_labels,
        "coverage": round(covered / checked, 4) if checked else None,
        "by_segment": {s: round(c / n, 3) for s, (c, n) in sorted(by_segment.items())},
        "misses": misses[:20],
    }


# --- many runs ----------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    """Median with misses as +∞: None ("not reached") when it falls on a miss."""
    if not values:
        return None
    return _finite(statistics.median(values))


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures over runs, with each target and whether it is met."""
    n = len(runs)
    delays_labels = [
        float(r["detection"]["delay_labels"]) if r["detection"]["detected"] else math.inf
        for r in runs
    ]
    delays_hours = [
        float(r["detection"]["delay_hours"]) if r["detection"]["detected"] else math.inf
        for r in runs
    ]
    covered = sum(r["coverage"]["windows_covered"] for r in runs)
    checked = sum(r["coverage"]["windows_checked"] for r in runs)
    spend = [r["spend"]["max_over_budget"] for r in runs if r["spend"]["max_over_budget"]]
    calibration_hours = [
        r["calibration"]["first_hours_after_swap"]
        for r in runs
        if r["calibration"]["first_hours_after_swap"] is not None
    ]
    figures: dict[str, Any] = {
        "runs": n,
        "detected_share": round(sum(r["detection"]["detected"] for r in runs) / n, 3),
        "median_delay_labels": _median(delays_labels),
        "median_delay_hours": _median(delays_hours),
        "share_runs_without_false_alarm": round(
            sum(not r["detection"]["false_alarms"] for r in runs) / n, 3
        ),
        "false_alarm_segments": sorted(
            {s for r in runs for s in r["detection"]["false_alarm_segments"]}
        ),
        "share_runs_one_model_event": round(sum(len(r["model_events"]) == 1 for r in runs) / n, 3),
        "model_events_per_run": [len(r["model_events"]) for r in runs],
        "share_runs_calibration_alert_after_swap_only": round(
            sum(r["calibration"]["after_swap_only"] for r in runs) / n, 3
        ),
        "runs_calibration_alert_before_swap": sum(
            r["calibration"]["before_swap"] > 0 for r in runs
        ),
        "median_calibration_alert_hours_after_swap": _median(calibration_hours)
        if calibration_hours
        else None,
        "max_spend_over_budget": max(spend) if spend else None,
        "coverage": round(covered / checked, 4) if checked else None,
        "coverage_windows": checked,
        "labels_per_day_median": statistics.median(r["labels"]["per_day"] for r in runs),
        "min_label_agreement_with_truth": min(
            (
                r["labels"]["agreement_with_truth"]
                for r in runs
                if r["labels"]["agreement_with_truth"] is not None
            ),
            default=None,
        ),
        "median_seconds_per_run": statistics.median(r["seconds"] for r in runs),
        # A failing job means the pipeline did not run as deployed: those runs' figures
        # measure the failure, not the pipeline.
        "runs_with_job_failures": [r["seed"] for r in runs if r["job_failures"]],
    }
    figures["targets"] = {
        name: {
            "target": f"{op} {bound:g}",
            "value": figures[name],
            "met": figures[name] is not None
            and (figures[name] <= bound if op == "<=" else figures[name] >= bound),
        }
        for name, (op, bound) in TARGETS.items()
    }
    return figures


def _compare(run: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Whether two runs of one seed sampled the same decisions at the same π and raised the
    same events and alerts (replay equivalence: ingest path and speed must not matter)."""
    mine, theirs = run["_decisions"], reference["_decisions"]
    keys = mine.keys() | theirs.keys()
    missing = (False, math.nan)
    sampled_differ = sum(mine.get(k, missing)[0] != theirs.get(k, missing)[0] for k in keys)
    pi_differ = [abs(mine[k][1] - theirs[k][1]) for k in keys if k in mine and k in theirs]
    return {
        "same_decisions": mine.keys() == theirs.keys(),
        "sampled_decisions_differing": sampled_differ,
        "max_pi_difference": max(pi_differ, default=0.0),
        "same_sampled_set_and_pi": run["sampling"]["sampled_digest"]
        == reference["sampling"]["sampled_digest"],
        "same_events": run["events_digest"] == reference["events_digest"],
        "same_alerts": run["alerts_digest"] == reference["alerts_digest"],
    }


def _seed_traffic(
    seed: int, days: float, decisions_per_day: float, start: datetime | None
) -> ScenarioTraffic:
    config = ScenarioConfig(seed=seed, days=days, decisions_per_day=decisions_per_day)
    if start is not None:
        config = dataclasses.replace(config, start=start)
    return ScenarioTraffic(config)


def _stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run_seed_alone(
    seed: int,
    label: str,
    days: float,
    decisions_per_day: float,
    budget_usd: float,
    database_url: str | None,
    start: datetime | None,
    report_progress: bool,
    keep_decisions: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """One in-process run, in a process of its own when `jobs` > 1 (progress then goes to
    stderr): a seed's figures depend only on the seed, so runs side by side give what runs
    one after another give. `keep_decisions` keeps the per-decision draws for the HTTP run's
    comparison."""
    if progress is None and report_progress:
        logging.getLogger("shadoweval").setLevel(logging.ERROR)
        progress = _stderr_progress
    traffic = _seed_traffic(seed, days, decisions_per_day, start)
    label = f"{label}, {len(traffic)} decisions"
    run = run_seed(
        traffic=traffic,
        budget_usd=budget_usd,
        database_url=database_url,
        progress=progress,
        label=label,
    )
    if not keep_decisions:
        run.pop("_decisions")
    if progress is not None:
        progress(f"{label}: done in {run['seconds']:.0f} s: {_seed_line(run)}")
    return run


def _run_http_seed(
    traffic: ScenarioTraffic,
    budget_usd: float,
    database_url: str | None,
    progress: Progress | None,
    label: str,
) -> dict[str, Any]:
    label = f"{label} over HTTP"
    run = run_seed(
        traffic=traffic,
        budget_usd=budget_usd,
        database_url=database_url,
        http=True,
        progress=progress,
        label=label,
    )
    if progress is not None:
        progress(f"{label}: done in {run['seconds']:.0f} s")
    return run


def run_scenario_bench(
    *,
    seeds: int = 20,
    first_seed: int = 0,
    days: float = 3.0,
    decisions_per_day: float = 20_000.0,
    budget_usd: float = 20.0,
    http: bool = False,
    database_url: str | None = None,
    progress: Progress | None = None,
    start: datetime | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Run `seeds` seeded scenarios in-process (and, with `http`, the first seed once more
    over HTTP + replay); the per-run figures, their aggregate and the targets. With `jobs`
    > 1 the in-process runs go `jobs` at a time, each in a spawned process of its own (one
    run keeps about one core busy: its ingest and worker passes take turns), and the HTTP
    run meanwhile in this process."""
    if seeds < 1:
        raise ValueError("seeds must be ≥ 1")
    if jobs < 1:
        raise ValueError("jobs must be ≥ 1")
    quiet = logging.getLogger("shadoweval")
    level = quiet.level
    # Events log a warning each (budget exhausted, model change, …): the report shows them.
    quiet.setLevel(logging.ERROR)
    runs: list[dict[str, Any]] = []
    http_run: dict[str, Any] | None = None
    started = time.perf_counter()
    labels = [f"seed {i + 1}/{seeds} (#{first_seed + i})" for i in range(seeds)]

    def seed_arguments(i: int) -> dict[str, Any]:
        return {
            "seed": first_seed + i,
            "label": labels[i],
            "days": days,
            "decisions_per_day": decisions_per_day,
            "budget_usd": budget_usd,
            "database_url": database_url,
            "start": start,
            "report_progress": progress is not None,
            "keep_decisions": http and i == 0,
        }

    def run_http() -> dict[str, Any]:
        traffic = _seed_traffic(first_seed, days, decisions_per_day, start)
        return _run_http_seed(traffic, budget_usd, database_url, progress, labels[0])

    try:
        if jobs > 1 and seeds > 1:
            with concurrent.futures.ProcessPoolExecutor(
                max_workers=jobs, mp_context=multiprocessing.get_context("spawn")
            ) as pool:
                pending = [pool.submit(_run_seed_alone, **seed_arguments(i)) for i in range(seeds)]
                if http:
                    # Meanwhile, in this process: one more worker for the one HTTP run.
                    http_run = run_http()
                runs = [future.result() for future in pending]
        else:
            for i in range(seeds):
                runs.append(_run_seed_alone(**seed_arguments(i), progress=progress))
                if http and i == 0:
                    http_run = run_http()
        if http_run is not None:
            http_run["matches_in_process"] = _compare(http_run, runs[0])
    finally:
        quiet.setLevel(level)
    for run in (*runs, http_run or {}):
        run.pop("_decisions", None)
    return {
        "scenario": {
            "seeds": seeds,
            "first_seed": first_seed,
            "days": days,
            "decisions_per_day": decisions_per_day,
            "budget_usd": budget_usd,
            "judge_model": JUDGE_MODEL,
            "database": "postgresql" if database_url else "sqlite",
            "change_at": ScenarioConfig.change_at,
            "swap_at": ScenarioConfig.swap_at,
        },
        "runs": runs,
        "http_run": http_run,
        "aggregate": aggregate(runs),
        "seconds": round(time.perf_counter() - started, 1),
    }


# --- the report ----------------------------------------------------------------------------------


def _seed_line(run: dict[str, Any]) -> str:
    """One run's headline figures, for the progress lines (the table comes at the end)."""
    detection = run["detection"]
    return json.dumps(
        {
            "seed": run.get("seed"),
            "detected": detection["detected"],
            "delay_labels": detection["delay_labels"],
            "delay_hours": detection["delay_hours"],
            "alarms_after_change": detection.get("alarms_after_change"),
            "false_alarms": len(detection["false_alarms"]),
            "quality_alerts": run.get("quality_alerts"),
            "calibration_hours_after_swap": run["calibration"].get("first_hours_after_swap"),
            "calibration_after_swap_only": run["calibration"].get("after_swap_only"),
            "max_spend_over_budget": run["spend"].get("max_over_budget"),
            "pre_change_labels": detection.get("changed_segment_labels_before_change"),
            "budget_out_hours": [day.get("budget_out_hour") for day in run["spend"]["days"]],
            "coverage": run["coverage"].get("coverage"),
        },
        default=str,
    )


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _row(*cells: str) -> str:
    widths = (4, 10, 7, 20, 6, 6, 8, 5, 7, 8, 7)
    head = f"{cells[0]:>4} {cells[1]:<10}"
    tail = "".join(f" {cell:>{width}}" for cell, width in zip(cells[2:], widths[2:], strict=True))
    return (head + tail).rstrip()


def _run_line(run: dict[str, Any]) -> str:
    d, c = run["detection"], run["calibration"]
    delay = f"{d['delay_labels']} / {d['delay_hours']:.1f} h" if d["detected"] else "not detected"
    return _row(
        str(run["seed"]),
        run["path"],
        f"{run['labels']['per_day']:.0f}",
        delay,
        str(len(d["false_alarms"])),
        str(len(run["model_events"])),
        _fmt(c["first_hours_after_swap"]),
        str(c["before_swap"]),
        _fmt(run["spend"]["max_over_budget"], 3),
        _fmt(run["coverage"]["coverage"], 3),
        f"{run['seconds']:.0f}",
    )


def format_scenario_report(figures: dict[str, Any]) -> str:
    """The per-run table, the aggregate beside the issue's targets, and what went wrong."""
    s = figures["scenario"]
    lines = [
        f"scenario: {s['seeds']} seeds × {s['days']:g} days × {s['decisions_per_day']:,.0f} "
        f"decisions/day, budget ${s['budget_usd']:g}/day, judge {s['judge_model']} (simulated), "
        f"{s['database']}",
        "",
        _row(
            "seed",
            "path",
            "labels",
            "detection delay",
            "false",
            "model",
            "calib h",
            "calib",
            "spend/",
            "interval",
            "seconds",
        ),
        _row(
            "",
            "",
            "a day",
            "labels / hours",
            "alarms",
            "events",
            "vs swap",
            "<swap",
            "budget",
            "coverage",
            "",
        ),
    ]
    lines += [_run_line(run) for run in figures["runs"]]
    if figures.get("http_run"):
        run = figures["http_run"]
        lines.append(_run_line(run))
        lines.append(f"     http run matches in-process: {run['matches_in_process']}")
    a = figures["aggregate"]
    lines += ["", "aggregate (target, met):"]
    for name, target in a["targets"].items():
        lines.append(
            f"  {name:<46} {_fmt(target['value'], 3):>8}   target {target['target']:<8} "
            f"{'met' if target['met'] else 'NOT MET'}"
        )
    lines += [
        f"  detected in {a['detected_share']:.0%} of runs; false alarms in segments "
        f"{a['false_alarm_segments'] or 'none'}; model events per run {a['model_events_per_run']}",
        "  calibration: first alert a median "
        f"{_fmt(a['median_calibration_alert_hours_after_swap'])} h after the swap; "
        "runs with an alert before the swap: "
        f"{a['runs_calibration_alert_before_swap']}",
        f"  labels/day median {a['labels_per_day_median']:.0f}; judge labels equal to the "
        f"generator's: at least {_fmt(a['min_label_agreement_with_truth'], 4)} per run",
        f"  coverage over {a['coverage_windows']} segment-windows of {COVERAGE_WINDOW_HOURS} h "
        "with labels",
        f"  median {a['median_seconds_per_run']:.0f} s per run, {figures['seconds']:.0f} s in all",
    ]
    if a["runs_with_job_failures"]:
        lines.append(
            f"  WARNING: worker jobs failed in the runs of seeds {a['runs_with_job_failures']}; "
            "their figures are not measurements of a working pipeline:"
        )
    failures = {
        (name, str(job["last_error"])[:300])
        for run in figures["runs"]
        for name, job in run["job_failures"].items()
    }
    for name, error in sorted(failures):
        lines.append(f"    job {name}: {error}")
    return "\n".join(lines)
