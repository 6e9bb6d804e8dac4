"""Prometheus metrics of one app instance, in a registry of its own."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from shadoweval.db import utcnow
from shadoweval.ingest.models import ItemError

log = logging.getLogger(__name__)


class ApiMetrics:
    """Counters and histograms the API exports on /metrics."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.registry = CollectorRegistry()
        if engine is not None:
            self.registry.register(DatabaseCollector(engine))
        self.decisions_ingested = Counter(
            "shadoweval_decisions_ingested",
            "Decisions stored by ingest (new rows).",
            registry=self.registry,
        )
        self.decisions_duplicate = Counter(
            "shadoweval_decisions_duplicate",
            "Decisions received again for a (router, request_id) already stored.",
            registry=self.registry,
        )
        self.decisions_sampled = Counter(
            "shadoweval_decisions_sampled",
            "Stored decisions selected for shadow evaluation.",
            registry=self.registry,
        )
        self.decisions_rejected = Counter(
            "shadoweval_decisions_rejected",
            "Items or whole requests refused by ingest, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "shadoweval_http_request_duration_seconds",
            "HTTP request latency by route template, method and status.",
            ["method", "route", "status"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

    def record_item_errors(self, errors: list[ItemError]) -> None:
        # One rejection per invalid item, labelled by the first reason found for it.
        seen: set[int] = set()
        for error in errors:
            if error.index not in seen:
                seen.add(error.index)
                self.decisions_rejected.labels(reason=error.type).inc()

    def record_request_rejected(self, reason: str) -> None:
        self.decisions_rejected.labels(reason=reason).inc()


class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time: queue depths and worker heartbeats.

    Read at scrape time so every API replica reports the same truth, whatever
    worker wrote it.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> list[Metric]:
        return []  # no database access when the collector is registered

    def collect(self) -> Iterator[Metric]:
        from shadoweval.runtime import service as runtime_service

        try:
            depths = runtime_service.queue_depths(self.engine)
            beats = runtime_service.heartbeats(self.engine)
            budgets = runtime_service.budget_today(self.engine, utcnow())
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
            "Shadow spend reserved for today's (UTC) decisions, by budget account.",
            labels=["account"],
        )
        limit = GaugeMetricFamily(
            "shadoweval_budget_limit_usd", "Today's budget by account.", labels=["account"]
        )
        refused = GaugeMetricFamily(
            "shadoweval_budget_refused_decisions",
            "Decisions not sampled today because the budget was spent.",
            labels=["account"],
        )
        exhausted = GaugeMetricFamily(
            "shadoweval_budget_exhausted",
            "1 when today's budget of the account is spent and sampling has stopped.",
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
