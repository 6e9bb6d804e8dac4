"""The one typed settings object, read from `SHADOWEVAL_*` environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from difflib import get_close_matches
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shadoweval.redaction_defaults import DEFAULT_PATTERNS as DEFAULT_REDACTION_PATTERNS

StorePayloads = Literal["sampled", "all", "none"]


class Settings(BaseSettings):
    """Every knob of a deployment. Defaults run the demo on the embedded SQLite file."""

    model_config = SettingsConfigDict(env_prefix="SHADOWEVAL_", extra="ignore")

    data_dir: Path = Field(
        default=Path(".shadoweval"),
        description="Where the embedded SQLite database and local state live.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; `postgresql://…` is accepted. Default: SQLite in data_dir.",
    )
    database_read_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of a read replica for the read routes the dashboard "
        "uses (deps.REPLICA_READ_ROUTES); everything that reads its own writes stays on "
        "database_url. Default: none, every read goes to the primary.",
    )
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)
    # A stalled PostgreSQL must not hang requests: each wait on it is bounded, and a request
    # waits at most about max(statement, pool + connect) seconds before its 503.
    db_connect_timeout_seconds: int = Field(
        default=2,
        ge=2,
        description="Seconds to open a PostgreSQL connection (libpq's minimum is 2).",
    )
    db_statement_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Seconds one statement or commit may take in the API (PostgreSQL "
        "statement_timeout, and a client-side limit for a database that stops answering).",
    )
    db_worker_statement_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="The same limit for the worker's jobs, whose aggregations run longer; "
        "a job over it fails, is logged, and runs again next tick.",
    )
    db_pool_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Seconds a request waits for a free pooled connection before its 503.",
    )

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    metrics_require_key: bool = Field(
        default=False,
        description="Protect /metrics with the read scope (open by default for Prometheus).",
    )

    segment_key: str = Field(
        default="topic",
        description="The label of `segment` whose value defines a segment; others are filters.",
    )
    unlabelled_segment: str = Field(
        default="(none)", description="Segment value of decisions without the segment key."
    )

    store_payloads: StorePayloads = Field(
        default="sampled",
        description="Keep request/response payloads for sampled decisions only, all, or none.",
    )
    redaction_patterns: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_REDACTION_PATTERNS),
        description="Regexes applied to payload text before it is written, by name; a "
        "decision whose payload they change is stored but not shadowed (an unfair pair).",
    )
    payload_retention_days: float = Field(
        default=30.0, gt=0, description="Stored payloads older than this are deleted."
    )
    # π for strata the planner has not seen yet.
    sampling_rate_by_tier: dict[str, float] = Field(
        default_factory=lambda: {"cheap": 0.2, "strong": 0.05},
        description="Inclusion probability π per routed tier (JSON in the environment).",
    )
    sampling_default_rate: float = Field(default=0.2, ge=0.0, le=1.0)

    ingest_max_items: int = Field(default=1000, ge=1)
    ingest_max_concurrent: int = Field(
        default=8, ge=1, description="Ingest transactions at once per API process."
    )
    ingest_wait_seconds: float = Field(
        default=2.0, ge=0, description="Wait for a slot before answering 503 with Retry-After."
    )
    ingest_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    api_max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Body limit of the admin and operate routes (keys, pool, alert rules, "
        "gates, review labels), enforced while reading.",
    )
    # Ingest skips the key lookup (a DB read and a thread hop per request) for a key it
    # authenticated this recently; also the bound on how long a key revoked through another
    # API process keeps working for ingest (revocations through this process apply at once).
    ingest_key_cache_seconds: float = Field(
        default=5.0, ge=0, description="Seconds ingest trusts an authenticated API key; 0 = off."
    )
    otlp_router_name: str = Field(
        default="otel", description="Router of OTLP spans without shadoweval.route.router."
    )

    # --- providers (model backends; secrets only from the environment) ---
    anthropic_api_key: str | None = Field(default=None, repr=False)
    anthropic_base_url: str | None = Field(
        default=None, description="Anthropic API root, e.g. http://host:port (no /v1)."
    )
    openai_api_key: str | None = Field(default=None, repr=False)
    openai_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible API root ending in /v1 (vLLM, Ollama, a LiteLLM proxy).",
    )
    provider_for_model_prefix: dict[str, str] = Field(
        default_factory=lambda: {
            "claude": "anthropic",
            "gpt": "openai",
            "o1": "openai",
            "o3": "openai",
            "o4": "openai",
        },
        description="Which provider serves a model, by the longest matching id prefix.",
    )
    default_provider: str = Field(
        default="openai", description="Provider for models no prefix matches."
    )
    use_simulated_provider: bool = Field(
        default=False, description="Serve every model from the demo's simulated provider."
    )
    provider_timeout_s: float = Field(default=60.0, gt=0)
    provider_max_in_flight: int = Field(
        default=16, ge=1, description="Concurrent calls per provider."
    )
    provider_requests_per_minute: float = Field(default=1000.0, gt=0)
    provider_tokens_per_minute: float = Field(default=2_000_000.0, gt=0)
    provider_max_attempts: int = Field(default=4, ge=1)
    provider_backoff_base_s: float = Field(default=1.0, ge=0)
    provider_backoff_max_s: float = Field(default=60.0, ge=0)
    circuit_failure_threshold: int = Field(default=5, ge=1)
    circuit_reset_s: float = Field(default=30.0, gt=0)
    pricing_overrides: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="USD per million tokens by model id, e.g. "
        '{"my-model": {"input": 1, "output": 5, "cache_read": 0.1, "cache_write": 1.25}}.',
    )
    # --- end providers ---

    # --- sampling plan and budget ---
    sampling_mode: Literal["hourly", "at_ingest"] = Field(
        default="hourly",
        description="`hourly`: π is decided per closed decision-time period by the planner job, "
        "from traffic before the period and labels older than `sampling_label_lag_minutes`, so "
        "a replay at any speed samples the same decisions (DESIGN.md, Time). `at_ingest`: π is "
        "decided as each decision is stored, from the plan in force then (lower latency; the same "
        "samples in a replay only while no planner plan exists, i.e. at the fixed "
        "`sampling_rate_by_tier`).",
    )
    sampling_period_minutes: int = Field(
        default=60,
        ge=1,
        le=1440,
        description="Length of a sampling period in decision time; divides a day.",
    )
    sampling_close_lateness_seconds: float = Field(
        default=300.0,
        ge=0,
        description="A period closes once its router's decision time is this far past its end; "
        "decisions arriving later are sampled with the period's stored plan.",
    )
    sampling_label_lag_minutes: float = Field(
        default=360.0,
        gt=0,
        description="The plan of period h reads labels of decisions before h minus this lag, and "
        "waits until all of them are judged (use ≥ the batch window in batch mode).",
    )
    sampling_idle_close_seconds: float = Field(
        default=900.0,
        gt=0,
        description="Wall seconds without any decision-time progress after which open periods "
        "up to the watermark close (the end of a stream, a quiet router).",
    )
    sampling_cost_lookback_days: float = Field(
        default=7.0, gt=0, description="Days of finished samples a stratum's cost is learned from."
    )
    sampling_cost_min_samples: int = Field(
        default=5,
        ge=1,
        description="Finished samples before a stratum's learned cost replaces the prior.",
    )
    sampling_cost_margin: float = Field(
        default=0.05,
        ge=0,
        description="Reservations are the learned mean cost × (1 + margin), for the spread of "
        "work still in flight.",
    )
    daily_shadow_budget_usd: float = Field(
        default=20.0, ge=0, description="USD per UTC day of ts for everything sampling causes."
    )
    boost_daily_budget_usd: float = Field(
        default=5.0, ge=0, description="USD per UTC day for boosted sampling after model changes."
    )
    reverse_shadow_share: float = Field(
        default=0.1, ge=0, le=1, description="Share of the budget for strong-routed strata."
    )
    default_cost_per_sample_usd: float = Field(
        default=0.02, gt=0, description="Reservation per sample until the planner has estimates."
    )
    harm_baseline: float = Field(default=0.10, gt=0, lt=1, description="Expected harm rate p0.")
    harm_alert_rate: float = Field(
        default=0.15, gt=0, lt=1, description="Harm rate the floors must detect (p1 > p0)."
    )
    detection_window_days: float = Field(
        default=1.0, gt=0, description="Time within which a segment's floor detects the drop."
    )
    sequential_alpha: float = Field(
        default=0.05, gt=0, lt=1, description="Level of the mixture SPRT shown beside the alarm."
    )
    sequential_alarm_threshold: float = Field(
        default=30_000.0,
        gt=1,
        description="In-control run length A of the quality-drop detector, in labels per "
        "segment: about n/A false alarms in n labels (30,000 ≈ 1 per 30 days over 20 segments "
        "at 50 labels a day); the GLR threshold is calibrated from it.",
    )
    sequential_reference_labels: int = Field(
        default=100, ge=10, description="Labels that set a segment's baseline harm rate p0."
    )
    change_point_window_labels: int = Field(
        default=1000,
        ge=50,
        le=2000,
        description="Look-back of the quality-drop detector: the longest post-change stretch "
        "it tests, and the labels (with their ts) each segment's state keeps. Rises it must "
        "catch need fewer labels than this (stats.change_point.labels_to_detect).",
    )
    aggregate_interval_seconds: float = Field(default=5.0, gt=0)
    session_totals_batch_size: int = Field(
        default=20_000,
        ge=1,
        description="Decisions the aggregator reads per transaction into the session totals.",
    )
    # Like model_watch_settle_seconds: ingest transactions commit out of id order on
    # PostgreSQL, so the aggregator re-reads the ids it saw this recently (database clock).
    session_totals_settle_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Seconds (database clock) the session aggregation re-reads recent ids.",
    )
    planner_interval_seconds: float = Field(
        default=30.0, gt=0, description="How often the planner samples closed periods."
    )
    decision_clock_skew_seconds: float = Field(
        default=300.0,
        ge=0,
        description="How far a decision `ts` may run ahead of the wall clock and still move its "
        "router's decision-time watermark (a bogus future ts cannot run the clock ahead).",
    )
    planner_traffic_days: float = Field(default=1.0, gt=0, description="Traffic look-back.")
    plan_refresh_seconds: float = Field(
        default=30.0, ge=0, description="How often ingest reloads the sampling plan."
    )
    # --- threshold advisor (GET /v1/thresholds) ---
    threshold_window_days: float = Field(
        default=7.0,
        gt=0,
        description="Decision days of traffic and labels the threshold advisor reads, ending at "
        "the router's decision-time watermark.",
    )
    threshold_bootstrap_replicates: int = Field(
        default=400, ge=20, le=10_000, description="Bootstrap replicates of the advisor's bands."
    )
    threshold_min_labels: int = Field(
        default=100, ge=1, description="Labels a segment needs before the advisor recommends."
    )
    threshold_min_band_labels: int = Field(
        default=20,
        ge=1,
        description="Labels between the threshold in force and a higher threshold before the "
        "advisor tests that threshold.",
    )

    # --- shadow runs and the judge ---
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
    # CBPE-style expected harm refits the score → P(harm) map on bootstrap resamples.
    expected_harm_bootstrap: int = Field(
        default=100, ge=10, le=2000, description="Bootstrap refits behind expected-harm intervals."
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
    # Release gate (`shadoweval gate`, POST /v1/gates): the one-sided level of its
    # non-inferiority tests, and the share of replayed requests that may fail (provider or
    # judge errors) before a run reports an error instead of a verdict on a biased sample.
    gate_alpha: float = Field(
        default=0.05, gt=0, lt=0.5, description="One-sided level of the gate's tests."
    )
    gate_max_error_share: float = Field(
        default=0.05, ge=0, le=1, description="Share of gate items allowed to end in error."
    )
    gate_max_cost_usd: float | None = Field(
        default=50.0, gt=0, description="Default spending cap of one gate run, USD."
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
    work_max_attempts: int = Field(
        default=5, ge=1, description="Claims of one work item before it is recorded as failed."
    )
    work_lease_seconds: float = Field(default=600.0, gt=0)
    work_retry_base_s: float = Field(default=30.0, ge=0)
    work_retry_max_s: float = Field(default=3600.0, ge=0)
    worker_batch_size: int = Field(default=8, ge=1, description="Items one lane claims at once.")
    worker_lanes: int = Field(
        default=4, ge=1, description="Concurrent claim loops per kind of work item."
    )
    worker_poll_seconds: float = Field(default=2.0, gt=0)
    enqueue_interval_seconds: float = Field(default=5.0, gt=0)
    leader_lease_seconds: float = Field(
        default=30.0, gt=0, description="A dead leader is replaced within this time."
    )

    # --- litellm integration ---
    litellm_router_name: str = Field(
        default="litellm",
        min_length=1,
        max_length=200,
        description="Router name of decisions posted to /v1/integrations/litellm "
        "(a `?router=` query parameter overrides it per logger).",
    )
    litellm_group_tiers: dict[str, str] = Field(
        default_factory=dict,
        description='Tier of each LiteLLM model group, e.g. {"gpt-4o-mini": "cheap", '
        '"gpt-4o": "strong"}; "*" is the default. An unmapped group is its own tier name.',
    )
    litellm_segment_key_source: str | None = Field(
        default=None,
        description="The LiteLLM label whose value is the segment (segment_key): the key of "
        "a `key:value` request tag or of the caller's metadata, or team, key_alias, user, "
        "org, project, end_user, tags. Default: the label named like segment_key.",
    )
    litellm_max_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="Body limit of /v1/integrations/litellm: LiteLLM flushes up to 512 "
        "records of ~14 KB at once.",
    )
    # --- end litellm integration ---

    # --- model watcher (pool) ---
    model_watch_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often the leader scans new decisions for new models."
    )
    model_watch_batch_size: int = Field(
        default=5000, ge=1, description="Decisions the model watcher reads per transaction."
    )
    # Ingest transactions commit out of id order on PostgreSQL: the watcher re-reads the ids
    # it saw in the last this-many seconds (database clock) on every pass, so only a decision
    # whose ingest transaction stays open longer than this after drawing its id can be missed.
    model_watch_settle_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Seconds (database clock) the watcher keeps re-reading recent decision ids.",
    )
    model_pool_establish_minutes: float = Field(
        default=15.0,
        ge=0,
        description="Minutes of decision time after a tier's first decision whose models "
        "establish its pool (no model_change for them).",
    )
    model_change_boost_hours: float = Field(
        default=24.0, ge=0, description="Hours of decision time a model change boosts sampling."
    )
    model_change_boost_factor: float = Field(
        default=5.0, ge=1, description="How many times more often a changed tier is sampled."
    )
    # Off by default: a gate run spends provider money (up to gate_max_cost_usd) on every
    # model change, which a team should opt into.
    gate_on_model_change: bool = Field(
        default=False, description="Queue a gate run (new model vs. previous) per model change."
    )
    gate_on_model_change_sample: int = Field(
        default=200, ge=1, le=100_000, description="Requests the model-change gate replays."
    )
    gate_on_model_change_max_drop: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="Non-inferiority margin of the model-change gate (P(loss) - P(win)).",
    )
    # --- end model watcher ---

    # --- dashboard (`shadoweval dashboard` reads the HTTP API only, never the database) ---
    dashboard_api_url: str = Field(
        default="http://127.0.0.1:8000", description="Base URL of the API the dashboard reads."
    )
    dashboard_read_key: str | None = Field(
        default=None, repr=False, description="Read-scope API key the dashboard sends."
    )
    dashboard_operate_key: str | None = Field(
        default=None,
        repr=False,
        description="Operate-scope key; when set the dashboard offers acknowledge and silence.",
    )
    dashboard_host: str = Field(default="127.0.0.1", description="Dashboard bind address.")
    dashboard_port: int = Field(default=8501, ge=0, le=65535, description="Dashboard port.")
    dashboard_cache_seconds: float = Field(
        default=15.0,
        ge=0,
        description="How long the dashboard reuses an API answer before asking again; 0 = never.",
    )
    # --- end dashboard ---

    # --- alert rules and lifecycle ---
    alert_rules_file: Path | None = Field(
        default=None,
        description="YAML rule file; default: the packaged default_rules.yaml. A rule set "
        "put through PUT /v1/alert-rules replaces it.",
    )
    alert_evaluate_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often the leader evaluates the alert rules."
    )
    # Rules on decision time are evaluated at fixed steps of each router's decision time,
    # never at "whenever the worker ran": a replay at any speed then meets the same steps.
    alert_decision_step_seconds: float = Field(
        default=300.0,
        ge=60,
        le=86400,
        description="Decision-time step at which the decision-time alert rules are evaluated.",
    )
    alert_catch_up_hours: float = Field(
        default=24.0,
        gt=0,
        description="Hours of decision time a new rule or a new router looks back over; "
        "older steps are skipped (an evaluator that fell behind takes every step).",
    )
    alert_max_steps_per_pass: int = Field(
        default=288,
        ge=1,
        description="Decision-time steps per rule and clock one evaluation pass handles; "
        "the next pass continues from there.",
    )
    alert_reminder_minutes: float = Field(
        default=240.0,
        gt=0,
        description="Minutes a firing, unacknowledged alert waits before a reminder.",
    )
    dashboard_url: str = Field(
        default="http://127.0.0.1:8501",
        description="Public URL of the dashboard, for the links alerts carry.",
    )
    # --- end alert rules and lifecycle ---

    # --- alert delivery (outbox; URLs and keys are secrets, never logged or shown whole) ---
    alert_webhook_url: str | None = Field(
        default=None, description="Generic webhook receiving every alert notification as JSON."
    )
    alert_webhook_secret: str | None = Field(
        default=None,
        repr=False,
        description="Shared secret signing webhook and retrain bodies (X-Shadoweval-Signature).",
    )
    alert_slack_webhook_url: str | None = Field(
        default=None, repr=False, description="Slack incoming-webhook URL (its path is a secret)."
    )
    alert_pagerduty_routing_key: str | None = Field(
        default=None, repr=False, description="PagerDuty Events API v2 integration (routing) key."
    )
    alert_pagerduty_url: str = Field(
        default="https://events.pagerduty.com/v2/enqueue",
        description="PagerDuty Events API v2 endpoint.",
    )
    retrain_webhook_url: str | None = Field(
        default=None,
        description="Signed webhook told of every model change, with a training-export link.",
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Public URL of this API, for absolute links in notifications.",
    )
    delivery_max_age_hours: float = Field(
        default=24.0,
        gt=0,
        description="Hours a delivery keeps being retried before it is recorded as failed.",
    )
    delivery_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Seconds one delivery POST may take."
    )
    # Delivered and failed outbox rows (and their attempts) are deleted after this many
    # days by the leader's purge_deliveries job: the outbox would otherwise grow forever.
    delivery_retention_days: float = Field(
        default=30.0,
        gt=0,
        description="Days delivered and failed alert deliveries are kept before deletion.",
    )
    # Backoff between attempts of one delivery: base · 2^(n−1) with jitter, capped, so a
    # receiver back after an outage gets its backlog within a few minutes.
    delivery_retry_base_seconds: float = Field(
        default=10.0, gt=0, description="Seconds before the first retry of a delivery."
    )
    delivery_retry_max_seconds: float = Field(
        default=300.0, gt=0, description="Longest wait between two attempts of a delivery."
    )
    # --- end alert delivery ---

    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("judge_temperature", mode="before")
    @classmethod
    def _no_temperature(cls, value: object) -> object:
        # From the environment, "" or "none" means: send no temperature at all.
        if isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
            return None
        return value

    @field_validator("sampling_rate_by_tier")
    @classmethod
    def _rates_are_probabilities(cls, rates: dict[str, float]) -> dict[str, float]:
        for tier, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate for tier {tier!r} must be within [0, 1], got {rate}")
        return rates

    @field_validator("sampling_period_minutes")
    @classmethod
    def _period_divides_a_day(cls, minutes: int) -> int:
        # A period never straddles two budget days.
        if 1440 % minutes:
            raise ValueError(f"must divide a day (1440 minutes), got {minutes}")
        return minutes

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL to connect to, with the psycopg 3 driver for PostgreSQL."""
        if self.database_url is None:
            return f"sqlite:///{self.data_dir / 'shadoweval.db'}"
        return _with_psycopg(self.database_url)

    def read_replica_settings(self) -> Settings | None:
        """These settings with the read replica as the database (for `create_db_engine`),
        or None when no `database_read_url` is set."""
        if self.database_read_url is None:
            return None
        return self.model_copy(
            update={
                "database_url": _with_psycopg(self.database_read_url),
                "database_read_url": None,
            }
        )


def _with_psycopg(url: str) -> str:
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings` and pass it in."""
    return Settings()


# Read outside Settings: the client's and the CLI's own variables, and the test suite's.
OTHER_ENVIRONMENT_VARIABLES = frozenset(
    {
        "SHADOWEVAL_URL",
        "SHADOWEVAL_INGEST_KEY",
        "SHADOWEVAL_KEY",
        "SHADOWEVAL_LITELLM_AUTHORIZATION",
        "SHADOWEVAL_TEST_POSTGRES_URL",
        "SHADOWEVAL_TEST_FREEZE_SECONDS",
        "SHADOWEVAL_FUZZ_EXAMPLES",
    }
)


def unknown_environment_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """`SHADOWEVAL_*` variables nothing reads, each with the closest known name (or None).

    pydantic-settings ignores them silently, so a misspelt setting would run on its default.
    """
    known = {"SHADOWEVAL_" + name.upper() for name in Settings.model_fields}
    known |= OTHER_ENVIRONMENT_VARIABLES
    unknown = sorted(n for n in environ if n.startswith("SHADOWEVAL_") and n not in known)
    # Match on what follows the prefix, or every name would look close to every other.
    suffixes = {name.removeprefix("SHADOWEVAL_"): name for name in known}

    def closest(name: str) -> str | None:
        matches = get_close_matches(name.removeprefix("SHADOWEVAL_"), suffixes, n=1)
        return suffixes[matches[0]] if matches else None

    return [(name, closest(name)) for name in unknown]
