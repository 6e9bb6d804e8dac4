"""What per-turn routing costs a session: prompt-cache loss of tier switches, tool-loop escalations.

Pure numpy, no I/O. The source of the question is reference/000_07fba434b0e1916a.txt,
"Trade-offs, failure modes, gotchas": a router that sends some turns of a session to the
cheap model and others to the strong one writes the session's prefix into two cache
namespaces (the cache is per model), so it pays cache-write prices where a session-sticky
router would read a warm cache; and a cheap model that misuses a tool forces an escalation
in the middle of a tool loop.

Definitions (docs/architecture.md, "Sessions"), per session, turns in (ts, id) order;
turn i has served model m_i, cache reads r_i and cache writes w_i (tokens), cached
prefix c_i = r_i + w_i, and prices per token pr(m), pw(m) (cache read / write):

- a **model switch** at turn i > 1: m_i ≠ m_{i−1} (a new cache namespace);
- **sticky cache writes** w*_i: w_i on turns without a switch (a sticky router would have
  had the same cache behaviour, expiries included); on a switch turn only the growth of
  the prefix since the previous turn, w*_i = min(w_i, max(0, c_i − c_{i−1})): the rest was
  warm on the previous model and a sticky session would have read it. r*_i = c_i − w*_i;
- **excess writes** e_i = w_i − w*_i ≥ 0;
- **cache cost of switching** L = Σ_i e_i (pw(m_i) − pr(m_i)): the premium the session paid
  for writing tokens a sticky session would have read, on the model that served the turn;
- actual cost P = Σ_i cost(m_i; in_i, out_i, r_i, w_i) from the token counts and the price
  table, and the same with a warm cache H = P − L;
- **sticky counterfactual** on model M: S(M) = Σ_i cost(M; in_i, out_i, r*_i, w*_i) — every
  turn on M with the same tokens. Two of them: M = the first turn's model, and M = the
  session's strongest model (highest input + output price among its turns);
- **gross savings** of per-turn routing against S(M): G = S(M) − H; **net savings**
  N = S(M) − P = G − L.

All totals are sums over the sessions of the window (a census of the log, no
estimation). Per-session means carry normal (CLT) 95 % intervals over sessions; the
share of sessions that switch a Wilson interval; the loss as a share of gross savings
the linearised (delta-method) interval of a ratio of sums over sessions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shadoweval.stats import rates

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
PER_MILLION = 1_000_000.0


@dataclass(frozen=True)
class StickyTokens:
    """Per turn: model switch flag, sticky cache reads/writes and excess writes (tokens)."""

    switched: NDArray[np.bool_]
    sticky_cache_read: FloatArray
    sticky_cache_write: FloatArray
    excess_cache_write: FloatArray


def sticky_cache_tokens(
    *,
    session: ArrayLike,
    model: ArrayLike,
    cache_read_tokens: ArrayLike,
    cache_write_tokens: ArrayLike,
) -> StickyTokens:
    """The per-turn counterfactual of the module docstring.

    Inputs are one entry per turn, sorted by session and then by (ts, id) within it.
    The service computes the same thing in SQL (LAG over the session); this is the
    reference it is tested against.
    """
    sessions = np.asarray(session)
    models = np.asarray(model)
    reads = _tokens("cache_read_tokens", cache_read_tokens, sessions.size)
    writes = _tokens("cache_write_tokens", cache_write_tokens, sessions.size)
    if sessions.ndim != 1 or models.shape != sessions.shape:
        raise ValueError("session and model must be 1-D arrays of the same length")
    cached = reads + writes
    same_session = np.zeros(sessions.size, dtype=np.bool_)
    same_session[1:] = sessions[1:] == sessions[:-1]
    switched = np.zeros(sessions.size, dtype=np.bool_)
    switched[1:] = same_session[1:] & (models[1:] != models[:-1])
    growth = np.zeros(sessions.size)
    growth[1:] = np.maximum(0.0, cached[1:] - cached[:-1])
    sticky_write = np.where(switched, np.minimum(writes, growth), writes)
    return StickyTokens(
        switched=switched,
        sticky_cache_read=cached - sticky_write,
        sticky_cache_write=sticky_write,
        excess_cache_write=writes - sticky_write,
    )


@dataclass(frozen=True)
class Prices:
    """USD per million tokens, one entry per row of the input it goes with."""

    input: FloatArray
    output: FloatArray
    cache_read: FloatArray
    cache_write: FloatArray

    @classmethod
    def of(
        cls, input: ArrayLike, output: ArrayLike, cache_read: ArrayLike, cache_write: ArrayLike
    ) -> Prices:
        arrays = [np.asarray(a, dtype=np.float64) for a in (input, output, cache_read, cache_write)]
        return cls(*arrays)

    def take(self, index: IntArray | NDArray[np.bool_]) -> Prices:
        return Prices(
            self.input[index], self.output[index], self.cache_read[index], self.cache_write[index]
        )


@dataclass(frozen=True)
class MeanInterval:
    """A mean over sessions with its normal 95 % interval (None bounds when n < 2)."""

    mean: float
    ci95_low: float | None
    ci95_high: float | None
    n: int


@dataclass(frozen=True)
class Counterfactual:
    """Per-turn routing against one session-sticky policy; amounts in USD over the window."""

    name: str
    sticky_cost_usd: float
    sticky_cache_read_usd: float
    sticky_cache_write_usd: float
    gross_savings_usd: float
    net_savings_usd: float
    net_savings_per_session_usd: MeanInterval
    loss_share_of_gross_savings: float | None
    loss_share_ci95: tuple[float, float] | None


@dataclass(frozen=True)
class CacheByModel:
    """Cache tokens and USD of one served model over the window (actual, as logged)."""

    model: str
    turns: int
    cache_read_tokens: int
    cache_write_tokens: int
    cache_read_usd: float
    cache_write_usd: float
    excess_cache_write_tokens: int
    cache_cost_of_switching_usd: float


@dataclass(frozen=True)
class SessionCacheReport:
    """Session figures of one router (or segment) over a window of decision time."""

    sessions: int
    turns: int
    turns_per_session: MeanInterval
    tier_switches: int
    tier_switches_per_session: MeanInterval
    switching_share: float
    switching_share_ci95: tuple[float, float]
    actual_cost_usd: float
    warm_cache_cost_usd: float
    cache_read_usd: float
    cache_write_usd: float
    excess_cache_write_tokens: int
    cache_cost_of_switching_usd: float
    cache_cost_per_switching_session_usd: MeanInterval | None
    by_model: list[CacheByModel]
    first_turn_tier: Counterfactual
    strongest_tier: Counterfactual


def _tokens(name: str, values: ArrayLike, n: int | None = None) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or (n is not None and array.size != n):
        raise ValueError(f"{name} must be a 1-D array of length {n}")
    if np.isnan(array).any() or np.isinf(array).any() or (array < 0).any():
        raise ValueError(f"{name} must be finite and nonnegative")
    return array


def mean_interval(values: FloatArray) -> MeanInterval:
    """Mean ± 1.96 sd/√n over sessions (CLT); no interval for fewer than two sessions."""
    n = int(values.size)
    if n == 0:
        return MeanInterval(math.nan, None, None, 0)
    mean = float(values.mean())
    if n < 2:
        return MeanInterval(mean, None, None, n)
    half = rates.Z_95 * float(values.std(ddof=1)) / math.sqrt(n)
    return MeanInterval(mean, mean - half, mean + half, n)


def ratio_interval(
    numerator: FloatArray, denominator: FloatArray
) -> tuple[float | None, tuple[float, float] | None]:
    """Σnum/Σden over sessions with the linearised 95 % interval of a ratio estimator:
    z_s = (num_s − R den_s) / mean(den), se = sd(z)/√n (Cochran 1977, §6.4)."""
    total = float(denominator.sum())
    if denominator.size == 0 or total <= 0:
        return None, None
    ratio = float(numerator.sum()) / total
    if denominator.size < 2:
        return ratio, None
    z = (numerator - ratio * denominator) / (total / denominator.size)
    half = rates.Z_95 * float(z.std(ddof=1)) / math.sqrt(denominator.size)
    return ratio, (ratio - half, ratio + half)


def _cost(
    prices: Prices,
    input_tokens: FloatArray,
    output_tokens: FloatArray,
    cache_read: FloatArray,
    cache_write: FloatArray,
) -> FloatArray:
    return (
        input_tokens * prices.input
        + output_tokens * prices.output
        + cache_read * prices.cache_read
        + cache_write * prices.cache_write
    ) / PER_MILLION


@dataclass(frozen=True)
class SessionSums:
    """One entry per session: its sums over turns, the USD of its actual turns, and the
    prices of its two sticky models (first turn's, strongest).

    `sticky_cache_read`/`_write` are Σ r*_i and Σ w*_i; `actual_usd` is P and
    `loss_usd` is L of the module docstring, per session."""

    turns: FloatArray
    tier_switches: FloatArray
    input_tokens: FloatArray
    output_tokens: FloatArray
    sticky_cache_read: FloatArray
    sticky_cache_write: FloatArray
    actual_usd: FloatArray
    loss_usd: FloatArray
    first_turn_prices: Prices
    strongest_prices: Prices

    def take(self, index: IntArray | NDArray[np.bool_]) -> SessionSums:
        return SessionSums(
            **{name: getattr(self, name)[index] for name in _SESSION_ARRAYS},
            first_turn_prices=self.first_turn_prices.take(index),
            strongest_prices=self.strongest_prices.take(index),
        )


_SESSION_ARRAYS = (
    "turns",
    "tier_switches",
    "input_tokens",
    "output_tokens",
    "sticky_cache_read",
    "sticky_cache_write",
    "actual_usd",
    "loss_usd",
)


def model_strength(prices: Prices) -> FloatArray:
    """What makes a model the session's strongest: its input + output price (ties go to
    the model whose name sorts last)."""
    return prices.input + prices.output


def cache_by_model(
    *,
    model: str,
    prices: Prices,
    turns: float,
    cache_read_tokens: float,
    cache_write_tokens: float,
    excess_cache_write_tokens: float,
) -> CacheByModel:
    """One model's cache figures from its token sums; `prices` holds its one price."""
    premium = float(prices.cache_write[0] - prices.cache_read[0]) / PER_MILLION
    return CacheByModel(
        model=model,
        turns=int(turns),
        cache_read_tokens=int(cache_read_tokens),
        cache_write_tokens=int(cache_write_tokens),
        cache_read_usd=float(cache_read_tokens * prices.cache_read[0] / PER_MILLION),
        cache_write_usd=float(cache_write_tokens * prices.cache_write[0] / PER_MILLION),
        excess_cache_write_tokens=int(excess_cache_write_tokens),
        cache_cost_of_switching_usd=float(excess_cache_write_tokens * premium),
    )


def session_cache_report(
    *,
    session: ArrayLike,
    model: ArrayLike,
    prices: Prices,
    first_turn: ArrayLike,
    turns: ArrayLike,
    tier_switches: ArrayLike,
    input_tokens: ArrayLike,
    output_tokens: ArrayLike,
    cache_read_tokens: ArrayLike,
    cache_write_tokens: ArrayLike,
    excess_cache_write_tokens: ArrayLike,
) -> SessionCacheReport:
    """The session figures from one row per (session, served model) of the window.

    Each row holds the sums over that session's turns on that model: turns, tier
    switches (turns whose tier differs from the previous turn's), input/output/cache
    tokens and excess cache writes (`sticky_cache_tokens`). `first_turn` marks the row
    holding the session's first turn; `prices` are the row's model prices (USD/Mtok).
    The formulas are those of the module docstring; `session_report` does the rest.
    """
    sessions = np.asarray(session)
    if sessions.ndim != 1 or sessions.size == 0:
        raise ValueError("session must be a non-empty 1-D array, one entry per (session, model)")
    n_rows = sessions.size
    models = np.asarray(model).astype(str)
    first = np.asarray(first_turn, dtype=np.bool_)
    turn_count = _tokens("turns", turns, n_rows)
    switches = _tokens("tier_switches", tier_switches, n_rows)
    inputs = _tokens("input_tokens", input_tokens, n_rows)
    outputs = _tokens("output_tokens", output_tokens, n_rows)
    reads = _tokens("cache_read_tokens", cache_read_tokens, n_rows)
    writes = _tokens("cache_write_tokens", cache_write_tokens, n_rows)
    excess = _tokens("excess_cache_write_tokens", excess_cache_write_tokens, n_rows)
    if (excess > writes).any():
        raise ValueError("excess cache writes cannot exceed cache writes")
    keys, code = np.unique(sessions, return_inverse=True)
    n_sessions = keys.size
    firsts_per_session = np.bincount(code, weights=first.astype(np.float64), minlength=n_sessions)
    if first.shape != sessions.shape or (firsts_per_session != 1).any():
        raise ValueError("first_turn must mark exactly one row per session")

    def per_session(values: FloatArray) -> FloatArray:
        return np.bincount(code, weights=values, minlength=n_sessions).astype(np.float64)

    premium = (prices.cache_write - prices.cache_read) / PER_MILLION
    first_row = np.empty(n_sessions, dtype=np.int64)
    first_row[code[first]] = np.flatnonzero(first)
    # The strongest row per session: sort by (session, strength, model name) and take each
    # session's last.
    order = np.lexsort((models, model_strength(prices), code))
    last_of_session = np.r_[code[order][1:] != code[order][:-1], True]
    strongest_row = np.empty(n_sessions, dtype=np.int64)
    strongest_row[code[order][last_of_session]] = order[last_of_session]
    sums = SessionSums(
        turns=per_session(turn_count),
        tier_switches=per_session(switches),
        input_tokens=per_session(inputs),
        output_tokens=per_session(outputs),
        sticky_cache_read=per_session(reads + excess),
        sticky_cache_write=per_session(writes - excess),
        actual_usd=per_session(_cost(prices, inputs, outputs, reads, writes)),
        loss_usd=per_session(excess * premium),
        first_turn_prices=prices.take(first_row),
        strongest_prices=prices.take(strongest_row),
    )
    by_model = []
    for name in np.unique(models):
        rows = models == name
        by_model.append(
            cache_by_model(
                model=str(name),
                prices=prices.take(np.flatnonzero(rows)[:1]),
                turns=float(turn_count[rows].sum()),
                cache_read_tokens=float(reads[rows].sum()),
                cache_write_tokens=float(writes[rows].sum()),
                excess_cache_write_tokens=float(excess[rows].sum()),
            )
        )
    return session_report(sums, by_model)


def session_report(sums: SessionSums, by_model: list[CacheByModel]) -> SessionCacheReport:
    """The session figures from per-session sums (`SessionSums`, one entry per session)
    and the per-model cache figures of the same sessions."""
    n_sessions = int(sums.turns.size)
    if n_sessions == 0:
        raise ValueError("no sessions")
    actual, loss = sums.actual_usd, sums.loss_usd
    warm = actual - loss

    def counterfactual(name: str, sticky_prices: Prices) -> Counterfactual:
        sticky = _cost(
            sticky_prices,
            sums.input_tokens,
            sums.output_tokens,
            sums.sticky_cache_read,
            sums.sticky_cache_write,
        )
        gross = sticky - warm
        net = sticky - actual
        share, share_ci = ratio_interval(loss, gross)
        return Counterfactual(
            name=name,
            sticky_cost_usd=float(sticky.sum()),
            sticky_cache_read_usd=float(
                (sums.sticky_cache_read * sticky_prices.cache_read).sum() / PER_MILLION
            ),
            sticky_cache_write_usd=float(
                (sums.sticky_cache_write * sticky_prices.cache_write).sum() / PER_MILLION
            ),
            gross_savings_usd=float(gross.sum()),
            net_savings_usd=float(net.sum()),
            net_savings_per_session_usd=mean_interval(net),
            loss_share_of_gross_savings=share,
            loss_share_ci95=share_ci,
        )

    switching = sums.tier_switches > 0
    n_switching = int(switching.sum())
    share_ci = rates.wilson_interval(n_switching / n_sessions, n_sessions, 0.95)
    return SessionCacheReport(
        sessions=n_sessions,
        turns=int(sums.turns.sum()),
        turns_per_session=mean_interval(sums.turns),
        tier_switches=int(sums.tier_switches.sum()),
        tier_switches_per_session=mean_interval(sums.tier_switches),
        switching_share=n_switching / n_sessions,
        switching_share_ci95=share_ci,
        actual_cost_usd=float(actual.sum()),
        warm_cache_cost_usd=float(warm.sum()),
        cache_read_usd=sum(m.cache_read_usd for m in by_model),
        cache_write_usd=sum(m.cache_write_usd for m in by_model),
        excess_cache_write_tokens=sum(m.excess_cache_write_tokens for m in by_model),
        cache_cost_of_switching_usd=float(loss.sum()),
        cache_cost_per_switching_session_usd=(
            mean_interval(loss[switching]) if n_switching else None
        ),
        by_model=by_model,
        first_turn_tier=counterfactual("first_turn_tier", sums.first_turn_prices),
        strongest_tier=counterfactual("strongest_tier", sums.strongest_prices),
    )


@dataclass(frozen=True)
class ToolLoopEscalations:
    """Escalations (`escalated_from` set) by where they happen in the conversation."""

    turns: int
    tool_turns: int
    escalations: int
    at_conversation_start: int
    inside_tool_loop: int
    elsewhere: int
    mid_loop_share: float | None
    mid_loop_share_ci95: tuple[float, float] | None


def tool_loop_escalations(
    *, first_turn: ArrayLike, tool_turn: ArrayLike, escalated: ArrayLike
) -> ToolLoopEscalations:
    """Count escalations at the start of a conversation (the session's first turn),
    inside a tool loop (a later turn that carries tool calls or results) and elsewhere.

    The mid-loop rate is escalations inside a tool loop per tool turn after the first,
    with a Wilson 95 % interval: the rate the `mid_loop_escalation` alert watches.
    """
    first = np.asarray(first_turn, dtype=np.bool_)
    tool = np.asarray(tool_turn, dtype=np.bool_)
    esc = np.asarray(escalated, dtype=np.bool_)
    if not (first.shape == tool.shape == esc.shape) or first.ndim != 1:
        raise ValueError("first_turn, tool_turn and escalated must be 1-D and of one length")
    in_loop = tool & ~first
    at_start = int((esc & first).sum())
    inside = int((esc & in_loop).sum())
    loop_turns = int(in_loop.sum())
    share, share_ci = mid_loop_rate(inside, loop_turns)
    return ToolLoopEscalations(
        turns=int(first.size),
        tool_turns=int(tool.sum()),
        escalations=int(esc.sum()),
        at_conversation_start=at_start,
        inside_tool_loop=inside,
        elsewhere=int(esc.sum()) - at_start - inside,
        mid_loop_share=share,
        mid_loop_share_ci95=share_ci,
    )


def mid_loop_rate(
    escalations_in_loop: int, loop_turns: int
) -> tuple[float | None, tuple[float, float] | None]:
    """Escalations inside tool loops per tool turn after the first, Wilson 95 % interval."""
    if loop_turns <= 0:
        return None, None
    share = escalations_in_loop / loop_turns
    return share, rates.wilson_interval(share, loop_turns, 0.95)
