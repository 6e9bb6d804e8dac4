"""Prometheus counters of one app instance, in a registry of its own.

Ingest writes to these counters, so this module imports no stage at all; the gauges read
from the database at scrape time are collectors in `shadoweval.gauges`, handed in by the app.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.registry import Collector

# No `*_created` series: they double the series count and no dashboard or rule reads them
# (a counter's reset is visible in the counter itself). A process-wide switch of
# prometheus_client, read when a scrape renders the samples.
disable_created_metrics()  # type: ignore[no-untyped-call]


class RejectedItem(Protocol):
    """An item ingest refused (ingest.models.ItemError), as far as the counters read it."""

    @property
    def index(self) -> int: ...

    @property
    def type(self) -> str: ...


class ApiMetrics:
    """Counters and histograms the API exports on /metrics."""

    def __init__(self, collectors: Iterable[Collector] = ()) -> None:
        self.registry = CollectorRegistry()
        for collector in collectors:
            self.registry.register(collector)
        self.decisions_ingested = Counter(
            "shadoweval_decisions_ingested_total",
            "Decisions stored by ingest (new rows).",
            registry=self.registry,
        )
        self.decisions_duplicate = Counter(
            "shadoweval_decisions_duplicate_total",
            "Decisions received again for a (router, request_id) already stored.",
            registry=self.registry,
        )
        self.decisions_sampled = Counter(
            "shadoweval_decisions_sampled_total",
            "Stored decisions selected for shadow evaluation.",
            registry=self.registry,
        )
        self.decisions_rejected = Counter(
            "shadoweval_decisions_rejected_total",
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

    def record_item_errors(self, errors: Iterable[RejectedItem]) -> None:
        # One rejection per invalid item, labelled by the first reason found for it.
        seen: set[int] = set()
        for error in errors:
            if error.index not in seen:
                seen.add(error.index)
                self.decisions_rejected.labels(reason=error.type).inc()

    def record_request_rejected(self, reason: str) -> None:
        self.decisions_rejected.labels(reason=reason).inc()
