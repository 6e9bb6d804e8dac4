"""Shadow runs and the judge: tier pools, the judge's model and rubric, human review and
escalation, judge change control, batch mode."""

from typing import Literal

from pydantic import BaseModel, Field, field_validator


class ShadowJudgeSettings(BaseModel):
    """How shadow answers are produced and judged, and which verdicts humans review."""

    tier_models: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description='Pool per router, tier → model, e.g. {"support-router": {"cheap": '
        '"claude-haiku-4-5", "strong": "claude-sonnet-4-5"}}; "*" applies to every router. '
        "Otherwise a decision's candidates, then the models last seen per tier, form the pool.",
    )
    judge_model: str = "claude-sonnet-4-6"
    judge_temperature: float | None = Field(
        default=0.0, description="None leaves sampling at the model's default (some refuse 0)."
    )
    judge_rubric: str | None = Field(default=None, description="Replaces the default rubric.")
    judge_rubric_by_segment: dict[str, str] = Field(
        default_factory=dict, description="Rubric overrides by segment value."
    )
    judge_max_tokens: int = Field(default=1024, ge=64)
    judge_char_budget: int = Field(
        default=24_000, ge=1_000, description="Characters of conversation + answers per judge call."
    )

    # Human feedback is compared with the judge as one bit; a grade needs a cut-off.
    feedback_acceptable_min_grade: int = Field(
        default=3, ge=1, le=5, description="A 1–5 grade at or above this is 'acceptable'."
    )

    # PPI (stats/ppi.py) needs human labels on a known-probability sample of judged pairs:
    # a pair is in the review sample when its review hash falls below this share.
    review_sample_probability: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="Share of judged pairs drawn into the uniform review sample (for PPI).",
    )

    # Judge escalation (judge/confidence.py): verdicts whose orders disagree or whose score
    # margin toward their label is small go to GET /v1/review/queue?mode=escalated.
    review_escalation_min_margin: float = Field(
        default=1.0,
        ge=0,
        le=9,
        description="Judge score margin (points on its 1-10 scale, mean of both orders) "
        "below which a verdict is escalated to human review.",
    )
    review_escalation_daily_budget: int = Field(
        default=20,
        ge=0,
        description="Escalated verdicts the review queue serves per decision day (UTC day of "
        "the decision's ts, whole deployment); 0 turns escalation off.",
    )
    judge_watch_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often the leader looks for a new judge key."
    )

    # finished_at is set inside the verdict's own transaction, which may commit a little
    # later: judge change control reads only verdicts finished this long ago, so its
    # watermark never passes one still in flight.
    judge_watch_settle_seconds: float = Field(
        default=60.0, ge=0, description="Seconds after finishing before a verdict is watched."
    )
    shadow_default_max_tokens: int = Field(default=1024, ge=1)

    # Batch mode halves the price of shadow and judge calls at the cost of latency (a batch
    # may take up to 24 h); gates and the demo always stay realtime.
    shadow_mode: Literal["realtime", "batch"] = Field(
        default="realtime", description="realtime | batch: how shadow and judge calls are made."
    )
    shadow_mode_by_router: dict[str, Literal["realtime", "batch"]] = Field(
        default_factory=dict, description="Per-router override of shadow_mode."
    )
    batch_max_items: int = Field(
        default=1000, ge=1, le=50_000, description="Items per provider batch (OpenAI max 50,000)."
    )
    batch_max_age_seconds: float = Field(
        default=600.0, ge=0, description="Seconds an item waits for a fuller batch before it goes."
    )
    batch_submit_interval_seconds: float = Field(
        default=30.0, gt=0, description="How often due items are gathered into batches."
    )
    batch_poll_interval_seconds: float = Field(
        default=60.0, gt=0, description="Seconds between status checks of one submitted batch."
    )

    @field_validator("judge_temperature", mode="before")
    @classmethod
    def _no_temperature(cls, value: object) -> object:
        # From the environment, "" or "none" means: send no temperature at all.
        if isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
            return None
        return value
