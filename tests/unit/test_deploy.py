"""deploy/: the compose file and Kubernetes manifests are valid, run real CLI commands, and
env.example lists every setting with its default."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml
from sqlalchemy.engine import make_url

from shadoweval.cli import app
from shadoweval.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.30.0"


def _manifests() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        documents.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return documents


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


def _check_cli_command(argv: list[str]) -> None:
    """`argv` parses as a command of our CLI (options included), without running it."""
    assert argv[0] == "shadoweval", argv
    # Typer ships its own copy of click, so groups are recognised by behaviour, not class.
    command: Any = typer.main.get_command(app)
    args = argv[1:]
    while hasattr(command, "list_commands"):
        assert args, f"{argv}: a group needs a subcommand"
        sub = command.get_command(
            command.make_context("shadoweval", [], resilient_parsing=True), args[0]
        )
        assert sub is not None, f"{argv}: unknown command {args[0]}"
        command, args = sub, args[1:]
    # Parses every option and argument as the real invocation would, without running it.
    command.make_context(command.name or "", list(args))


@pytest.mark.parametrize(
    "argv",
    [["shadoweval", "no-such-command"], ["shadoweval", "api", "--no-such-option"], ["shadoweval"]],
)
def test_the_command_check_rejects_what_the_cli_would(argv: list[str]) -> None:
    with pytest.raises(Exception, match=r"no-such|subcommand") as raised:
        _check_cli_command(argv)
    assert type(raised.value).__name__ in ("AssertionError", "NoSuchOption")


def test_every_manifest_is_a_valid_kubernetes_object() -> None:
    documents = _manifests()
    kinds = sorted({d["kind"] for d in documents})
    assert kinds == ["ConfigMap", "Deployment", "Job", "Secret", "Service"]
    for document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_api_probes_use_healthz_and_readyz() -> None:
    deployments = {d["metadata"]["name"]: d for d in _manifests() if d["kind"] == "Deployment"}
    assert set(deployments) == {"shadoweval-api", "shadoweval-worker", "shadoweval-dashboard"}
    api = deployments["shadoweval-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    dashboard = deployments["shadoweval-dashboard"]["spec"]["template"]["spec"]["containers"][0]
    assert dashboard["readinessProbe"]["httpGet"]["path"] == "/_stcore/health"


def test_services_select_pods_that_exist() -> None:
    documents = _manifests()
    pod_labels = [
        d["spec"]["template"]["metadata"]["labels"] for d in documents if d["kind"] == "Deployment"
    ]
    for service in (d for d in documents if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), service


def test_every_command_the_manifests_run_exists_in_the_cli() -> None:
    commands = [
        container["args"]
        for d in _manifests()
        if d["kind"] in ("Deployment", "Job")
        for container in d["spec"]["template"]["spec"]["containers"]
    ]
    assert len(commands) == 4
    for argv in commands:
        _check_cli_command(argv)


def test_compose_has_the_documented_topology_and_real_commands() -> None:
    services = _compose()["services"]
    assert set(services) == {
        "postgres",
        "postgres-replica",
        "migrate",
        "api",
        "proxy",
        "worker",
        "dashboard",
    }
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["migrate"]["command"] == ["shadoweval", "db", "upgrade"]
    assert services["api"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    for name in ("migrate", "api", "worker", "dashboard"):
        _check_cli_command(services[name]["command"])
    # The Dockerfile's default command too.
    cmd = re.search(r"^CMD (\[.*\])$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    assert cmd
    _check_cli_command(json.loads(cmd.group(1)))


def _mounted(service: dict[str, Any], target: str) -> str:
    """The text of the deploy/ file a compose service mounts at `target`."""
    for volume in service["volumes"]:
        source, mounted_at, *_ = volume.split(":")
        if mounted_at == target:
            return (DEPLOY / source.removeprefix("./")).read_text()
    raise AssertionError(f"nothing mounted at {target}")


def test_compose_streams_a_standby_that_serves_the_read_routes() -> None:
    services = _compose()["services"]
    primary_db, replica = services["postgres"], services["postgres-replica"]
    assert replica["image"] == primary_db["image"]
    assert replica["volumes"][0].split(":")[0] != primary_db["volumes"][0].split(":")[0]
    password = primary_db["environment"]["REPLICATION_PASSWORD"]
    assert replica["environment"]["REPLICATION_PASSWORD"] == password
    # The primary's first start creates the role and slot the standby clones and streams with.
    init = _mounted(primary_db, "/docker-entrypoint-initdb.d/10-replication.sh")
    assert "CREATE ROLE replicator WITH REPLICATION LOGIN" in init
    assert "pg_create_physical_replication_slot('shadoweval_replica')" in init
    assert "host replication replicator all scram-sha-256" in init
    assert replica["command"][0] == "sh"
    start = _mounted(replica, replica["command"][1])
    for option in (
        "--host=postgres ",
        "--username=replicator",
        "--slot=shadoweval_replica",
        "--write-recovery-conf",
        "--wal-method=stream",
    ):
        assert option in start, option
    assert "exec postgres -c hot_standby=on" in start
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"

    # The API replicas (which the dashboard reads through the proxy) read the standby: the
    # primary's database and user on the replica's host. Workers and the migration never do.
    primary = _compose()["x-shadoweval"]["environment"]["SHADOWEVAL_DATABASE_URL"]
    api = services["api"]["environment"]
    assert api["SHADOWEVAL_DATABASE_URL"] == primary
    read_url = make_url(api["SHADOWEVAL_DATABASE_READ_URL"])
    assert read_url.host == "postgres-replica"
    assert read_url._replace(host="postgres") == make_url(primary)
    for name in ("migrate", "worker", "dashboard"):
        assert "SHADOWEVAL_DATABASE_READ_URL" not in (services[name].get("environment") or {})
    # A standby that is down must not keep the API (and so ingest) from starting.
    assert services["api"]["depends_on"]["postgres-replica"]["condition"] == "service_started"
    read = Settings(
        database_url=primary, database_read_url=api["SHADOWEVAL_DATABASE_READ_URL"]
    ).read_replica_settings()
    assert read is not None
    assert make_url(read.resolved_database_url).host == "postgres-replica"


def test_the_compose_workers_run_the_partition_jobs() -> None:
    """Partitions are created ahead, and expired days dropped, by the workers' leader: the
    compose workers run `shadoweval worker`, whose schedule holds both jobs, leader-only."""
    from shadoweval.jobs.scheduler import PERIODIC_JOBS

    assert _compose()["services"]["worker"]["command"] == ["shadoweval", "worker"]
    jobs = {job.name: job for job in PERIODIC_JOBS}
    for name in ("create_partitions", "drop_expired_days"):
        assert jobs[name].leader_only, name


def test_the_proxy_spreads_requests_over_the_api_service() -> None:
    services = _compose()["services"]
    volume = services["proxy"]["volumes"][0]
    config = (DEPLOY / volume.split(":")[0].removeprefix("./")).read_text()
    assert "server api:8000" in config
    assert "proxy_pass http://shadoweval_api" in config
    # The dashboard reaches the API through the proxy, not one replica.
    assert services["dashboard"]["environment"]["SHADOWEVAL_DASHBOARD_API_URL"] == (
        "http://proxy:8000"
    )


def test_compose_environment_names_are_settings() -> None:
    fields = {f"SHADOWEVAL_{name.upper()}" for name in Settings.model_fields}
    compose = _compose()
    names = set(compose["x-shadoweval"]["environment"])
    for service in compose["services"].values():
        names |= {n for n in (service.get("environment") or {}) if n.startswith("SHADOWEVAL_")}
    for document in _manifests():
        if document["kind"] in ("ConfigMap", "Secret"):
            names |= set(document.get("data") or document.get("stringData") or {})
    assert names - fields == set()


def _example_lines() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (DEPLOY / "env.example").read_text().splitlines():
        match = re.match(r"^# (SHADOWEVAL_[A-Z0-9_]+)=(.*)$", line)
        if match:
            assert match.group(1) not in found, f"{match.group(1)} listed twice"
            found[match.group(1)] = match.group(2)
    return found


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    fields = {f"SHADOWEVAL_{name.upper()}" for name in Settings.model_fields}
    listed = set(_example_lines())
    assert sorted(fields - listed) == [], "settings missing from deploy/env.example"
    assert sorted(listed - fields) == [], "deploy/env.example lists unknown settings"


SCALAR_DEFAULTS = [
    name
    for name, field in Settings.model_fields.items()
    if isinstance(field.default, bool | int | float | str)
]


@pytest.mark.parametrize("name", SCALAR_DEFAULTS)
def test_env_example_shows_each_scalar_default(name: str) -> None:
    default = Settings.model_fields[name].default
    shown = _example_lines()[f"SHADOWEVAL_{name.upper()}"]
    if isinstance(default, bool):
        assert shown.lower() == str(default).lower()
    elif isinstance(default, int | float):
        assert float(shown) == float(default)
    else:
        assert shown == default
