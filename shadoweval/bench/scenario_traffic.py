"""A seeded generator of realistic router traffic with a known ground truth, for
`shadoweval bench scenario`. Pure: numbers and dicts in memory, no I/O.

The router it plays is RouteLLM-style: each request gets a `p_strong_needed` score and goes
to the strong tier when the score is ≥ the threshold (0.5). The traffic has

- 8 topic segments of different sizes (25 % down to 4 %, the changed one 5 %) and
  difficulty (each segment's score is Beta-distributed; a calibrated score means the
  segment's harm rate on cheap-routed traffic is E[score | score < threshold]);
- sessions (`session_id`, 1–6 turns a few minutes apart; later turns carry the previous
  turn as context) arriving with a diurnal load (peak at 15:00 UTC, trough at 03:00);
- fallbacks: a small share of decisions where the router could not decide and applied its
  static policy (strong tier, no score);
- historical `ts`: the stream starts at 00:00 UTC three weeks before today by default.

Ground truth, per decision: `harm_probability`, the probability that the pipeline's label
is `strong_needed = 1` (the strong answer beats the cheap one in both judge orders). Before
the change the router is calibrated (harm probability = score, capped at 1 − the judge's
position bias, the most a label can be). Two things happen:

- at `change_at` (40 % of the stream) the changed segment gets harder in a way the router
  does not see: its harm probability rises by a constant, so its harm rate on cheap-routed
  traffic goes `harm_before` → `harm_after` (0.10 → 0.25) while its scores stay the same;
- at `swap_at` (70 %) the router's cheap model is swapped (`chosen_model` of the cheap tier
  changes) and the router becomes over-confident: the harm probability is now
  σ(α_segment + slope · logit(score)) with slope 0.4, so the score spreads far more than
  the need does. α_segment keeps each segment's harm rate on cheap-routed traffic where it
  was (the swap is a calibration change, not a quality drop in every segment), so the
  only segment whose harm rate changes is the changed one.

How the pipeline sees that truth: every request carries the simulated provider's hidden
tag (`shadoweval.providers.simulated.sim_tag`) with the quality of each model's answer:
when the strong answer is better (drawn with probability harm / (1 − bias)), the cheap
answer's quality is 0.35 lower, far beyond the provider's jitter, so the judge prefers the
strong one; otherwise the cheap answer is 0.07 better (a tie or a cheap win, never a
strong win). The judge has a position bias: on a share `judge_position_bias` (10 %) of
the requests, drawn here, the tag sets `judge.position_bias=1`, so the judge prefers
whichever answer it is shown first, in both orders; the pipeline judges both, sees them
disagree and counts the pair as a tie (inconsistent). Hence the label the pipeline gives a
decision is known here exactly, `label = strong_better and not judge_biased`, and
P(label = 1) = P(strong better) · (1 − bias) = the harm probability. Each decision carries
its request payload and the routed answer (exactly what the simulated provider answers),
so it can be shadowed without re-running the routed model.

`ScenarioTraffic.truth` holds the per-decision truth as numpy arrays, and
`harm_truth(since, until)` reduces it to each segment's true harm rate over a window (the
share of its cheap-routed decisions whose label is 1: the finite-population value the
weighted estimates' intervals are for), against which those intervals are checked.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shadoweval.providers.pricing import PricingTable
from shadoweval.providers.simulated import sim_tag, simulate_answer_text

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

# Quality gap behind "the strong answer is better": well beyond the provider's ±0.03 jitter
# per answer, so the judge's scores (1 + round(9q)) differ by at least 2 points; a cheap
# answer that is acceptable is 0.07 better, so jitter can make it a tie but never a loss.
STRONG_BETTER_GAP = 0.35
ACCEPTABLE_MARGIN = 0.07
_SCORE_EPS = 1e-4  # scores are kept inside (0, 1) so that their logit is finite
_GRID = 20_000  # points of the numeric integrals over the cheap-routed score range

# A production-sized system prompt (~600 tokens): it is part of every shadow call and of the
# conversation every judge call reads, so it sets much of what a label costs.
SYSTEM_PROMPT = " ".join(
    (
        "You are the assistant of Northwind, a consumer software company selling a note-taking",
        "app, a team workspace and a developer API. Answer the customer's question accurately",
        "and completely, in the customer's language. If you are unsure, say so and explain how",
        "to find out. Be concise: a short paragraph, or numbered steps for procedures.",
        "Policies. Billing: plans are monthly or yearly; refunds of duplicate charges are",
        "automatic within 5 business days; other refunds need a ticket; never promise a refund",
        "amount. Accounts: never ask for a password or a one-time code; account recovery goes",
        "through the recovery form; an e-mail change needs the old address confirmed. Security:",
        "never reveal another customer's data; report suspected fraud to the security team.",
        "Technical help: give runnable examples in the language the customer uses, say which",
        "version they apply to, and point out pitfalls. Legal questions: give general",
        "information only, name the jurisdiction you assume, and recommend a qualified lawyer",
        "for anything binding; never state that a clause is or is not enforceable as a fact.",
        "Medical or financial questions: general information only, with a pointer to a",
        "professional. Writing help: keep the customer's meaning and tone unless asked",
        "otherwise. Small talk: be friendly and brief, then offer help with the product.",
        "Style: plain words, no marketing language, no emojis, dates as 2026-11-27, amounts",
        "with their currency. If the request is ambiguous, answer the most likely reading and",
        "say which reading you chose. If the request is outside what Northwind supports, say",
        "so politely and suggest where the customer could find help. Escalation: offer a",
        "human agent when the customer asks for one, when a refund above 100 USD is involved,",
        "when an account looks compromised, or when you could not solve the problem in two",
        "attempts. Never invent account details, prices, release dates or legal facts; quote",
        "the help centre (help.northwind.example) where an article exists, and keep answers",
        "under 300 words unless the customer asks for more detail.",
    )
)


@dataclass(frozen=True)
class SegmentSpec:
    """One topic segment: its share of the traffic and the Beta law of its router score."""

    name: str
    share: float
    score_alpha: float
    score_beta: float
    questions: tuple[str, ...]


DEFAULT_SEGMENTS: tuple[SegmentSpec, ...] = (
    SegmentSpec(
        "billing",
        0.25,
        1.2,
        11.0,
        (
            "I was charged twice for my {n}-month plan this month. Why, and how do I get the "
            "second charge back?",
            "How do I change the card my subscription is billed to before the renewal on the "
            "{n}th?",
            "My invoice shows {n} seats but we only use a few. How is the seat count computed?",
        ),
    ),
    SegmentSpec(
        "account",
        0.20,
        1.5,
        9.0,
        (
            "I cannot log in after resetting my password {n} times. What else can I try?",
            "How do I move my account to a new e-mail address without losing {n} projects?",
            "Two-factor codes stopped arriving after I changed phones. How do I recover access?",
        ),
    ),
    SegmentSpec(
        "coding",
        0.16,
        2.5,
        3.0,
        (
            "My asyncio task never finishes when I cancel it inside a TaskGroup with {n} "
            "workers. What is going on and how do I fix it?",
            "Rewrite this SQL join over {n} million rows so it uses the index on "
            "(customer_id, created_at) instead of a full scan.",
            "Why does my Rust borrow checker complain about a mutable borrow in a loop over "
            "{n} items, and what is the idiomatic fix?",
        ),
    ),
    SegmentSpec(
        "smalltalk",
        0.12,
        0.9,
        14.0,
        (
            "Tell me a fun fact about octopuses, number {n} please.",
            "What should I cook tonight with {n} eggs and some spinach?",
            "Recommend a short book for a {n}-hour train ride.",
        ),
    ),
    SegmentSpec(
        "writing",
        0.10,
        1.6,
        5.0,
        (
            "Rewrite this paragraph of my product announcement to be about {n} words shorter "
            "and friendlier.",
            "Draft a polite reminder to a customer whose invoice is {n} days overdue.",
            "Give me {n} subject lines for a newsletter about our spring release.",
        ),
    ),
    SegmentSpec(
        "math",
        0.08,
        3.0,
        2.5,
        (
            "A loan of {n}000 USD at 4.5 % a year compounded monthly: what is the monthly "
            "payment over 5 years, step by step?",
            "Prove that the sum of the first {n} odd numbers is a perfect square.",
            "What is the probability of at least two shared birthdays among {n} people?",
        ),
    ),
    SegmentSpec(
        # The changed segment: its Beta β is solved for `harm_before` (see ScenarioConfig).
        "legal",
        0.05,
        1.3,
        11.5,
        (
            "Can my landlord keep the deposit after {n} months if the lease says nothing "
            "about cleaning?",
            "Is a non-compete clause of {n} months enforceable for a remote employee?",
            "Do I have to accept a contract change announced {n} days before it applies?",
        ),
    ),
    SegmentSpec(
        "travel",
        0.04,
        1.2,
        10.0,
        (
            "What is the cheapest way to get from the airport to the city centre with {n} "
            "suitcases?",
            "Plan a {n}-day itinerary for Lisbon on a small budget.",
            "Can I change my flight {n} hours before departure without a fee?",
        ),
    ),
)


def _default_start() -> datetime:
    """00:00 UTC three weeks ago: history, well inside payload retention (30 days)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=21)


@dataclass(frozen=True)
class ScenarioConfig:
    """Everything that shapes the stream; the defaults are the issue's scenario."""

    seed: int = 0
    days: float = 3.0
    decisions_per_day: float = 20_000.0
    start: datetime = field(default_factory=_default_start)
    router: str = "scenario-router"
    router_version: str = "2026.11"
    threshold: float = 0.5
    cheap_model: str = "gpt-5-mini"
    swapped_cheap_model: str = "gpt-5.4-mini"
    strong_model: str = "gpt-5.4"
    segments: tuple[SegmentSpec, ...] = DEFAULT_SEGMENTS
    changed_segment: str = "legal"
    harm_before: float = 0.10
    harm_after: float = 0.25
    change_at: float = 0.4  # share of the stream's duration
    swap_at: float = 0.7
    overconfidence_slope: float = 0.4
    judge_position_bias: float = 0.10
    fallback_rate: float = 0.005
    diurnal_amplitude: float = 0.6  # load = mean · (1 + a · cos(2π (hour − peak) / 24))
    peak_hour: float = 15.0
    mean_turns: float = 2.0  # of a geometric law, capped at max_turns
    max_turns: int = 6
    mean_turn_gap_s: float = 120.0

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if self.days <= 0 or self.decisions_per_day <= 0:
            raise ValueError("days and decisions_per_day must be positive")
        if abs(sum(s.share for s in self.segments) - 1.0) > 1e-9:
            raise ValueError("segment shares must sum to 1")
        if self.changed_segment not in {s.name for s in self.segments}:
            raise ValueError(f"changed_segment {self.changed_segment!r} is not a segment")
        if not 0.0 < self.change_at < self.swap_at < 1.0:
            raise ValueError("need 0 < change_at < swap_at < 1")
        if not 0.0 <= self.judge_position_bias < 0.5:
            raise ValueError("judge_position_bias must lie in [0, 0.5)")
        if not 0.0 < self.harm_before < self.harm_after < 1.0 - self.judge_position_bias:
            raise ValueError("need 0 < harm_before < harm_after < 1 − judge_position_bias")
        if not 0.0 <= self.diurnal_amplitude < 1.0:
            raise ValueError("diurnal_amplitude must lie in [0, 1)")
        if self.mean_turns < 1.0 or self.max_turns < 1:
            raise ValueError("mean_turns must be ≥ 1 and max_turns ≥ 1")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    @property
    def change_ts(self) -> datetime:
        return self.start + timedelta(days=self.days * self.change_at)

    @property
    def swap_ts(self) -> datetime:
        return self.start + timedelta(days=self.days * self.swap_at)


# --- the score → harm laws (numeric integrals over the cheap-routed score range) -------------


def _beta_pdf(x: FloatArray, a: float, b: float) -> FloatArray:
    log_norm = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    result: FloatArray = np.exp((a - 1.0) * np.log(x) + (b - 1.0) * np.log1p(-x) - log_norm)
    return result


def _cheap_grid(threshold: float) -> FloatArray:
    grid: FloatArray = (np.arange(_GRID, dtype=np.float64) + 0.5) / _GRID * threshold
    return grid


def _cheap_mean(values: FloatArray, weights: FloatArray) -> float:
    return float(np.sum(values * weights) / np.sum(weights))


def calibrated_harm_rate(a: float, b: float, threshold: float) -> float:
    """Harm rate on cheap-routed traffic of a calibrated router: E[s | s < threshold]."""
    grid = _cheap_grid(threshold)
    return _cheap_mean(grid, _beta_pdf(grid, a, b))


def _solve_beta(a: float, target: float, threshold: float) -> float:
    """β of Beta(a, β) whose cheap-routed harm rate E[s | s < threshold] is `target`."""
    lo, hi = 0.05, 500.0  # the harm rate falls as β grows
    for _ in range(80):
        mid = math.sqrt(lo * hi)
        if calibrated_harm_rate(a, mid, threshold) > target:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def _sigmoid(x: FloatArray) -> FloatArray:
    result: FloatArray = 1.0 / (1.0 + np.exp(-x))
    return result


def _logit(p: FloatArray) -> FloatArray:
    clipped = np.clip(p, _SCORE_EPS, 1.0 - _SCORE_EPS)
    result: FloatArray = np.log(clipped) - np.log1p(-clipped)
    return result


def _solve_intercept(a: float, b: float, slope: float, target: float, threshold: float) -> float:
    """α such that E[σ(α + slope·logit(s)) | s < threshold] = target under Beta(a, b)."""
    grid = _cheap_grid(threshold)
    weights, logits = _beta_pdf(grid, a, b), _logit(grid)
    lo, hi = -20.0, 20.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if _cheap_mean(_sigmoid(mid + slope * logits), weights) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# --- the traffic ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioTruth:
    """Per-decision truth, index-aligned with `ScenarioTraffic.decision(i)` (ts order)."""

    ts: FloatArray  # POSIX seconds
    segment: IntArray  # index into ScenarioTraffic.segment_names
    session: IntArray
    turn: IntArray  # 0 for a session's first request
    cheap_routed: BoolArray
    fallback: BoolArray
    router_score: FloatArray  # NaN where the router fell back (no score)
    swapped: BoolArray  # decided after the cheap-model swap
    harm_probability: FloatArray  # P(label strong_needed = 1), the router's true need
    strong_better: BoolArray  # the drawn truth the answers' qualities encode
    judge_biased: BoolArray  # the judge prefers the first answer shown, in both orders
    label: BoolArray  # the pipeline's strong_needed: strong_better and not judge_biased

    def __len__(self) -> int:
        return int(self.ts.size)


@dataclass(frozen=True)
class SegmentTruth:
    """A segment's true harm rate on cheap-routed traffic over a window."""

    harm_rate: float  # share of its cheap-routed decisions labelled strong_needed = 1
    expected_harm_rate: float  # mean harm probability (before the draws)
    cheap_decisions: int


class ScenarioTraffic:
    """The whole stream of one seed: truth up front (numpy), wire dicts built on demand."""

    def __init__(self, config: ScenarioConfig | None = None) -> None:
        self.config = config = config or ScenarioConfig()
        self.segment_names: tuple[str, ...] = tuple(s.name for s in config.segments)
        self.changed_index = self.segment_names.index(config.changed_segment)
        self._pricing = PricingTable()
        # Beta laws; the changed segment's β is solved so its baseline harm is harm_before.
        alphas = [s.score_alpha for s in config.segments]
        betas = [s.score_beta for s in config.segments]
        betas[self.changed_index] = _solve_beta(
            alphas[self.changed_index], config.harm_before, config.threshold
        )
        self.score_laws: tuple[tuple[float, float], ...] = tuple(zip(alphas, betas, strict=True))
        self.change_shift = config.harm_after - config.harm_before
        # Harm rates on cheap-routed traffic each segment keeps through the swap.
        self.baseline_harm: tuple[float, ...] = tuple(
            calibrated_harm_rate(a, b, config.threshold) for a, b in self.score_laws
        )
        kept = [
            rate + (self.change_shift if index == self.changed_index else 0.0)
            for index, rate in enumerate(self.baseline_harm)
        ]
        self.swap_intercepts: tuple[float, ...] = tuple(
            _solve_intercept(a, b, config.overconfidence_slope, target, config.threshold)
            for (a, b), target in zip(self.score_laws, kept, strict=True)
        )
        self._generate()

    # -- generation --

    def _generate(self) -> None:
        c = self.config
        rng = np.random.default_rng(c.seed)
        start = c.start.timestamp()
        duration = c.days * 86_400.0
        hours = math.ceil(c.days * 24)
        hour_starts = start + 3600.0 * np.arange(hours, dtype=np.float64)
        hour_of_day = ((hour_starts - start) / 3600.0 + c.start.hour + 0.5) % 24.0
        load = 1.0 + c.diurnal_amplitude * np.cos(2 * np.pi * (hour_of_day - c.peak_hour) / 24.0)
        p_more = 1.0 / c.mean_turns
        # E[min(G, m)] of a geometric G on {1, 2, …}: Σ_{k<m} (1 − p)^k.
        mean_turns = (1.0 - (1.0 - p_more) ** c.max_turns) / p_more
        session_rate = c.decisions_per_day / 24.0 * load / mean_turns
        per_hour = rng.poisson(session_rate)
        session_start = np.repeat(hour_starts, per_hour) + rng.uniform(
            0.0, 3600.0, int(per_hour.sum())
        )
        n_sessions = session_start.size
        turns = np.minimum(rng.geometric(p_more, n_sessions), c.max_turns)
        session_segment = rng.choice(
            len(c.segments), size=n_sessions, p=[s.share for s in c.segments]
        )
        session = np.repeat(np.arange(n_sessions), turns)
        first = np.repeat(np.cumsum(turns) - turns, turns)
        turn = np.arange(session.size) - first
        gaps = rng.exponential(c.mean_turn_gap_s, session.size)
        gaps[turn == 0] = 0.0
        elapsed = np.cumsum(gaps)
        ts = session_start[session] + elapsed - elapsed[first]
        keep = ts < start + duration
        order = np.argsort(ts[keep], kind="stable")
        ts = ts[keep][order]
        session, turn = session[keep][order], turn[keep][order]
        segment = session_segment[session].astype(np.int64)
        n = ts.size

        score = np.empty(n, dtype=np.float64)
        for index, (a, b) in enumerate(self.score_laws):
            members = segment == index
            score[members] = rng.beta(a, b, int(members.sum()))
        score = np.clip(score, _SCORE_EPS, 1.0 - _SCORE_EPS)
        fallback = rng.random(n) < c.fallback_rate
        cheap_routed = ~fallback & (score < c.threshold)
        swapped = ts >= c.swap_ts.timestamp()
        changed = (segment == self.changed_index) & (ts >= c.change_ts.timestamp())

        harm = score.copy()
        harm[changed] += self.change_shift
        intercepts = np.asarray(self.swap_intercepts)[segment]
        after_swap = _sigmoid(intercepts + c.overconfidence_slope * _logit(score))
        harm = np.where(swapped, after_swap, harm)
        bias = c.judge_position_bias
        harm = np.clip(harm, 0.0, 1.0 - bias)
        strong_better = rng.random(n) < harm / (1.0 - bias)
        judge_biased = rng.random(n) < bias

        self.truth = ScenarioTruth(
            ts=ts,
            segment=segment,
            session=session.astype(np.int64),
            turn=turn.astype(np.int64),
            cheap_routed=cheap_routed,
            fallback=fallback,
            router_score=np.where(fallback, np.nan, score),
            swapped=swapped,
            harm_probability=harm,
            strong_better=strong_better,
            judge_biased=judge_biased,
            label=strong_better & ~judge_biased,
        )
        # What the wire dicts need beyond the truth, drawn here so they are seeded too.
        self._strong_quality = rng.uniform(0.6, 0.85, n)
        self._question = rng.integers(0, 1 << 30, n)
        self._language = rng.random(n)
        self._user_tier = rng.random(n)
        self._latency = rng.uniform(0.7, 1.6, n)
        self._router_latency = rng.uniform(4.0, 12.0, n)

    # -- reading --

    def __len__(self) -> int:
        return len(self.truth)

    def hour_slices(self) -> Iterator[tuple[datetime, slice]]:
        """(end of the decision-hour, the slice of its decisions), in order, empty hours too."""
        c = self.config
        start = c.start.timestamp()
        hours = math.ceil(c.days * 24)
        bounds = np.searchsorted(self.truth.ts, start + 3600.0 * np.arange(1, hours + 1))
        previous = 0
        for hour, bound in enumerate(bounds):
            end = min(c.start + timedelta(hours=hour + 1), c.end)
            yield end, slice(previous, int(bound))
            previous = int(bound)

    def cheap_model_at(self, index: int) -> str:
        c = self.config
        return c.swapped_cheap_model if self.truth.swapped[index] else c.cheap_model

    def _question_text(self, segment: int, draw: int) -> str:
        questions = self.config.segments[segment].questions
        return questions[draw % len(questions)].format(n=2 + (draw >> 8) % 29)

    def messages(self, index: int) -> list[dict[str, Any]]:
        """The request's messages: the previous turn as context, then the tagged question."""
        c, t = self.config, self.truth
        segment = int(t.segment[index])
        question = f"{self._question_text(segment, int(self._question[index]))} (#{index})"
        strong_q = float(self._strong_quality[index])
        cheap_q = strong_q + (-STRONG_BETTER_GAP if t.strong_better[index] else ACCEPTABLE_MARGIN)
        tag = sim_tag(
            qualities={
                c.strong_model: strong_q,
                # Both cheap models: a reverse shadow may run either, and both answer alike.
                c.cheap_model: cheap_q,
                c.swapped_cheap_model: cheap_q,
            },
            judge_position_bias=1.0 if t.judge_biased[index] else None,
        )
        messages: list[dict[str, Any]] = []
        if t.turn[index] > 0:
            # Context without simulated answer markers: the judge reads the first two
            # markers of its prompt as answers A and B.
            earlier = self._question_text(segment, int(self._question[index]) // 7)
            messages += [
                {"role": "user", "content": earlier},
                {"role": "assistant", "content": f"Here is what I found about that: {earlier}"},
            ]
        messages.append({"role": "user", "content": f"{question}\n{tag}"})
        return messages

    def decision(self, index: int) -> dict[str, Any]:
        """Decision `index` as the router logs it (the v1 wire format), with its payload."""
        c, t = self.config, self.truth
        segment = int(t.segment[index])
        cheap_model = self.cheap_model_at(index)
        cheap = bool(t.cheap_routed[index])
        model = cheap_model if cheap else c.strong_model
        messages = self.messages(index)
        answer = simulate_answer_text(model, messages)
        input_tokens = (len(SYSTEM_PROMPT) + sum(len(m["content"]) for m in messages)) // 4
        output_tokens = max(1, len(answer) // 4)
        price = self._pricing.lookup(model)
        cost = price.cost_usd(input_tokens, output_tokens) if price else 0.0
        ts = datetime.fromtimestamp(float(t.ts[index]), UTC)
        item: dict[str, Any] = {
            "request_id": f"sc{c.seed}-{index:07d}",
            "router": c.router,
            "router_version": c.router_version,
            "ts": ts.isoformat().replace("+00:00", "Z"),
            "tier": "cheap" if cheap else "strong",
            "chosen_model": model,
            "candidates": [
                {"model": cheap_model, "tier": "cheap", "provider": "openai"},
                {"model": c.strong_model, "tier": "strong", "provider": "openai"},
            ],
            "threshold": c.threshold,
            "segment": {
                "topic": self.segment_names[segment],
                "language": "de" if self._language[index] < 0.15 else "en",
                "user_tier": "pro" if self._user_tier[index] < 0.3 else "free",
            },
            "features": {
                "prompt_tokens": input_tokens,
                "has_code": self.segment_names[segment] == "coding",
                "turn": int(t.turn[index]),
            },
            "request": {"system": SYSTEM_PROMPT, "messages": messages},
            "response": {"text": answer, "finish_reason": "stop"},
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            "cost_usd": round(cost, 8),
            "latency_ms": round((350.0 if cheap else 900.0) * float(self._latency[index]), 1),
            "router_cost_usd": 0.00002,
            "router_latency_ms": round(float(self._router_latency[index]), 2),
            "session_id": f"sc{c.seed}-s{int(t.session[index]):06d}",
        }
        if t.fallback[index]:
            item["fallback"] = True
        else:
            item["router_score"] = round(float(t.router_score[index]), 4)
        return item

    def decisions(self, part: slice | None = None) -> list[dict[str, Any]]:
        """The wire dicts of a slice of the stream (all of it by default)."""
        return [self.decision(i) for i in range(len(self))[part or slice(None)]]

    # -- truth reductions --

    def harm_truth(self, since: datetime, until: datetime) -> dict[str, SegmentTruth]:
        """Each segment's true harm rate on its cheap-routed decisions with ts in [since, until)."""
        t = self.truth
        window = (t.ts >= since.timestamp()) & (t.ts < until.timestamp()) & t.cheap_routed
        out: dict[str, SegmentTruth] = {}
        for index, name in enumerate(self.segment_names):
            members = window & (t.segment == index)
            count = int(members.sum())
            if count:
                out[name] = SegmentTruth(
                    harm_rate=float(t.label[members].mean()),
                    expected_harm_rate=float(t.harm_probability[members].mean()),
                    cheap_decisions=count,
                )
        return out

    def expected_harm_rate(self, segment: str, phase: str) -> float:
        """A segment's harm rate on cheap-routed traffic by construction, per phase:
        `before` the change, `changed` (between change and swap), `swapped` (after it)."""
        index = self.segment_names.index(segment)
        if phase == "before" or (phase == "changed" and index != self.changed_index):
            return self.baseline_harm[index]
        if phase in ("changed", "swapped"):
            shift = self.change_shift if index == self.changed_index else 0.0
            return self.baseline_harm[index] + shift
        raise ValueError(f"unknown phase {phase!r}")
