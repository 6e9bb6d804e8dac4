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
    assert set(services) == {"postgres", "migrate", "api", "proxy", "worker", "dashboard"}
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
