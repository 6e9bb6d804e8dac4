"""Gate runs: validate and create one, and read them back (the API's reads)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import case, func, select
from sqlalchemy.engine import Connection
from sqlmodel import Session

from shadoweval import paging
from shadoweval.config import Settings
from shadoweval.db import utcnow
from shadoweval.exceptions import InvalidRequest, NotFound
from shadoweval.gate import budget
from shadoweval.gate.models import (
    GateCreate,
    GateRun,
    GateStatus,
)
from shadoweval.gate.rows import DECISION_TABLE, RUN_TABLE, KnowsModel
from shadoweval.gate.sample import allocate
from shadoweval.stats.noninferiority import min_pairs_to_pass


class UnderpoweredGate(InvalidRequest):
    """The sample cannot support a pass: refused before anything is spent (HTTP 422)."""

    code = "underpowered_gate"


@dataclass(frozen=True)
class PowerCheck:
    """Whether a gate's per-segment sample can pass at all (stats.min_pairs_to_pass).

    The gate passes only when every segment passes, and its sample is split evenly across
    segments (gate.sample.allocate), so the smallest segment's share is what counts."""

    sample: int
    segments: int
    pairs_per_segment: int  # the smallest segment's share of the sample
    needed_per_segment: int  # all ties at a true drop of 0 (see min_pairs_to_pass)
    margin: float
    alpha: float
    # Segments with fewer decisions than needed: no sample size can make them pass.
    short_segments: tuple[str, ...]

    @property
    def can_pass(self) -> bool:
        return self.pairs_per_segment >= self.needed_per_segment and not self.short_segments

    @property
    def needed_sample(self) -> int:
        return self.needed_per_segment * self.segments

    def describe(self) -> str:
        return (
            f"a pass at margin {self.margin:g} (alpha {self.alpha:g}) needs at least "
            f"{self.needed_per_segment} pairs per segment even if every pair ties "
            "(assuming the candidate is exactly as good: true drop 0)"
        )

    def refusal(self, sample_option: str, allow_option: str) -> str:
        """Why the gate cannot pass, and what to change, in the caller's option names."""
        given = (
            f"{sample_option} {self.sample} gives {self.pairs_per_segment} pairs per segment "
            f"over {self.segments} segment{'s' if self.segments != 1 else ''}"
        )
        need = (
            f"a pass at margin {self.margin:g} needs at least {self.needed_per_segment} per segment"
        )
        if self.short_segments:
            return (
                f"{given}; {need}, and segment(s) {', '.join(self.short_segments)} have fewer "
                f"decisions than that: choose other segments or {allow_option}"
            )
        return f"{given}; {need}: use {sample_option} ≥ {self.needed_sample} or {allow_option}"


@dataclass(frozen=True)
class CostEstimate:
    """What a gate is expected to spend, shown before it spends (pairs × cost per pair)."""

    pairs: int
    per_pair_usd: float
    input_tokens: float  # mean logged input tokens of the replaced model's requests
    output_tokens: float  # mean logged output tokens of its answers
    reused_share: float  # share with a logged answer (the replaced model is not re-called)

    @property
    def total_usd(self) -> float:
        return self.pairs * self.per_pair_usd

    def describe(self) -> str:
        return (
            f"estimated cost ${self.total_usd:.2f}: {self.pairs} pairs × "
            f"${self.per_pair_usd:.4f} a pair (logged means: {self.input_tokens:.0f} input, "
            f"{self.output_tokens:.0f} output tokens; {self.reused_share:.0%} of replaced "
            "answers reused; judge verdicts at their max_tokens)"
        )


def estimate_cost(
    session: Session | Connection, settings: Settings, spec: GateCreate, price_of: budget.PriceOf
) -> CostEstimate:
    """Pairs × expected cost of one pair at the prices of the price table: the candidate's
    answer, the replaced model's where no logged answer can be reused, two judge orders.
    Token counts are the means logged for the replaced model (shadow_default_max_tokens
    for output when none are logged), so this is an expectation, unlike the reservations
    of gate.budget, which are upper bounds."""
    from shadoweval.judge.prompts import build_judge_prompt

    d = DECISION_TABLE.c
    query = select(
        func.count(),
        func.avg(d.input_tokens),
        func.avg(d.output_tokens),
        func.sum(case((d.has_response.is_(True), 1), else_=0)),
    ).where(d.router == spec.router, d.chosen_model == spec.replace)
    if spec.segments:
        query = query.where(d.segment_value.in_(spec.segments))
    count, mean_in, mean_out, with_answer = session.execute(query).one()
    input_tokens = float(mean_in) if mean_in is not None else 512.0
    output_tokens = (
        float(mean_out) if mean_out is not None else float(settings.shadow_default_max_tokens)
    )
    reused = float(with_answer or 0) / count if count else 0.0
    judge_system = budget.tokens(build_judge_prompt(settings.judge_rubric).system)

    def pair_cost(replaced: bool) -> float:
        return budget.estimate_item_cost(
            calls=budget.Calls(candidate=True, replaced=replaced, judge_orders=2),
            request_tokens=round(input_tokens),
            answer_max_tokens=round(output_tokens),
            judge_system_tokens=judge_system,
            judge_max_tokens=settings.judge_max_tokens,
            candidate_price=price_of(spec.candidate),
            replaced_price=price_of(spec.replace),
            judge_price=price_of(settings.judge_model),
        )

    per_pair = reused * pair_cost(False) + (1.0 - reused) * pair_cost(True)
    pairs = min(spec.sample, int(count or 0))
    return CostEstimate(
        pairs=pairs,
        per_pair_usd=per_pair,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        reused_share=reused,
    )


def check_power(session: Session | Connection, spec: GateCreate, alpha: float) -> PowerCheck:
    """The sample the gate would draw per segment against the fewest pairs a pass needs."""
    traffic = segment_traffic(session, spec.router, spec.replace, spec.segments)
    allocation = allocate(traffic, spec.sample)
    needed = min_pairs_to_pass(spec.max_drop, alpha)
    return PowerCheck(
        sample=spec.sample,
        segments=len(traffic),
        pairs_per_segment=min(allocation.values(), default=0),
        needed_per_segment=needed,
        margin=spec.max_drop,
        alpha=alpha,
        short_segments=tuple(sorted(s for s, count in traffic.items() if count < needed)),
    )


def validate_request(session: Session, spec: GateCreate, knows_model: KnowsModel) -> None:
    """Refuse a gate whose arguments name nothing that exists (InvalidRequest, with `field`)."""
    if spec.candidate == spec.replace:
        raise InvalidRequest(
            "candidate and replace are the same model; a gate compares two models",
            field="candidate",
        )
    decisions = DECISION_TABLE.c
    routers = session.execute(
        select(func.count()).select_from(DECISION_TABLE).where(decisions.router == spec.router)
    ).scalar_one()
    if not routers:
        raise InvalidRequest(f"unknown router {spec.router!r}: no decisions logged", field="router")
    per_segment = segment_traffic(session, spec.router, spec.replace, [])
    if not per_segment:
        raise InvalidRequest(
            f"router {spec.router!r} never routed to {spec.replace!r}; "
            "--replace must be a model the router chooses",
            field="replace",
        )
    unknown = [s for s in spec.segments if s not in per_segment]
    if unknown:
        raise InvalidRequest(
            f"no decisions of router {spec.router!r} to {spec.replace!r} in segment(s) "
            f"{', '.join(unknown)}; known: {', '.join(sorted(per_segment))}",
            field="segments",
        )
    for field, model in (("candidate", spec.candidate), ("replace", spec.replace)):
        if not knows_model(model):
            raise InvalidRequest(
                f"unknown model {model!r}: no price for it (add it to "
                "SHADOWEVAL_PRICING_OVERRIDES if the id is right)",
                field=field,
            )


# The settings a gate run's judging reads; recorded at creation (judge_snapshot).
JUDGE_SETTINGS = (
    "judge_model",
    "judge_temperature",
    "judge_rubric",
    "judge_rubric_by_segment",
    "judge_max_tokens",
    "judge_char_budget",
)


def judge_snapshot(settings: Settings, spec: GateCreate) -> dict[str, Any]:
    """The judge a run is judged with, and the prices it is charged at, as of its creation.

    Stored on the run so a worker with other settings judges its items the same way;
    `prompt_hash` (judge.prompts) identifies the instructions of the default rubric and
    `prompt_hashes_by_segment` those of segment rubrics, so reports can name them."""
    from shadoweval.judge.prompts import build_judge_prompt
    from shadoweval.providers.pricing import PricingTable

    pricing = PricingTable.from_settings(settings)
    prices: dict[str, dict[str, float]] = {}
    for model in (spec.candidate, spec.replace, settings.judge_model):
        price = pricing.lookup(model)
        if price is not None:
            prices[model] = {
                "input": price.input,
                "output": price.output,
                "cache_read": price.cache_read,
                "cache_write": price.cache_write,
                "batch_discount": price.batch_discount,
            }
    return {
        **{name: getattr(settings, name) for name in JUDGE_SETTINGS},
        "prompt_hash": build_judge_prompt(settings.judge_rubric).prompt_hash,
        "prompt_hashes_by_segment": {
            segment: build_judge_prompt(rubric).prompt_hash
            for segment, rubric in settings.judge_rubric_by_segment.items()
        },
        "prices": prices,
    }


def settings_for_run(settings: Settings, run: GateRun) -> Settings:
    """`settings` with the run's recorded judge and prices in place of the worker's own."""
    if not run.judge:
        return settings
    recorded = run.judge
    return settings.model_copy(
        update={
            **{name: recorded[name] for name in JUDGE_SETTINGS if name in recorded},
            "pricing_overrides": {
                **settings.pricing_overrides,
                **recorded.get("prices", {}),
            },
        }
    )


def create_gate(
    *,
    session: Session,
    settings: Settings,
    spec: GateCreate,
    knows_model: KnowsModel,
    requested_by: str | None = None,
    now: datetime | None = None,
    commit: bool = True,
    require_power: bool = False,
) -> GateRun:
    """Validate and store a queued gate run (committed); a worker or the CLI runs it.

    `commit=False` only flushes (the run has its id), so a caller can store the run in
    its own transaction, e.g. with the model_change event that starts it.
    `require_power` refuses (UnderpoweredGate) a sample that cannot pass, unless the spec
    says `allow_underpowered`."""
    validate_request(session, spec, knows_model)
    alpha = spec.alpha if spec.alpha is not None else settings.gate_alpha
    if require_power and not spec.allow_underpowered:
        power = check_power(session, spec, alpha)
        if not power.can_pass:
            raise UnderpoweredGate(
                power.refusal("sample", "allow_underpowered: true"),
                field="sample",
                sample=power.sample,
                segments=power.segments,
                pairs_per_segment=power.pairs_per_segment,
                needed_per_segment=power.needed_per_segment,
                needed_sample=power.needed_sample,
                short_segments=list(power.short_segments),
            )
    now = now or utcnow()
    run = GateRun(
        router=spec.router,
        candidate_model=spec.candidate,
        replaced_model=spec.replace,
        sample_size=spec.sample,
        max_drop=spec.max_drop,
        alpha=alpha,
        segments=list(spec.segments),
        seed=spec.seed,
        max_cost_usd=spec.max_cost_usd or settings.gate_max_cost_usd,
        requested_by=requested_by,
        judge=judge_snapshot(settings, spec),
        status=GateStatus.QUEUED,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(run)
    if not commit:
        session.flush()
        return run
    session.commit()
    session.refresh(run)
    return run


def segment_traffic(
    session: Session | Connection, router: str, model: str, segments: list[str]
) -> dict[str, int]:
    """Decisions per segment that the router sent to `model` (the weights of the overall test)."""
    columns = DECISION_TABLE.c
    query = (
        select(columns.segment_value, func.count())
        .where(columns.router == router, columns.chosen_model == model)
        .group_by(columns.segment_value)
    )
    if segments:
        query = query.where(columns.segment_value.in_(segments))
    return {str(segment): int(count) for segment, count in session.execute(query)}


# --- reading ---------------------------------------------------------------------------------


def get_gate(session: Session, gate_id: int) -> GateRun:
    run = session.get(GateRun, gate_id)
    if run is None:
        raise NotFound(f"gate run {gate_id} not found", gate_id=gate_id)
    return run


def list_gates(
    session: Session,
    *,
    router: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[GateRun], str | None]:
    """Newest first; `cursor` is the id to continue below."""
    query = select(GateRun).order_by(RUN_TABLE.c.id.desc()).limit(limit + 1)
    if router:
        query = query.where(RUN_TABLE.c.router == router)
    if status:
        query = query.where(RUN_TABLE.c.status == status)
    if cursor:
        query = query.where(RUN_TABLE.c.id < paging.decode_id(cursor))
    runs = list(session.scalars(query))
    more = len(runs) > limit
    runs = runs[:limit]
    return runs, (paging.encode_id(cast(int, runs[-1].id)) if more and runs else None)
