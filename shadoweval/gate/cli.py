"""`shadoweval gate`: run a release gate in this process and map its outcome to an exit code.

Exit codes: 0 passed, 100 failed (the candidate is, or may be, worse by more
than the margin), 1 error while running (database down, provider outage, no
replayable stored requests, too many items failing), 2 usage error (bad
arguments, an unknown router, a `--replace` model the router never chose, a
segment it has no traffic in, a model without a price). Usage errors are found
before anything is spent; error 1 covers what a rerun with the same arguments
could cure.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from sqlmodel import Session

from shadoweval.config import Settings
from shadoweval.exceptions import InvalidRequest, ShadowevalError
from shadoweval.gate.models import GateCreate, GateRun, GateStatus

EXIT_PASSED, EXIT_ERROR, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 100
EXIT_CODES = {GateStatus.PASSED: EXIT_PASSED, GateStatus.FAILED: EXIT_FAILED}


def _error(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)


def run_gate_command(
    *,
    settings: Settings,
    router: str,
    candidate: str,
    replace: str,
    sample: int,
    max_drop: float,
    segments: str | None,
    alpha: float | None,
    seed: int,
    max_cost_usd: float | None,
    report_path: Path | None,
    junit_path: Path | None,
    allow_underpowered: bool = False,
) -> int:
    """Create, run and report one gate; the process exit code."""
    from shadoweval.db import check_database_ready, create_db_engine
    from shadoweval.exceptions import DatabaseNotReady
    from shadoweval.gate import service
    from shadoweval.gate.create import check_power, estimate_cost
    from shadoweval.providers.registry import build_provider_registry, pricing_table

    try:
        spec = GateCreate(
            router=router,
            candidate=candidate,
            replace=replace,
            sample=sample,
            max_drop=max_drop,
            alpha=alpha,
            segments=[s for s in (segments or "").split(",") if s.strip()],
            seed=seed,
            max_cost_usd=max_cost_usd,
            allow_underpowered=allow_underpowered,
        )
    except ValidationError as error:
        for problem in error.errors():
            option = "--" + "-".join(str(part) for part in problem["loc"]).replace("_", "-")
            _error(f"{option}: {problem['msg']}")
        return EXIT_USAGE
    engine = create_db_engine(settings)
    try:
        check_database_ready(engine)
        pricing = pricing_table(settings)
        with Session(engine, expire_on_commit=False) as session:
            # Everything a person needs to decide is printed before the run exists, so a
            # refusal spends nothing and leaves no queued run behind.
            service.validate_request(session, spec, pricing.knows)
            power = check_power(session, spec, alpha if alpha is not None else settings.gate_alpha)
            typer.echo(power.describe(), err=True)
            if not power.can_pass:
                refusal = power.refusal("--sample", "--allow-underpowered")
                if not allow_underpowered:
                    _error(refusal)
                    return EXIT_USAGE
                typer.secho(f"warning: {refusal}; running anyway", fg="yellow", err=True)

            def price_of(model: str) -> tuple[float, float] | None:
                price = pricing.lookup(model)
                return None if price is None else (price.input, price.output)

            typer.echo(estimate_cost(session, settings, spec, price_of).describe(), err=True)
            run = service.create_gate(
                session=session,
                settings=settings,
                spec=spec,
                knows_model=pricing.knows,
                requested_by="cli",
            )
    except InvalidRequest as error:
        _error(error.message)
        return EXIT_USAGE
    except DatabaseNotReady as error:
        _error(error.message)
        return EXIT_ERROR
    assert run.id is not None
    typer.echo(f"gate run {run.id}: {candidate} replacing {replace} on {router}", err=True)
    owner = f"cli-{socket.gethostname()}-{os.getpid()}"

    async def main(bar: Any) -> GateRun:
        registry = build_provider_registry(settings)

        def progress(finished: int, total: int) -> None:
            if total and bar.length != total:
                bar.length = total
            bar.update(finished - bar.pos)

        try:
            assert run.id is not None
            return await service.run_gate(
                engine=engine,
                provider_for_model=registry.for_model,
                settings=settings,
                run_id=run.id,
                owner=owner,
                on_progress=progress,
            )
        finally:
            await registry.aclose()

    try:
        with typer.progressbar(
            length=spec.sample, label="replaying and judging", file=sys.stderr
        ) as bar:
            finished = asyncio.run(main(bar))
    except ShadowevalError as error:
        _error(f"gate run {run.id}: {error.message}")
        return EXIT_ERROR
    finally:
        engine.dispose()
    _write_outputs(finished, report_path, junit_path)
    return _summarise(finished)


def _write_outputs(run: GateRun, report_path: Path | None, junit_path: Path | None) -> None:
    for path, text in ((report_path, run.report_markdown), (junit_path, run.junit_xml)):
        if path is not None and text is not None:
            path.write_text(text, encoding="utf-8")
            typer.echo(f"wrote {path}", err=True)


def _summarise(run: GateRun) -> int:
    if run.status == GateStatus.ERROR:
        _error(f"gate run {run.id}: {run.error}")
        return EXIT_ERROR
    results = run.results or {}
    overall = results.get("overall", {})

    def number(key: str) -> str:
        value = overall.get(key)
        return "n/a" if value is None else f"{value:+.3f}" if key == "drop" else f"{value:.3f}"

    typer.echo(
        f"gate {run.status.upper()}: {run.candidate_model} replacing {run.replaced_model} on "
        f"{run.router}: overall drop {number('drop')}, upper bound {number('upper_bound')}, "
        f"margin {run.max_drop:.3f} (n={overall.get('n', 0)}, cost {run.cost_usd:.4f} USD)"
    )
    failing = results.get("failing_segments") or []
    if failing:
        typer.echo(f"failing segments: {', '.join(failing)}")
    return EXIT_CODES.get(GateStatus(run.status), EXIT_ERROR)
