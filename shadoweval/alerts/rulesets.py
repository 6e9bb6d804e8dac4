"""Alert rule sets: the rule file, the set stored through the API, and which one is in force."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import select
from sqlmodel import Session

from shadoweval.alerts import rules as alert_rules
from shadoweval.alerts.models import (
    AlertRuleSet,
    RuleSetPublic,
)
from shadoweval.alerts.rules import RuleSet
from shadoweval.alerts.tables import RULE_SET_TABLE
from shadoweval.config import Settings
from shadoweval.db import utcnow

DEFAULT_RULES_FILE = Path(__file__).with_name("default_rules.yaml")


def _file_rules(settings: Settings) -> tuple[RuleSet, Path]:
    path = settings.alert_rules_file or DEFAULT_RULES_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise alert_rules.RuleFileError(
            str(path), [{"loc": [], "msg": f"cannot read: {error}"}]
        ) from error
    return alert_rules.parse_rules(text, source=str(path)), path


def check_rules_file(settings: Settings) -> RuleSet:
    """Startup check of the API and the worker: a rule file that does not validate stops
    them with its path and every error, rather than leaving a deployment that never alerts."""
    return _file_rules(settings)[0]


def current_rules(*, session: Session, settings: Settings) -> RuleSetPublic:
    """The rule set in force: the newest one put through the API, else the rule file.

    Raises RuleFileError (an InvalidConfiguration) naming the source and each field path.
    """
    row = session.execute(
        select(RULE_SET_TABLE).order_by(RULE_SET_TABLE.c.id.desc()).limit(1)
    ).first()
    if row is not None:
        source = f"alert rule set {row.id} (PUT /v1/alert-rules)"
        try:
            rules = RuleSet.model_validate({"rules": row.rules}).rules
        except ValidationError as error:
            # Stored by an older version whose schema this one no longer accepts.
            raise alert_rules.RuleFileError(
                source, [{"loc": list(e["loc"]), "msg": e["msg"]} for e in error.errors()]
            ) from error
        return RuleSetPublic(
            source="api", updated_at=row.created_at, updated_by=row.updated_by, rules=rules
        )
    rule_set, path = _file_rules(settings)
    return RuleSetPublic(source=str(path), updated_at=None, updated_by=None, rules=rule_set.rules)


def put_rules(*, session: Session, rule_set: RuleSet, updated_by: str | None) -> RuleSetPublic:
    """Store a validated rule set; it replaces the file (and earlier sets) from now on."""
    row = AlertRuleSet(
        rules=[rule.model_dump(mode="json", by_alias=True) for rule in rule_set.rules],
        updated_by=updated_by,
        created_at=utcnow(),
    )
    session.add(row)
    session.commit()
    return RuleSetPublic(
        source="api", updated_at=row.created_at, updated_by=updated_by, rules=rule_set.rules
    )
