"""Judge–human agreement: Cohen's κ and agreement shares per judge model and prompt hash, and
on the verdicts the judge keeps vs those it escalates."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, null, select
from sqlmodel import Session

from shadoweval.feedback import labels as reductions
from shadoweval.feedback.models import (
    AgreementGroup,
    AgreementShare,
    EscalationAgreement,
    Feedback,
    ReviewLabel,
    ReviewQueueMode,
)
from shadoweval.feedback.review import escalation_flag
from shadoweval.judge import confidence
from shadoweval.judge.models import Verdict, VerdictStatus
from shadoweval.sql import table_of
from shadoweval.stats.agreement import cohen_kappa
from shadoweval.stats.rates import wilson_interval

FEEDBACK = table_of(Feedback)
LABEL = table_of(ReviewLabel)
VERDICT = table_of(Verdict)


# --- agreement ------------------------------------------------------------------------------


@dataclass
class _Labels:
    """Paired judge and human bits of one set of labels."""

    judge: list[int] = field(default_factory=list)
    human: list[int] = field(default_factory=list)

    def add(self, judge: int, human: int) -> None:
        self.judge.append(judge)
        self.human.append(human)


@dataclass
class _Group:
    judge_model: str
    prompt_hash: str
    judge: list[int] = field(default_factory=list)
    human: list[int] = field(default_factory=list)
    verdict_ids: set[int] = field(default_factory=set)
    from_labels: int = 0
    from_feedback: int = 0
    kept: _Labels = field(default_factory=_Labels)
    escalated: _Labels = field(default_factory=_Labels)
    escalation_queue: _Labels = field(default_factory=_Labels)


def judge_agreement(
    *,
    session: Session,
    router: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    escalation_min_margin: float = 1.0,
) -> list[AgreementGroup]:
    """Cohen's κ between the judge and humans per judge (model + prompt hash), on "the
    served answer was acceptable". One observation per (judged pair, human label): a pair
    labelled by two reviewers and thumbed by its user counts three times.

    Beside it, judge escalation: agreement on the verdicts the judge keeps and on those it
    escalates (judge.confidence.escalates at `escalation_min_margin`), each read from the
    uniform review sample's labels only, and apart from them the escalation queue's own
    labels. Stratified-queue labels, labels older than migration 0020 (queue unknown) and
    end-user feedback count in κ only."""
    conditions: list[Any] = [VERDICT.c.status == VerdictStatus.DONE]
    if router is not None:
        conditions.append(VERDICT.c.router == router)
    if since is not None:
        conditions.append(VERDICT.c.ts >= since)
    if until is not None:
        conditions.append(VERDICT.c.ts < until)
    v = VERDICT.c
    columns = (v.id, v.judge_key, v.judge_model, v.prompt_hash, v.direction, v.outcome)
    confidence_columns = (v.strong_needed, v.score_delta)
    from_labels = session.execute(
        select(*columns, LABEL.c.served_acceptable, LABEL.c.queue, *confidence_columns)
        .join(LABEL, LABEL.c.verdict_id == v.id)
        .where(*conditions)
    ).all()
    from_feedback = session.execute(
        select(*columns, FEEDBACK.c.acceptable, null(), *confidence_columns)
        .join(
            FEEDBACK,
            and_(FEEDBACK.c.router == v.router, FEEDBACK.c.request_id == v.request_id),
        )
        .where(*conditions)
    ).all()
    groups: dict[str, _Group] = {}
    for source, rows in (("labels", from_labels), ("feedback", from_feedback)):
        for row in rows:
            (verdict_id, judge_key, judge_model, prompt_hash, direction, outcome) = row[:6]
            human, queue, strong_needed, score_delta = int(row[6]), row[7], row[8], row[9]
            group = groups.setdefault(judge_key, _Group(judge_model, prompt_hash))
            judge = reductions.judge_served_acceptable(direction, outcome or "")
            group.judge.append(judge)
            group.human.append(human)
            group.verdict_ids.add(int(verdict_id))
            if source == "feedback":
                group.from_feedback += 1
                continue
            group.from_labels += 1
            if queue == ReviewQueueMode.ESCALATED:
                group.escalation_queue.add(judge, human)
            elif queue == ReviewQueueMode.UNIFORM:
                escalated = confidence.escalates(
                    outcome, strong_needed, score_delta, min_margin=escalation_min_margin
                )
                (group.escalated if escalated else group.kept).add(judge, human)
    flagged = escalation_flag(escalation_min_margin)
    counts = session.execute(
        select(
            v.judge_key,
            func.count(),
            func.sum(case((flagged, 1), else_=0)),
        )
        .where(*conditions, v.judge_key.in_(list(groups)))
        .group_by(v.judge_key)
    ).all()
    totals = {key: (int(n), int(e or 0)) for key, n, e in counts}
    return [
        _agreement_group(key, group, totals.get(key, (0, 0)), escalation_min_margin)
        for key, group in sorted(groups.items())
    ]


def _finite(value: float) -> float | None:
    return None if value != value else value  # NaN → null


def _share(labels: _Labels) -> AgreementShare:
    n = len(labels.judge)
    agree = sum(j == h for j, h in zip(labels.judge, labels.human, strict=True))
    kappa = cohen_kappa(labels.judge, labels.human)
    low, high = wilson_interval(agree / n, n) if n else (None, None)
    return AgreementShare(
        labels=n,
        agreement=agree / n if n else None,
        agreement_ci_low=low,
        agreement_ci_high=high,
        kappa=_finite(kappa.kappa),
        kappa_ci_low=_finite(kappa.ci_low),
        kappa_ci_high=_finite(kappa.ci_high),
    )


def _agreement_group(
    judge_key: str, group: _Group, totals: tuple[int, int], min_margin: float
) -> AgreementGroup:
    kappa = cohen_kappa(group.judge, group.human)
    n = kappa.n
    verdicts, escalated = totals
    share_low, share_high = (
        wilson_interval(escalated / verdicts, verdicts) if verdicts else (None, None)
    )
    return AgreementGroup(
        judge_model=group.judge_model,
        prompt_hash=group.prompt_hash,
        judge_key=judge_key,
        n=n,
        verdicts=len(group.verdict_ids),
        from_review_labels=group.from_labels,
        from_feedback=group.from_feedback,
        observed_agreement=_finite(kappa.observed_agreement),
        expected_agreement=_finite(kappa.expected_agreement),
        kappa=_finite(kappa.kappa),
        kappa_std_error=_finite(kappa.std_error),
        kappa_ci_low=_finite(kappa.ci_low),
        kappa_ci_high=_finite(kappa.ci_high),
        judge_acceptable_rate=sum(group.judge) / n if n else None,
        human_acceptable_rate=sum(group.human) / n if n else None,
        escalation=EscalationAgreement(
            min_margin_points=min_margin,
            verdicts=verdicts,
            escalated_verdicts=escalated,
            escalated_share=escalated / verdicts if verdicts else None,
            escalated_share_ci_low=share_low,
            escalated_share_ci_high=share_high,
            kept=_share(group.kept),
            escalated=_share(group.escalated),
            escalation_queue=_share(group.escalation_queue),
        ),
    )
