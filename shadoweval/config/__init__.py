"""The one typed settings object, read from `SHADOWEVAL_*` environment variables.

`Settings` is composed of one class per section (database, runtime, ingest, …), each in its
own module here; a setting is added to its section's class and read as `settings.<name>`
as before (the environment name is `SHADOWEVAL_<NAME>` whatever its section).
"""

from __future__ import annotations

from collections.abc import Mapping
from difflib import get_close_matches
from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict

from shadoweval.config.alerts import AlertSettings
from shadoweval.config.analytics import AnalyticsSettings
from shadoweval.config.dashboard import DashboardSettings
from shadoweval.config.database import DatabaseSettings
from shadoweval.config.ingest import IngestSettings, StorePayloads
from shadoweval.config.judge import ShadowJudgeSettings
from shadoweval.config.pool import PoolGateSettings
from shadoweval.config.providers import ProviderSettings
from shadoweval.config.retention import RetentionSettings
from shadoweval.config.runtime import RuntimeSettings
from shadoweval.config.sampling import SamplingSettings

__all__ = [
    "OTHER_ENVIRONMENT_VARIABLES",
    "Settings",
    "StorePayloads",
    "get_settings",
    "unknown_environment_variables",
]


# pydantic collects fields walking the bases backwards: listed last-first, `model_fields`
# (and a repr) runs in pipeline order, database first.
class Settings(
    BaseSettings,
    DashboardSettings,
    RetentionSettings,
    AlertSettings,
    PoolGateSettings,
    AnalyticsSettings,
    ShadowJudgeSettings,
    SamplingSettings,
    ProviderSettings,
    IngestSettings,
    RuntimeSettings,
    DatabaseSettings,
):
    """Every knob of a deployment. Defaults run the demo on the embedded SQLite file."""

    model_config = SettingsConfigDict(env_prefix="SHADOWEVAL_", extra="ignore")


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
