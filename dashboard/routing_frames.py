"""The routing page's tables: tier mix over decision time, savings per day, monitoring
spend and savings net of it, the session cache table (pure, no I/O, no Streamlit)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
from shadoweval.dashboard.formatting import percent_value, usd, usd_interval

from shadoweval.stats import rates


def tier_mix(decisions: Iterable[Mapping[str, Any]], *, freq: str = "h") -> pd.DataFrame:
    """Decisions per time bucket (of the decision's ts) and tier, with the bucket's end (so
    a bar spans its bucket) and each tier's share of the bucket (%)."""
    columns = ["bucket", "bucket end", "tier", "decisions", "share of bucket (%)"]
    frame = pd.DataFrame.from_records(
        [{"ts": d["ts"], "tier": d["tier"]} for d in decisions], columns=["ts", "tier"]
    )
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame["bucket"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601").dt.floor(freq)
    counted = frame.groupby(["bucket", "tier"]).size().rename("decisions").reset_index()
    counted["bucket end"] = counted["bucket"] + pd.tseries.frequencies.to_offset(freq)
    totals = counted.groupby("bucket")["decisions"].transform("sum")
    counted["share of bucket (%)"] = 100 * counted["decisions"] / totals
    return counted.sort_values(["bucket", "tier"]).reset_index(drop=True)[columns]


SHARE_COLUMNS = [
    "bucket",
    "bucket end",
    "count",
    "n",
    "share (%)",
    "95 % CI low (%)",
    "95 % CI high (%)",
]


def share_series(ts: Sequence[Any], flags: Sequence[bool], *, freq: str = "10min") -> pd.DataFrame:
    """Per bucket of decision time: how many of the `n` items are flagged, as a share (%) with
    its 95 % Wilson interval (`rates.wilson_interval`); empty buckets are left out."""
    frame = pd.DataFrame({"ts": list(ts), "flag": [bool(f) for f in flags]})
    if frame.empty:
        return pd.DataFrame(columns=SHARE_COLUMNS)
    frame["bucket"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601").dt.floor(freq)
    grouped = frame.groupby("bucket")["flag"].agg(["sum", "count"]).reset_index()
    return share_series_from_counts(grouped["bucket"], grouped["sum"], grouped["count"], freq=freq)


def share_series_from_counts(
    starts: Sequence[Any], counts: Sequence[int], ns: Sequence[int], *, freq: str = "h"
) -> pd.DataFrame:
    """`share_series` from counts the API already added up per bucket (bucket start,
    flagged, n); buckets with n = 0 are left out."""
    records = []
    for bucket, count, n in zip(
        pd.to_datetime(list(starts), utc=True, format="ISO8601"), counts, ns, strict=True
    ):
        if not n:
            continue
        low, high = rates.wilson_interval(count / n, n, 0.95)
        records.append(
            {
                "bucket": bucket,
                "bucket end": bucket + pd.tseries.frequencies.to_offset(freq),
                "count": int(count),
                "n": int(n),
                "share (%)": 100 * count / n,
                "95 % CI low (%)": 100 * low,
                "95 % CI high (%)": 100 * high,
            }
        )
    return pd.DataFrame.from_records(records, columns=SHARE_COLUMNS)


def bucket_for(stamps: Sequence[Any]) -> tuple[str, str]:
    """(pandas frequency, its words): 10 minutes for a span under a day, else an hour."""
    if not stamps:
        return "10min", "10 minutes"
    times = pd.to_datetime(list(stamps), utc=True, format="ISO8601")
    short = times.max() - times.min() < pd.Timedelta(days=1)
    return ("10min", "10 minutes") if short else ("h", "hour")


def strong_share_series(
    decisions: Iterable[Mapping[str, Any]], *, strong_tier: str = "strong", freq: str = "h"
) -> pd.DataFrame:
    """The share (%) of decisions routed to `strong_tier` per bucket, with its 95 % interval."""
    rows = list(decisions)
    return share_series(
        [d["ts"] for d in rows], [d["tier"] == strong_tier for d in rows], freq=freq
    )


ROUTER_POINT = "router (operating point)"


PARETO_COLUMNS = [
    "point",
    "cost per request (USD)",
    "mean judge score (1–10)",
    "score 95 % CI low",
    "score 95 % CI high",
    "judged pairs",
]


def _mean_and_variance(values: pd.Series) -> tuple[float, float, int]:
    """The mean, the variance of the mean (s²/n; 0 for one value) and n."""
    n = int(values.count())
    mean = float(values.mean())
    return mean, (float(values.var(ddof=1)) / n if n > 1 else 0.0), n


def pareto_points(
    economics: Mapping[str, Any], verdicts: Iterable[Mapping[str, Any]]
) -> pd.DataFrame:
    """Cost per request (USD) against mean judge score (1–10) for each model and the router,
    each score with its 95 % normal interval (mean ± 1.96 s/√n).

    The router's score mixes the cheaper answer on cheap-routed pairs with the
    stronger answer on strong-routed ones, weighted by its strong share s; its variance
    is (1 − s)² var₁ + s² var₂ (the share taken as known).
    """
    done = [v for v in verdicts if v.get("status") == "done" and v.get("score_cheaper") is not None]
    if not done or not economics.get("n_requests"):
        return pd.DataFrame(columns=PARETO_COLUMNS)
    frame = pd.DataFrame.from_records(done)
    cheap = _mean_and_variance(frame["score_cheaper"])
    strong = _mean_and_variance(frame["score_stronger"])
    forward = frame[frame["direction"] == "forward"]
    reverse = frame[frame["direction"] == "reverse"]
    strong_share = float((economics.get("strong_share") or {}).get("share") or 0.0)
    routed_cheap = _mean_and_variance(forward["score_cheaper"]) if not forward.empty else cheap
    routed_strong = _mean_and_variance(reverse["score_stronger"]) if not reverse.empty else strong
    router = (
        (1 - strong_share) * routed_cheap[0] + strong_share * routed_strong[0],
        (1 - strong_share) ** 2 * routed_cheap[1] + strong_share**2 * routed_strong[1],
        len(done),
    )
    break_even = economics.get("break_even") or {}
    rows = [
        ("always cheap", break_even.get("weak_cost_per_request_usd"), cheap),
        (
            f"always strong ({economics.get('strong_model') or 'strong'})",
            economics.get("always_strong_cost_per_request_usd"),
            strong,
        ),
        (ROUTER_POINT, economics.get("realized_cost_per_request_usd"), router),
    ]
    return pd.DataFrame.from_records(
        [
            (name, cost, mean, mean - 1.96 * var**0.5, mean + 1.96 * var**0.5, n)
            for name, cost, (mean, var, n) in rows
            if cost is not None
        ],
        columns=PARETO_COLUMNS,
    )


def utc_days(first_ts: str, last_ts: str, *, limit: int) -> list[datetime]:
    """Midnights (UTC) of the days from `first_ts` to `last_ts`, the latest `limit` of them."""
    start = pd.Timestamp(first_ts).tz_convert("UTC").floor("D")
    end = pd.Timestamp(last_ts).tz_convert("UTC").floor("D")
    days = pd.date_range(start, end, freq="D")
    return [d.to_pydatetime() for d in days[-limit:]]


def economics_days(
    days: Iterable[Mapping[str, Any]], *, limit: int
) -> list[tuple[datetime, Mapping[str, Any]]]:
    """The latest `limit` days of GET /v1/economics?by=day as (UTC midnight, figures)."""
    pairs = [(pd.Timestamp(d["day"]).tz_convert("UTC").to_pydatetime(), d) for d in days]
    return sorted(pairs, key=lambda pair: pair[0])[-limit:]


def savings_per_day(per_day: Iterable[tuple[datetime, Mapping[str, Any]]]) -> pd.DataFrame:
    """Savings (USD) per UTC day with the 95 % interval of n × savings per request."""
    records = []
    for day, economics in per_day:
        n = int(economics.get("n_requests") or 0)
        if not n:
            continue
        interval = economics.get("savings_per_request_ci95_usd") or [None, None]
        low, high = (None, None) if None in interval else (interval[0] * n, interval[1] * n)
        records.append(
            {
                "day (UTC)": day.date().isoformat(),
                "decisions": n,
                "savings (USD)": economics.get("savings_total_usd"),
                "95 % CI low (USD)": low,
                "95 % CI high (USD)": high,
                "savings rate (%)": percent_value(economics.get("savings_rate")),
            }
        )
    return pd.DataFrame.from_records(
        records,
        columns=[
            "day (UTC)",
            "decisions",
            "savings (USD)",
            "95 % CI low (USD)",
            "95 % CI high (USD)",
            "savings rate (%)",
        ],
    )


SPEND_COLUMNS = {
    "day": "day (UTC, decision ts)",
    "shadow_usd": "shadow re-runs (USD)",
    "judge_usd": "judge calls (USD)",
    "total_usd": "monitoring total (USD)",
    "shadow_runs": "shadow runs",
    "verdicts": "verdicts",
}


def spend_frame(spend: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """/v1/spend rows with the names a reader understands (USD in the headers)."""
    return pd.DataFrame.from_records(
        [{label: row.get(key) for key, label in SPEND_COLUMNS.items()} for row in spend],
        columns=list(SPEND_COLUMNS.values()),
    )


@dataclass(frozen=True)
class NetSavings:
    """Savings against always-strong in a window, net of what monitoring the router cost
    (shadow re-runs and judge calls, from /v1/spend), in USD over the window."""

    decisions: int
    savings_usd: float  # already net of the router's own overhead (realized cost includes it)
    savings_ci95_usd: tuple[float, float] | None
    shadow_usd: float
    judge_usd: float

    @property
    def monitoring_usd(self) -> float:
        return self.shadow_usd + self.judge_usd

    @property
    def net_usd(self) -> float:
        return self.savings_usd - self.monitoring_usd

    @property
    def net_ci95_usd(self) -> tuple[float, float] | None:
        """Monitoring spend is counted, not estimated: the interval is the savings' one."""
        if self.savings_ci95_usd is None:
            return None
        low, high = self.savings_ci95_usd
        return low - self.monitoring_usd, high - self.monitoring_usd

    @property
    def verdict(self) -> str:
        """ "pays", "costs" or "unclear" (the 95 % interval of the net figure holds 0)."""
        interval = self.net_ci95_usd
        if interval is not None and interval[0] <= 0 <= interval[1]:
            return "unclear"
        return "pays" if self.net_usd > 0 else "costs"


def net_of_monitoring(
    economics: Mapping[str, Any], spend: Iterable[Mapping[str, Any]]
) -> NetSavings | None:
    """The window's savings (n × savings per request, with its 95 % interval) less the
    monitoring spend of the same router and window; None without decisions."""
    n = int(economics.get("n_requests") or 0)
    if not n:
        return None
    interval = economics.get("savings_per_request_ci95_usd")
    rows = list(spend)
    return NetSavings(
        decisions=n,
        savings_usd=float(economics.get("savings_total_usd") or 0.0),
        savings_ci95_usd=(
            (n * float(interval[0]), n * float(interval[1]))
            if interval and len(interval) == 2 and None not in interval
            else None
        ),
        shadow_usd=sum(float(r.get("shadow_usd") or 0.0) for r in rows),
        judge_usd=sum(float(r.get("judge_usd") or 0.0) for r in rows),
    )


def net_savings_text(net: NetSavings, window: str) -> str:
    """The break-even banner: does routing pay for itself once monitoring it is paid for?"""
    interval = net.net_ci95_usd
    ci = (
        f" (95 % CI {usd(interval[0], digits=4)} to {usd(interval[1], digits=4)})"
        if interval
        else ""
    )
    lead = {
        "pays": "The router pays for itself, net of monitoring",
        "costs": "Net of monitoring, the router costs more than it saves",
        "unclear": "Net of monitoring, the router roughly breaks even (the interval holds $0)",
    }[net.verdict]
    return (
        f"{lead}: {usd(net.net_usd, digits=4)}{ci} over {net.decisions} decisions in {window} = "
        f"savings against always-strong {usd(net.savings_usd, digits=4)} (router overhead "
        f"included) − monitoring {usd(net.monitoring_usd, digits=4)} (shadow re-runs "
        f"{usd(net.shadow_usd, digits=4)}, judge calls {usd(net.judge_usd, digits=4)}); "
        f"{usd(net.net_usd / net.decisions, digits=6)} per request."
    )


def session_cache_frame(cache: Mapping[str, Any]) -> pd.DataFrame:
    """Per-turn routing against the two session-sticky policies of /v1/sessions (USD): gross
    savings with a warm cache, the cache cost of switching, net savings, and the net savings
    per session with its 95 % interval."""
    loss = cache.get("cache_cost_of_switching_usd")
    records = []
    for key, label in (
        ("first_turn_tier", "every turn on the first turn's tier"),
        ("strongest_tier", "every turn on the session's strongest tier"),
    ):
        policy = cache.get(key) or {}
        per_session = policy.get("net_savings_per_session_usd") or {}
        low, high = per_session.get("ci95_low"), per_session.get("ci95_high")
        records.append(
            {
                "against": label,
                "gross savings (USD)": policy.get("gross_savings_usd"),
                "cache cost of switching (USD)": loss,
                "net savings (USD)": policy.get("net_savings_usd"),
                "net per session (USD, 95 % CI)": usd_interval(
                    per_session.get("mean"),
                    None if low is None or high is None else [float(low), float(high)],
                ),
                "cache loss (% of gross savings)": percent_value(
                    policy.get("loss_share_of_gross_savings")
                ),
            }
        )
    return pd.DataFrame.from_records(records)


def time_windows(start: datetime, end: datetime, count: int) -> list[tuple[datetime, datetime]]:
    """`count` equal consecutive windows covering [start, end)."""
    if count < 1 or end <= start:
        return []
    step = (end - start) / count
    return [(start + i * step, start + (i + 1) * step) for i in range(count)]
