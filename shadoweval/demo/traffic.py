"""The demo's router traffic generator: a realistic two-tier router posting through the ingest API.

It plays a RouteLLM-style router: each request has a latent probability that the
strong model is needed, the router scores it (p_strong_needed, with noise) and
routes strong at score ≥ threshold. The hidden quality tag (DESIGN.md, Judge)
tells the simulated provider how good each model's answer is, so the shadow
re-run and the judge find harm exactly where this scenario puts it:

- easy segments (billing, smalltalk) keep a low harm rate throughout;
- `degrading` (legal) gets harder after `degrade_after_s` of decision time in a
  way the router does not see (its scores stay the same), so harm on
  cheap-routed traffic rises;
- after `upgrade_after_s` the router swaps its cheap model for a newer one of
  the same quality (a model event, not a quality drop).

Time is the decision's `ts` on a compressed clock (`speed` decision-seconds per
wall second) that starts far enough in the past to never run ahead of now.
The generator knows nothing about alerts: it only posts decisions.

Every demo plays the same draws (`DEMO_SEED`); only the request ids differ per run
(`run_id`). The quality-drop detector sees each stationary segment's labels in the order
they are drawn whatever the load (one draw sequence, batches of one ts ordered by request
id), so with a fixed seed "the other segments stay quiet" is checked once
(tests/e2e/test_demo.py) instead of being a fresh draw against the detector's false-alarm
rate (about n/A in n labels) on every run.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shadoweval.providers.pricing import PricingTable
from shadoweval.providers.simulated import sim_tag, simulate_answer_text

log = logging.getLogger(__name__)

# Quality gap that makes the simulated judge prefer the strong answer in both orders;
# the acceptable margin exceeds the provider's ±0.03 jitter on each side, so a pair
# meant to be acceptable is never judged harmful by rounding.
_HARM_GAP = 0.35
_ACCEPTABLE_MARGIN = 0.07

# The draws every demo plays: its stationary segments stay under the production detector's
# alarm threshold for far longer than a demo runs (tests/e2e/test_demo.py checks it).
DEMO_SEED = 7
# Decisions per ingest request; one batch shares one decision ts.
TRAFFIC_BATCH_SIZE = 8


def _provider(model: str) -> str:
    return "anthropic" if model.startswith("claude") else "openai"


@dataclass(frozen=True)
class SegmentProfile:
    """One segment's traffic: its share, how hard it is, and the router's view of it."""

    name: str
    share: float
    # Beta(a, b) of the latent p_strong_needed; the router's score is a noisy reading of it.
    need_alpha: float
    need_beta: float
    questions: tuple[str, ...]


@dataclass(frozen=True)
class Scenario:
    router: str = "demo-router"
    router_version: str = "2026.11"
    threshold: float = 0.5
    cheap_model: str = "gpt-5-mini"
    strong_model: str = "gpt-5.4"
    upgraded_cheap_model: str = "gpt-5.4-mini"
    degrading_segment: str = "legal"
    # Decision-time seconds after the start when the degradation and the upgrade happen.
    degrade_after_s: float = 1800.0
    upgrade_after_s: float = 3600.0
    # Added to p_strong_needed of the degrading segment once it degrades (the router misses it).
    degradation: float = 0.6
    segments: tuple[SegmentProfile, ...] = (
        SegmentProfile(
            "billing",
            0.35,
            1.2,
            12.0,
            ("Why was I charged twice this month?", "How do I change my billing address?"),
        ),
        SegmentProfile(
            "smalltalk",
            0.25,
            1.0,
            14.0,
            ("Tell me a fun fact about octopuses.", "What should I cook tonight?"),
        ),
        SegmentProfile(
            "coding",
            0.2,
            2.5,
            4.0,
            ("Why does my asyncio task never finish?", "Refactor this SQL join for speed."),
        ),
        SegmentProfile(
            "legal",
            0.2,
            1.0,
            15.0,
            ("Can my landlord keep the deposit?", "Is this NDA clause enforceable?"),
        ),
    )


@dataclass
class TrafficGenerator:
    """Deterministic (seeded) decisions of the scenario at a given decision time."""

    scenario: Scenario = field(default_factory=Scenario)
    seed: int = DEMO_SEED
    pricing: PricingTable = field(default_factory=PricingTable)
    # False with real providers: they must never see the hidden tag, and their answer to
    # the request is not known here, so the pipeline re-runs the routed model instead.
    simulated: bool = True
    # Tells one run's request ids from another's (ingest deduplicates on them), so a rerun
    # into the same database adds its decisions; None: the seed.
    run_id: str | None = None

    def __post_init__(self) -> None:
        # Seeded simulation, not security: reproducible traffic for a given seed.
        self._random = random.Random(self.seed)  # noqa: S311
        self._count = 0

    def cheap_model_at(self, elapsed_s: float) -> str:
        s = self.scenario
        return s.upgraded_cheap_model if elapsed_s >= s.upgrade_after_s else s.cheap_model

    def _segment(self) -> SegmentProfile:
        segments = self.scenario.segments
        return self._random.choices(segments, weights=[p.share for p in segments])[0]

    def decision(self, ts: datetime, elapsed_s: float) -> dict[str, Any]:
        """One routed request at decision time `ts`, `elapsed_s` into the scenario."""
        s, rng = self.scenario, self._random
        self._count += 1
        profile = self._segment()
        need = rng.betavariate(profile.need_alpha, profile.need_beta)
        score = min(1.0, max(0.0, need + rng.gauss(0.0, 0.05)))
        if profile.name == s.degrading_segment and elapsed_s >= s.degrade_after_s:
            need = min(1.0, need + s.degradation)
        strong_needed = rng.random() < need
        strong_quality = 0.6 + 0.25 * rng.random()
        cheap_quality = (
            strong_quality - _HARM_GAP if strong_needed else strong_quality + _ACCEPTABLE_MARGIN
        )
        cheap_model = self.cheap_model_at(elapsed_s)
        tier = "strong" if score >= s.threshold else "cheap"
        model = s.strong_model if tier == "strong" else cheap_model
        question = rng.choice(profile.questions)
        content = f"{question} (#{self._count})"
        if self.simulated:
            tag = sim_tag(qualities={cheap_model: cheap_quality, s.strong_model: strong_quality})
            content = f"{content}\n{tag}"
        messages = [{"role": "user", "content": content}]
        answer = simulate_answer_text(model, messages) if self.simulated else ""
        input_tokens = max(1, len(messages[0]["content"]) // 4)
        output_tokens = max(1, len(answer) // 4) if answer else 250
        price = self.pricing.lookup(model)
        cost = price.cost_usd(input_tokens, output_tokens) if price else 0.0
        return {
            "request_id": f"demo-{self.seed if self.run_id is None else self.run_id}-{self._count}",
            "router": s.router,
            "router_version": s.router_version,
            "ts": ts.isoformat(),
            "tier": tier,
            "chosen_model": model,
            "candidates": [
                {"model": cheap_model, "tier": "cheap", "provider": _provider(cheap_model)},
                {"model": s.strong_model, "tier": "strong", "provider": _provider(s.strong_model)},
            ],
            "router_score": round(score, 4),
            "threshold": s.threshold,
            "segment": {"topic": profile.name, "language": rng.choice(("en", "en", "de"))},
            "features": {
                "prompt_tokens": input_tokens,
                "has_code": profile.name == "coding",
            },
            "request": {"messages": messages},
            **({"response": {"text": answer, "finish_reason": "stop"}} if answer else {}),
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            "cost_usd": round(cost, 8),
            "latency_ms": round((900.0 if tier == "strong" else 350.0) * rng.uniform(0.7, 1.6), 1),
            "router_cost_usd": 0.00002,
            "router_latency_ms": round(rng.uniform(4.0, 12.0), 2),
        }


@dataclass
class CompressedClock:
    """Decision time running `speed`× faster than the wall clock, never ahead of now."""

    speed: float
    horizon_s: float
    wall: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._wall_start = self.wall()
        self.start = datetime.fromtimestamp(self._wall_start, UTC) - timedelta(
            seconds=self.horizon_s
        )

    def now(self) -> datetime:
        wall_now = self.wall()
        ahead = self.start + timedelta(seconds=(wall_now - self._wall_start) * self.speed)
        return min(ahead, datetime.fromtimestamp(wall_now, UTC))

    def elapsed_s(self) -> float:
        return (self.now() - self.start).total_seconds()


def run_traffic(
    *,
    url: str,
    ingest_key: str,
    stop: threading.Event,
    generator: TrafficGenerator | None = None,
    clock: CompressedClock,
    requests_per_second: float = 4.0,
    batch_size: int = TRAFFIC_BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Post decisions through the ingest API until `stop` is set; returns how many were stored."""
    generator = generator or TrafficGenerator()
    posted = 0
    interval = batch_size / requests_per_second
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {ingest_key}"}, timeout=30
    ) as client:
        batch: list[dict[str, Any]] = []
        while not stop.is_set():
            if not batch:
                ts = clock.now()
                elapsed = clock.elapsed_s()
                batch = [generator.decision(ts, elapsed) for _ in range(batch_size)]
            try:
                response = client.post("/v1/decisions", json=batch)
            except httpx.HTTPError as error:
                # Ingest is idempotent on (router, request_id): the same batch is resent.
                log.warning("traffic: post failed (%s); retrying", error)
                stop.wait(1.0)
                continue
            if response.status_code == 503:
                stop.wait(float(response.headers.get("Retry-After", "1")))
                continue
            if response.status_code != 202:
                log.error("traffic: ingest answered %s: %s", response.status_code, response.text)
            else:
                posted += len(batch)
                if on_batch is not None:
                    on_batch(posted)
            batch = []
            stop.wait(interval)
    return posted
