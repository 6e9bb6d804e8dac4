"""`shadoweval bench sessions`: what per-turn routing loses to prompt caching, and how fast
`/v1/sessions` computes it.

A generated week of chat traffic (sessions of 1–20 turns, system prompts of 1–8k tokens
shared across sessions, 100–600 tokens added per turn, turns 5 s–15 min apart so the
5-minute cache sometimes expires) is routed twice: per turn (each turn strong with
probability 0.3) and per session (the first turn's draw for the whole session). The cache
each model would have is simulated per session, so both logs carry realistic cache reads
and writes. Reported per router: always-strong cost (sticky on the strong model), gross
savings with a warm cache, the cache cost of switching, net savings; and the time
`analytics.sessions.sessions_report` takes over the per-turn router's log (goal ≤ 2 s for
1 M decisions) from the running totals, beside the same report recomputed from the log in
the same run, with a check that both agree with the numpy reference on the same turns;
and the aggregator's time to build the totals (a catch-up over the log, and one pass
over its last 1 %, which arrives after the catch-up).
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from shadoweval.providers.pricing import DEFAULT_PRICES, ModelPrice
from shadoweval.stats import sessions as session_stats

START = datetime(2026, 11, 2, tzinfo=UTC)
WEEK_SECONDS = 7 * 86400
CHEAP = "claude-haiku-4-5"
STRONG = "claude-sonnet-4-6"
CACHE_TTL_SECONDS = 300.0
SHARED_PROMPT_WARM = 0.7  # chance a session's system prompt is already cached by others
STRONG_SHARE = 0.3


def generate_turns(decisions: int, *, per_turn: bool, seed: int) -> dict[str, np.ndarray[Any, Any]]:
    """Turns of generated chat sessions, sorted by session then time (not timed)."""
    rng = np.random.default_rng(seed)
    lengths: list[int] = []
    total = 0
    while total < decisions:
        n = min(int(rng.integers(1, 21)), decisions - total)
        lengths.append(n)
        total += n
    n_sessions = len(lengths)
    session_of = np.repeat(np.arange(n_sessions), lengths)
    turn_no = np.concatenate([np.arange(n) for n in lengths])
    prompt = rng.integers(1000, 8001, n_sessions)[session_of]
    growth = rng.integers(100, 601, decisions) * (turn_no > 0)
    # Prefix = system prompt + the conversation so far.
    cumulative = np.cumsum(growth)
    session_start_index = np.r_[0, np.cumsum(lengths)[:-1]]
    prefix = prompt + cumulative - cumulative[session_start_index][session_of]
    gaps = np.where(
        rng.random(decisions) < 0.1,
        rng.uniform(300, 900, decisions),
        rng.uniform(5, 120, decisions),
    )
    gaps[session_start_index] = 0.0
    start = rng.uniform(0, WEEK_SECONDS - 20 * 900, n_sessions)[session_of]
    offset = np.cumsum(gaps)
    seconds = start + offset - offset[session_start_index][session_of]
    if per_turn:
        strong = rng.random(decisions) < STRONG_SHARE
    else:
        strong = (rng.random(n_sessions) < STRONG_SHARE)[session_of]
    shared_warm = rng.random(decisions) < SHARED_PROMPT_WARM
    read = np.zeros(decisions, dtype=np.int64)
    write = np.zeros(decisions, dtype=np.int64)
    warm: dict[bool, tuple[int, float]] = {}
    for i in range(decisions):
        if turn_no[i] == 0:
            warm = {}
        model = bool(strong[i])
        cached = warm.get(model)
        if cached is not None and seconds[i] - cached[1] < CACHE_TTL_SECONDS:
            hit = cached[0]
        else:
            hit = int(prompt[i]) if shared_warm[i] else 0
        read[i] = hit
        write[i] = int(prefix[i]) - hit
        warm[model] = (int(prefix[i]), float(seconds[i]))
    return {
        "session": session_of,
        "seconds": seconds,
        "strong": strong,
        "input": rng.integers(20, 201, decisions),
        "output": np.where(
            strong, rng.integers(100, 701, decisions), rng.integers(80, 501, decisions)
        ),
        "read": read,
        "write": write,
    }


def _price_arrays(strong: np.ndarray[Any, Any]) -> session_stats.Prices:
    cheap, dear = DEFAULT_PRICES[CHEAP], DEFAULT_PRICES[STRONG]

    def pick(name: str) -> np.ndarray[Any, Any]:
        return np.where(strong, float(getattr(dear, name)), float(getattr(cheap, name)))

    return session_stats.Prices.of(
        pick("input"), pick("output"), pick("cache_read"), pick("cache_write")
    )


def reference_figures(turns: dict[str, np.ndarray[Any, Any]]) -> dict[str, float]:
    """Always-strong cost, warm-cache cost, actual cost and cache loss, straight from turns."""
    strong = turns["strong"]
    sticky = session_stats.sticky_cache_tokens(
        session=turns["session"],
        model=strong,
        cache_read_tokens=turns["read"],
        cache_write_tokens=turns["write"],
    )
    prices = _price_arrays(strong)
    per_mtok = session_stats.PER_MILLION
    actual = (
        turns["input"] * prices.input
        + turns["output"] * prices.output
        + turns["read"] * prices.cache_read
        + turns["write"] * prices.cache_write
    ) / per_mtok
    loss = sticky.excess_cache_write * (prices.cache_write - prices.cache_read) / per_mtok
    dear: ModelPrice = DEFAULT_PRICES[STRONG]
    always_strong = (
        turns["input"] * dear.input
        + turns["output"] * dear.output
        + sticky.sticky_cache_read * dear.cache_read
        + sticky.sticky_cache_write * dear.cache_write
    ) / per_mtok
    warm = actual - loss
    return {
        "always_strong_cost_usd": float(always_strong.sum()),
        "actual_cost_usd": float(actual.sum()),
        "gross_savings_vs_always_strong_usd": float((always_strong - warm).sum()),
        "cache_cost_of_switching_usd": float(loss.sum()),
        "net_savings_vs_always_strong_usd": float((always_strong - actual).sum()),
    }


def _load(
    engine: Any,
    router: str,
    turns: dict[str, np.ndarray[Any, Any]],
    part: np.ndarray[Any, np.dtype[np.bool_]] | None = None,
) -> None:
    """Append the turns (those in `part`, if given) to the decision log in time order."""
    from shadoweval.bench.ingest import _bulk_load

    dialect = engine.dialect.name
    base = START.replace(tzinfo=None)
    suffix = "+00" if dialect == "postgresql" else ""
    rows = []
    # In time order, as ingest appends the log.
    for i in np.argsort(turns["seconds"], kind="stable").tolist():
        if part is not None and not part[i]:
            continue
        ts = (base + timedelta(seconds=float(turns["seconds"][i]))).strftime(
            "%Y-%m-%d %H:%M:%S.%f"
        ) + suffix
        strong = bool(turns["strong"][i])
        model = STRONG if strong else CHEAP
        rows.append(
            (
                router,
                f"{router}-{i}",
                ts,
                ts,
                "strong" if strong else "cheap",
                model,
                model,
                False,
                False,
                "[]",
                "p_strong_needed",
                "{}",
                "chat",
                "{}",
                json.dumps({"usage": {"cache_write_tokens": int(turns["write"][i])}}),
                False,
                False,
                0.0,
                False,
                False,
                f"{router}-s{int(turns['session'][i])}",
                int(turns["input"][i]),
                int(turns["output"][i]),
                int(turns["read"][i]),
            )
        )
    columns = (
        "router, request_id, ts, received_at, tier, chosen_model, served_model, failover, "
        "fallback, candidates, score_semantics, segment, segment_value, features, extra, "
        "has_request, has_response, inclusion_probability, sampled, payload_stored, session_id, "
        "input_tokens, output_tokens, cache_read_tokens"
    )
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        _bulk_load(cursor, dialect, "decision", columns, rows)
        raw.commit()
        if dialect == "postgresql":
            cursor.execute("ANALYZE decision")
            raw.commit()
    finally:
        raw.close()


def run_sessions_bench(
    *, decisions: int = 1_000_000, database_url: str | None = None, seed: int = 0
) -> dict[str, Any]:
    from sqlmodel import Session

    from shadoweval.analytics import session_totals
    from shadoweval.analytics import sessions as sessions_analytics
    from shadoweval.bench.ingest import _drop_databases, _fresh_database
    from shadoweval.config import Settings
    from shadoweval.db import create_db_engine, upgrade_database
    from shadoweval.providers.pricing import PricingTable

    url, data_dir = _fresh_database(database_url, "sessions")
    # No settle: the bench's log is committed before any pass reads it.
    settings = Settings(data_dir=data_dir, database_url=url, session_totals_settle_seconds=0)
    upgrade_database(settings)
    # The API allows 5 s a statement; loading a million rows under COPY takes longer.
    engine = create_db_engine(settings, statement_timeout_seconds=1800)
    try:
        started = time.perf_counter()
        per_turn = generate_turns(decisions, per_turn=True, seed=seed)
        sticky = generate_turns(max(1, decisions // 5), per_turn=False, seed=seed + 1)
        # The last 1 % of the per-turn log (in time) arrives after the first passes.
        tail = per_turn["seconds"] >= np.quantile(per_turn["seconds"], 0.99)
        _load(engine, "per-turn", per_turn, ~tail)
        _load(engine, "sticky", sticky)
        load_seconds = time.perf_counter() - started

        started = time.perf_counter()
        session_totals.fold_new_decisions(engine, settings)
        catch_up_seconds = time.perf_counter() - started
        _load(engine, "per-turn", per_turn, tail)
        started = time.perf_counter()
        tail_pass = session_totals.fold_new_decisions(engine, settings)
        tail_seconds = time.perf_counter() - started
        if engine.dialect.name == "postgresql":
            # What autovacuum does to a live database: statistics and the visibility map
            # (index-only counts), for the new path and the old one alike.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.exec_driver_sql("VACUUM ANALYZE")

        pricing = PricingTable()
        timings = []
        with Session(engine) as session:
            for _ in range(2):  # the first run warms the page cache
                started = time.perf_counter()
                report = sessions_analytics.sessions_report(
                    session=session, pricing=pricing, router="per-turn"
                )
                timings.append(time.perf_counter() - started)
            started = time.perf_counter()
            from_log = sessions_analytics.sessions_report(
                session=session, pricing=pricing, router="per-turn", from_log=True
            )
            log_seconds = time.perf_counter() - started
            sticky_report = sessions_analytics.sessions_report(
                session=session, pricing=pricing, router="sticky"
            )
    finally:
        engine.dispose()
        if database_url is not None:
            _drop_databases(database_url, [url])
        shutil.rmtree(data_dir, ignore_errors=True)  # a million decisions: ~800 MB on SQLite
    routers = {}
    for name, turns, result in (
        ("per_turn", per_turn, report),
        ("sticky", sticky, sticky_report),
    ):
        assert result.cache is not None
        reference = reference_figures(turns)
        routers[name] = {
            "decisions": int(turns["session"].size),
            "sessions": result.cache.sessions,
            "switching_share": round(result.cache.switching_share, 4),
            **{key: round(value, 2) for key, value in reference.items()},
            "savings_rate_gross": round(
                reference["gross_savings_vs_always_strong_usd"]
                / reference["always_strong_cost_usd"],
                4,
            ),
            "savings_rate_net": round(
                reference["net_savings_vs_always_strong_usd"] / reference["always_strong_cost_usd"],
                4,
            ),
            "loss_share_of_gross_savings": round(
                reference["cache_cost_of_switching_usd"]
                / reference["gross_savings_vs_always_strong_usd"],
                4,
            ),
            "api_cache_cost_of_switching_usd": round(result.cache.cache_cost_of_switching_usd, 2),
            "api_net_savings_vs_sticky_strongest_usd": round(
                result.cache.strongest_tier.net_savings_usd, 2
            ),
            "api_net_savings_vs_sticky_first_turn_usd": round(
                result.cache.first_turn_tier.net_savings_usd, 2
            ),
            "agree": abs(
                result.cache.cache_cost_of_switching_usd - reference["cache_cost_of_switching_usd"]
            )
            < 1e-6 * max(1.0, reference["cache_cost_of_switching_usd"]),
        }
    assert from_log.cache is not None
    assert report.cache is not None
    return {
        "benchmark": "sessions",
        "database": "postgresql" if database_url else "sqlite",
        "load_seconds_not_timed": round(load_seconds, 1),
        # GET /v1/sessions over the running totals (warm; the first run warms the cache).
        "sessions_report_seconds": round(timings[-1], 3),
        "sessions_report_seconds_cold": round(timings[0], 3),
        # The same figures recomputed from the decision log (the path before the totals).
        "sessions_report_from_log_seconds": round(log_seconds, 3),
        "from_log_agrees": from_log.cache.turns == report.cache.turns
        and abs(
            from_log.cache.cache_cost_of_switching_usd - report.cache.cache_cost_of_switching_usd
        )
        < 1e-9 * max(1.0, report.cache.cache_cost_of_switching_usd),
        # The aggregator: one catch-up over the log, then one pass over its last 1 %.
        "aggregate_catch_up_seconds": round(catch_up_seconds, 1),
        "aggregate_pass_seconds": round(tail_seconds, 3),
        "aggregate_pass_turns": tail_pass["session_turns_copied"],
        "target_seconds": 2.0,
        "routers": routers,
    }


def format_sessions_report(figures: dict[str, Any]) -> str:
    lines = [
        f"{figures['database']}: /v1/sessions over {figures['routers']['per_turn']['decisions']} "
        f"decisions in {figures['sessions_report_seconds']:.2f} s "
        f"(cold {figures['sessions_report_seconds_cold']:.2f} s; "
        f"goal ≤ {figures['target_seconds']} s); recomputed from the log "
        f"{figures['sessions_report_from_log_seconds']:.2f} s, agree: "
        f"{figures['from_log_agrees']}",
        f"  aggregator: catch-up over the log {figures['aggregate_catch_up_seconds']:.1f} s, "
        f"a pass over {figures['aggregate_pass_turns']} new turns "
        f"{figures['aggregate_pass_seconds']:.2f} s",
    ]
    for name, r in figures["routers"].items():
        lines.append(
            f"  {name}: gross savings {r['gross_savings_vs_always_strong_usd']:.2f} USD "
            f"({r['savings_rate_gross']:.1%}), cache cost of switching "
            f"{r['cache_cost_of_switching_usd']:.2f} USD, "
            f"net {r['net_savings_vs_always_strong_usd']:.2f} USD "
            f"({r['savings_rate_net']:.1%}); agree: {r['agree']}"
        )
    return "\n".join(lines)
