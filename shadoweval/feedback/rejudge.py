"""Re-judge a stored sample with the configured judge and report agreement with the old one.

Before a new judge model or prompt is trusted, `shadoweval rejudge` replays a seeded
random sample of a router's judged pairs through the real judge code (both orders,
the configured provider) and compares the new labels with the stored verdicts:
agreement on `strong_needed` (the label every estimate uses) with Cohen's κ and its
interval, and agreement on the full outcome (cheaper/stronger/tie/inconsistent).

It only reports: stored verdicts are never overwritten and nothing is written to the
database, so a trial of a candidate judge cannot leak into windows, alerts or gates.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, cast

from sqlalchemy import Table, and_, false, or_, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.feedback.service import PairTexts, load_pairs
from shadoweval.gate.sample import seeded_order
from shadoweval.judge.models import OrderResult, Verdict, VerdictStatus
from shadoweval.judge.parsing import combine_orders
from shadoweval.judge.prompts import build_judge_prompt
from shadoweval.judge.service import JudgeTexts, judge_order, order_turns
from shadoweval.providers.base import Provider, ProviderError
from shadoweval.shadow.service import judge_identity
from shadoweval.stats.agreement import Kappa, cohen_kappa

VERDICT = cast(Table, Verdict.__table__)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class RejudgedPair:
    verdict_id: int
    segment: str
    stored_judge_key: str
    stored_outcome: str
    stored_strong_needed: int
    new_outcome: str | None = None
    new_strong_needed: int | None = None
    error: str | None = None
    cost_usd: float = 0.0


@dataclass
class RejudgeReport:
    router: str
    requested: int
    new_judge_key: str  # with the default rubric
    stored_judge_keys: dict[str, int]
    new_judge_keys: dict[str, str] = field(default_factory=dict)  # per sampled segment
    pairs: list[RejudgedPair] = field(default_factory=list)

    @property
    def compared(self) -> list[RejudgedPair]:
        return [p for p in self.pairs if p.new_strong_needed is not None]

    @property
    def errors(self) -> int:
        return sum(p.error is not None for p in self.pairs)

    @property
    def agreement_rate(self) -> float | None:
        compared = self.compared
        if not compared:
            return None
        return sum(p.new_strong_needed == p.stored_strong_needed for p in compared) / len(compared)

    @property
    def outcome_agreement_rate(self) -> float | None:
        compared = self.compared
        if not compared:
            return None
        return sum(p.new_outcome == p.stored_outcome for p in compared) / len(compared)

    @property
    def kappa(self) -> Kappa:
        compared = self.compared
        return cohen_kappa(
            [p.stored_strong_needed for p in compared],
            [p.new_strong_needed or 0 for p in compared],
        )

    @property
    def cost_usd(self) -> float:
        return sum(p.cost_usd for p in self.pairs)

    def as_dict(self) -> dict[str, Any]:
        kappa = self.kappa

        def finite(value: float) -> float | None:
            return None if value != value else value

        return {
            "router": self.router,
            "requested": self.requested,
            "sampled": len(self.pairs),
            "compared": len(self.compared),
            "errors": self.errors,
            "new_judge_key": self.new_judge_key,
            "new_judge_keys": self.new_judge_keys,
            "stored_judge_keys": self.stored_judge_keys,
            "agreement_rate": self.agreement_rate,
            "outcome_agreement_rate": self.outcome_agreement_rate,
            "kappa": finite(kappa.kappa),
            "kappa_ci_low": finite(kappa.ci_low),
            "kappa_ci_high": finite(kappa.ci_high),
            "expected_agreement": finite(kappa.expected_agreement),
            "stored_strong_needed_rate": _rate([p.stored_strong_needed for p in self.compared]),
            "new_strong_needed_rate": _rate([p.new_strong_needed or 0 for p in self.compared]),
            "judge_cost_usd": self.cost_usd,
        }


def _rate(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def new_judge_keys(settings: Settings, segments: Iterable[str]) -> dict[str, str]:
    """The judge key the configured judge would have per segment (rubrics differ by segment)."""
    return {segment: judge_identity(settings, segment)[0] for segment in sorted(set(segments))}


def sample_verdicts(
    engine: Engine, *, router: str, sample: int, seed: int, settings: Settings
) -> tuple[list[Verdict], dict[int, PairTexts]]:
    """A seeded random sample of the router's judged pairs whose answers are still stored,
    leaving out pairs the configured judge made already (comparing a judge with itself
    says nothing). Drawn in SQL: a seeded order over verdict ids, page by page, until
    `sample` usable pairs are found."""
    v = VERDICT.c
    with Session(engine) as session:
        segments = session.scalars(
            select(v.segment_value)
            .where(v.router == router, v.status == VerdictStatus.DONE)
            .distinct()
        ).all()
        keys = new_judge_keys(settings, segments)
        others = or_(
            false(), *(and_(v.segment_value == s, v.judge_key != k) for s, k in keys.items())
        )
        query = (
            select(Verdict)
            .where(v.router == router, v.status == VerdictStatus.DONE, others)
            .order_by(seeded_order(v.id, seed), v.id)
        )
        page_size = max(2 * sample, 1)
        chosen: list[Verdict] = []
        texts: dict[int, PairTexts] = {}
        offset = 0
        while len(chosen) < sample:
            page = list(session.scalars(query.offset(offset).limit(page_size)))
            if not page:
                break
            offset += len(page)
            pairs = load_pairs(session, page)
            for verdict in page:
                assert verdict.id is not None
                pair = pairs[verdict.id]
                usable = pair.cheaper_answer and pair.stronger_answer and pair.messages
                if usable and len(chosen) < sample:
                    chosen.append(verdict)
                    texts[verdict.id] = pair
        session.expunge_all()
    return chosen, texts


async def rejudge(
    *,
    engine: Engine,
    settings: Settings,
    provider_for_model: Callable[[str], Provider],
    router: str,
    sample: int,
    seed: int = 0,
    concurrency: int = 8,
    on_pair: Callable[[RejudgedPair], None] | None = None,
) -> RejudgeReport:
    """Judge `sample` stored pairs of `router` again with `settings.judge_model` and the
    current prompt; nothing is written."""
    verdicts, texts = await asyncio.to_thread(
        sample_verdicts, engine, router=router, sample=sample, seed=seed, settings=settings
    )
    default_prompt = build_judge_prompt(settings.judge_rubric)
    report = RejudgeReport(
        router=router,
        requested=sample,
        new_judge_key=f"{settings.judge_model}#{default_prompt.prompt_hash}",
        stored_judge_keys=dict(Counter(v.judge_key for v in verdicts)),
        new_judge_keys=new_judge_keys(settings, (v.segment_value for v in verdicts)),
    )
    provider = provider_for_model(settings.judge_model)
    slots = asyncio.Semaphore(concurrency)

    async def one(verdict: Verdict) -> RejudgedPair:
        assert verdict.id is not None
        pair = texts[verdict.id]
        system, turns = order_turns(
            JudgeTexts(
                segment_value=verdict.segment_value,
                messages=pair.messages,
                system=pair.system,
                cheaper_answer=pair.cheaper_answer,
                stronger_answer=pair.stronger_answer,
            ),
            settings,
        )
        stored = RejudgedPair(
            verdict_id=verdict.id,
            segment=verdict.segment_value,
            stored_judge_key=verdict.judge_key,
            stored_outcome=verdict.outcome or "",
            stored_strong_needed=int(verdict.strong_needed or 0),
        )

        async def order(name: str) -> OrderResult:
            return await judge_order(
                provider=provider, settings=settings, system=system, user_turn=turns[name]
            )

        async with slots:
            try:
                cheaper_first, stronger_first = await asyncio.gather(
                    order("order_cheaper_first"), order("order_stronger_first")
                )
            except ProviderError as error:
                return replace(stored, error=f"{error.reason}: {error.message}")
        cost = cheaper_first.cost_usd + stronger_first.cost_usd
        failed = [r.error or "no verdict" for r in (cheaper_first, stronger_first) if not r.winner]
        if failed:
            return replace(stored, error="; ".join(failed), cost_usd=cost)
        labels = combine_orders(cheaper_first, stronger_first)
        return replace(
            stored,
            new_outcome=labels.outcome,
            new_strong_needed=labels.strong_needed,
            cost_usd=cost,
        )

    for finished in asyncio.as_completed([one(v) for v in verdicts]):
        result = await finished
        report.pairs.append(result)
        if on_pair is not None:
            on_pair(result)
    report.pairs.sort(key=lambda p: p.verdict_id)
    return report


def summary_lines(report: RejudgeReport) -> list[str]:
    """The report as a person reads it: agreement first, with κ's interval and n."""
    figures = report.as_dict()

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f} %"

    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    stored = ", ".join(f"{key} ({n})" for key, n in sorted(report.stored_judge_keys.items()))
    return [
        f"router {report.router}: re-judged {figures['compared']} of {figures['sampled']} sampled "
        f"pairs ({report.errors} judge errors) with "
        f"{', '.join(sorted(set(report.new_judge_keys.values())) or [report.new_judge_key])}",
        f"stored judges: {stored or 'none'}",
        f"agreement on strong_needed: {pct(figures['agreement_rate'])} "
        f"(chance {pct(figures['expected_agreement'])})",
        f"Cohen's kappa: {num(figures['kappa'])} "
        f"(95 % CI {num(figures['kappa_ci_low'])} to {num(figures['kappa_ci_high'])}, "
        f"n = {figures['compared']})",
        f"agreement on the outcome (cheaper/stronger/tie/inconsistent): "
        f"{pct(figures['outcome_agreement_rate'])}",
        f"strong_needed rate: stored {pct(figures['stored_strong_needed_rate'])}, "
        f"new {pct(figures['new_strong_needed_rate'])}",
        f"judge cost: {report.cost_usd:.4f} USD; nothing was written to the database",
    ]
