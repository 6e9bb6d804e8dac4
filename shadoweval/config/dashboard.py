"""The dashboard (`shadoweval dashboard` reads the HTTP API only, never the database)."""

from pydantic import BaseModel, Field


class DashboardSettings(BaseModel):
    """Where the dashboard serves and which API it reads."""

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
