"""The FastAPI application: routers, error mapping, metrics, health."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SqlalchemyTimeoutError
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as AsgiScope

from shadoweval import __version__, exceptions
from shadoweval import openapi as api_document
from shadoweval.alerts import service as alerts_service
from shadoweval.alerts.delivery_router import router as alert_deliveries_router
from shadoweval.alerts.router import router as alerts_router
from shadoweval.analytics.router import router as analytics_router
from shadoweval.analytics.sessions_router import router as sessions_router
from shadoweval.analytics.thresholds_router import router as thresholds_router
from shadoweval.auth.middleware import RequestGuard
from shadoweval.auth.models import Scope
from shadoweval.auth.router import router as keys_router
from shadoweval.config import Settings, get_settings
from shadoweval.db import (
    check_database_ready,
    create_db_engine,
    database_error,
    database_readiness,
    driver_operational_errors,
)
from shadoweval.db import get_session as primary_session
from shadoweval.db_waits import statement_timeout_of
from shadoweval.deps import get_routed_session, require_scope
from shadoweval.feedback.router import router as feedback_router
from shadoweval.gate.create import UnderpoweredGate
from shadoweval.gate.router import router as gates_router
from shadoweval.gauges import DatabaseCollector, ReplicaLagCollector
from shadoweval.ingest.litellm_router import router as litellm_router
from shadoweval.ingest.models import DecisionIn
from shadoweval.ingest.otlp_router import router as otlp_router
from shadoweval.ingest.router import router as decisions_router
from shadoweval.metrics import ApiMetrics
from shadoweval.pool.router import router as pool_router
from shadoweval.sampling.service import SamplingPlan

log = logging.getLogger("shadoweval.api")

# The one place where domain errors become HTTP statuses.
ERROR_STATUS: dict[type[exceptions.ShadowevalError], int] = {
    exceptions.InvalidRequest: 400,
    UnderpoweredGate: 422,  # understood, but its sample cannot pass: the figures say why
    exceptions.AuthenticationFailed: 401,
    exceptions.PermissionDenied: 403,
    exceptions.NotFound: 404,
    exceptions.PayloadTooLarge: 413,
    exceptions.UnsupportedMediaType: 415,
    exceptions.DatabaseNotReady: 503,
    exceptions.InvalidConfiguration: 500,
    exceptions.Overloaded: 503,
    exceptions.StorageFull: 507,
}


def status_for(error: exceptions.ShadowevalError) -> int:
    for cls in type(error).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


def _error_body(error: exceptions.ShadowevalError) -> dict[str, Any]:
    return {"detail": error.message, "code": error.code, **error.context}


class RequestObserver:
    """Times every HTTP request into the latency histogram and logs it with its key prefix.

    Plain ASGI, not Starlette's BaseHTTPMiddleware: that ran each request in a task group
    whose cancellation left ~40 objects of cyclic garbage per request, and under ingest
    load the collector's passes over them stalled the event loop for 20–100 ms.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            elapsed = time.perf_counter() - started
            template = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.request_latency.labels(method, template, str(status)).observe(elapsed)
            log.info(
                "%s %s %s",
                method,
                scope["path"],
                status,
                extra={
                    "duration_ms": round(elapsed * 1000, 1),
                    # Set by authentication on request.state, which lives in the scope.
                    "key": scope.get("state", {}).get("key_prefix", "-"),
                },
            )


def create_app(
    settings: Settings | None = None,
    engine: Engine | None = None,
    read_engine: Engine | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    engine = engine or create_db_engine(settings)
    replica = settings.read_replica_settings()
    if read_engine is None and replica is not None:
        read_engine = create_db_engine(replica)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Refuse to serve on an unmigrated or unreachable database.
        revision = await run_in_threadpool(check_database_ready, engine)
        # A rule file that does not validate stops startup with its path and field errors.
        alerts_service.check_rules_file(settings)
        log.info(
            "api ready",
            extra={
                "database": engine.url.render_as_string(hide_password=True),
                "revision": revision,
            },
        )
        yield

    app = FastAPI(
        title="shadoweval",
        version=__version__,
        description="Shadow evaluation for LLM model routers. Every estimate carries an interval.",
        lifespan=lifespan,
        generate_unique_id_function=api_document.operation_id,
        # Served by api_document.install_docs with assets from the app, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    # Reads that may lag (deps.REPLICA_READ_ROUTES) go to the replica when one is set.
    app.state.read_engine = read_engine or engine
    collectors: list[Collector] = [
        DatabaseCollector(engine, skew_seconds=settings.decision_clock_skew_seconds)
    ]
    if read_engine is not None and read_engine is not engine:
        app.dependency_overrides[primary_session] = get_routed_session
        collectors.append(ReplicaLagCollector(read_engine))
    app.state.metrics = metrics = ApiMetrics(collectors)
    app.state.sampling_plan = SamplingPlan()
    # Bounded ingest concurrency: past it, clients are told to come back (503), not queued.
    app.state.ingest_slots = threading.BoundedSemaphore(settings.ingest_max_concurrent)

    @app.exception_handler(exceptions.ShadowevalError)
    async def domain_error(request: Request, error: exceptions.ShadowevalError) -> JSONResponse:
        code = status_for(error)
        if request.url.path == "/v1/decisions" and code in (400, 413, 415):
            metrics.record_request_rejected(error.code)
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
        if isinstance(error, exceptions.Overloaded):
            metrics.record_request_rejected(error.code)
            headers = {"Retry-After": str(error.retry_after_s)}
        return JSONResponse(_error_body(error), status_code=code, headers=headers)

    @app.exception_handler(OperationalError)
    @app.exception_handler(SqlalchemyTimeoutError)
    async def database_busy(request: Request, error: Exception) -> JSONResponse:
        # Lock timeouts, stalls and lost connections are transient: tell clients when to come
        # back; a full disk is not, and says so (db.database_error).
        log.warning("database error on %s: %s", request.url.path, str(error).splitlines()[0])
        return await domain_error(request, database_error(error, engine=engine))

    for driver_error in driver_operational_errors():
        app.add_exception_handler(driver_error, database_busy)

    @app.exception_handler(RequestValidationError)
    async def invalid_parameters(request: Request, error: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()
        ]
        return JSONResponse({"detail": detail, "code": "invalid_parameters"}, status_code=422)

    # Added first, so it runs inside the observer: refusals are timed and logged too.
    app.add_middleware(RequestGuard, on_database_error=database_busy)
    app.add_middleware(RequestObserver, metrics=metrics)
    app.include_router(decisions_router)
    app.include_router(litellm_router)
    app.include_router(otlp_router)
    app.include_router(keys_router)
    app.include_router(analytics_router)
    app.include_router(sessions_router)
    app.include_router(feedback_router)
    app.include_router(gates_router)
    app.include_router(pool_router)
    app.include_router(alert_deliveries_router)
    app.include_router(alerts_router)
    app.include_router(thresholds_router)
    _add_operational_routes(app, settings, engine, metrics)
    _document_decision_schema(app)
    api_document.install_docs(app)
    return app


def _add_operational_routes(
    app: FastAPI, settings: Settings, engine: Engine, metrics: ApiMetrics
) -> None:
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up. Async and database-free on purpose: it answers on the event
        loop even while every worker thread waits on a stalled database (a liveness probe
        must not restart pods for the database's sake)."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        """The database answers within its timeout, is migrated to the revision this code
        expects, and has room to write (507 on a full disk)."""
        # Its own thread, not the request threadpool, which a stall may have filled; and a
        # deadline of its own, so the probe answers even if that thread is still waiting.
        limit = (statement_timeout_of(engine) or settings.db_statement_timeout_seconds) + 1.0
        try:
            status, body = await asyncio.wait_for(
                asyncio.to_thread(database_readiness, engine), timeout=limit
            )
        except TimeoutError:
            status, body = (
                503,
                {
                    "status": "not ready",
                    "detail": f"database not answering within {limit - 1.0:g}s",
                    "code": exceptions.DatabaseStalled.code,
                },
            )
        return JSONResponse(body, status_code=status)

    metrics_dependencies = (
        [Depends(require_scope(Scope.READ))] if settings.metrics_require_key else []
    )

    @app.get("/metrics", tags=["operations"], dependencies=metrics_dependencies)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _document_decision_schema(app: FastAPI) -> None:
    """Put the decision schema in the OpenAPI document; the ingest route reads a raw body."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            decision_schema = DecisionIn.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(decision_schema.pop("$defs", {}))
            components["Decision"] = decision_schema
            app.openapi_schema = api_document.complete(app, schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
