"""The rows of the training export (GET /v1/exports/training), as documented models.

The export streams text, not JSON documents, so these models only describe it: the
OpenAPI document names them for each format, and `tests/unit/test_export_schema.py`
checks that every row the export builds validates against them (no undocumented field).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shadoweval.judge.models import OrderResult


class ExportedOrder(OrderResult):
    """One judge order as stored on the verdict: the answer, tokens and USD cost of its
    calls, and which judge (model, prompt hash) and batch (if any) answered it."""

    model_config = ConfigDict(extra="allow")  # keys of orders stored by older versions

    judge_model: str | None = None
    prompt_hash: str | None = None
    batch: str | None = Field(default=None, description="Tag of the provider batch, if any.")


class ExportedJudge(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="The judge model.")
    prompt_hash: str = Field(description="Hash of the judge's instructions (its rubric).")
    judge_key: str = Field(description="model#prompt_hash: verdict windows split on it.")
    scale: Literal["1-10"] = Field(description="The scale of score_cheaper/score_stronger.")
    order_cheaper_first: ExportedOrder | None = Field(
        description="The order that showed the cheaper answer as A."
    )
    order_stronger_first: ExportedOrder | None = Field(
        description="The order that showed the stronger answer as A."
    )


class ThresholdAdvice(BaseModel):
    """The threshold advisor's recommendation for the pair's segment (analytics/thresholds.py,
    at its default budget and risk), for a retrain to use."""

    model_config = ConfigDict(extra="forbid")

    recommended_threshold: float | None = Field(description="On the router_score scale.")
    change: str = Field(description="What the recommendation does to the threshold in force.")
    threshold_in_force: float | None
    harm_budget: float = Field(description="Harm rate the advice keeps below (a share).")
    delta: float = Field(description="Risk level of the bound (1 - confidence).")
    window_until: str | None = Field(description="End of the labels' window, RFC 3339.")
    labels: int = Field(description="Labelled pairs of the segment behind the advice.")


class TrainingPair(BaseModel):
    """`format=jsonl`: one judged pair per line, every field."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="router:request_id")
    verdict_id: int
    decision_id: int
    router: str
    router_version: str | None
    request_id: str
    ts: str = Field(description="Decision time, RFC 3339.")
    segment: dict[str, Any] = Field(description="The decision's segment labels.")
    segment_value: str = Field(description="The segment the pair is counted in.")
    routed_tier: str
    direction: Literal["forward", "reverse"] = Field(
        description="forward: the router chose the cheaper tier; reverse: the stronger."
    )
    prompt: str | None = Field(description="The last user turn, as text.")
    system: str | list[dict[str, Any]] | None
    messages: list[dict[str, Any]] = Field(description="The conversation as logged.")
    cheaper_tier: str
    stronger_tier: str
    cheaper_model: str
    stronger_model: str
    cheaper_answer: str | None
    stronger_answer: str | None
    outcome: Literal["cheaper_wins", "stronger_wins", "tie", "inconsistent"] | None
    consistent: bool | None = Field(description="Both orders agree.")
    strong_needed: Literal[0, 1] = Field(description="1: the cheaper answer is not enough.")
    cheap_acceptable: Literal[0, 1]
    winner: Literal["model_a", "model_b", "tie"] = Field(
        description="RouteLLM's label: model_a = cheaper, model_b = stronger."
    )
    judge: ExportedJudge
    score_cheaper: float | None = Field(description="Judge score 1-10, mean of both orders.")
    score_stronger: float | None
    score_delta: float | None = Field(description="score_stronger - score_cheaper.")
    router_score: float | None
    score_semantics: str
    threshold: float | None
    cost_cheaper_usd: float | None = Field(description="USD; None when unpriced.")
    cost_stronger_usd: float | None = Field(description="USD; None when unpriced.")
    inclusion_probability: float = Field(description="π: the chance this pair was sampled.")
    weight: float = Field(description="1/π, the pair's weight in unbiased estimates.")
    simulated: bool = Field(description="Answered by the demo's simulated provider.")
    threshold_advice: ThresholdAdvice | None = Field(
        default=None,
        description="The advisor's recommendation for the segment; absent from the CLI's "
        "export without settings, null when the advisor does not apply.",
    )


class RoutellmBattle(BaseModel):
    """`format=routellm`: RouteLLM's battle columns (`routellm/gpt4_judge_battles`)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="router:request_id")
    model_a: str = Field(description="The cheaper model.")
    model_b: str = Field(description="The stronger model.")
    prompt: str = Field(description="The user turns as a JSON-encoded list of strings.")
    response_a: str | None
    response_b: str | None
    winner_model_a: Literal[0, 1]
    winner_model_b: Literal[0, 1] = Field(description="1 when strong_needed = 1.")
    winner_tie: Literal[0, 1]
    weight: float = Field(description="1/π.")
    segment: str


NOTDIAMOND_CSV = (
    "`format=notdiamond`: NotDiamond's custom-router CSV. Header `prompt`, then for each "
    "model on either side of an exported pair (sorted) `<provider>/<model>/response` and "
    "`<provider>/<model>/score`; one row per pair with the last user turn, and each of its "
    "two models' answer and judge score (1-10, mean of both orders); other models' cells "
    "are empty."
)

# The 200 answer of the export in the OpenAPI document, one schema per media type.
EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The export, streamed. `jsonl` and `routellm`: one JSON object per "
        "line (TrainingPair, RoutellmBattle); `notdiamond`: CSV.",
        "model": TrainingPair | RoutellmBattle,
        "content": {"text/csv": {"schema": {"type": "string", "description": NOTDIAMOND_CSV}}},
    }
}
