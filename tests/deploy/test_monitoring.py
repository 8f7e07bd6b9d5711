"""The alert rules and the Grafana dashboard: checked and unit-tested by promtool, and every
metric and label they read is one a running gateway exports."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from archive.metrics import ARCHIVE_OPERATIONS, SCHEDULER_LAST_SUCCESS
from llm_backend.metrics import CIRCUIT_BREAKER
from sessions_app.metrics import BACKEND_ERRORS
from tests.deploy.manifests import DEPLOY, tool
from tests.deploy.metric_names import exported, label_names, labels_grouped, labels_matched, metrics_in
from tests.e2e.conftest import Gateway

ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "gateway.json"
INSTALL = "make deploy-tools"
# What Prometheus adds to every series it scrapes (deploy/README.md, Monitoring).
TARGET_LABELS = {"instance", "job", "pod"}
# The alerts the operator must be woken for (issue 15), each by name.
PAGES = {
    "GatewayHighErrorRate",
    "ModelServerBreakerOpen",
    "SchedulerNotArchiving",
    "SessionsOverdueForArchive",
    "RedisUnavailable",
    "StreamCapReached",
}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool", INSTALL), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    exprs += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_promtool_accepts_the_rules() -> None:
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


def test_the_rules_unit_tests_pass() -> None:
    tested = promtool("test", "rules", str(ALERT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_is_unit_tested_firing_and_the_pages_are_all_there() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert {rule["alert"] for rule in alert_rules() if rule["labels"]["severity"] == "page"} >= PAGES
    assert fired == names


@pytest.mark.parametrize(
    ("mutation", "why"),
    [
        (("gateway_active_store_up", "gateway_redis_up"), "a metric renamed"),
        (('outcome="too_many_streams"', 'outcome="stream_cap"'), "a label value the gateway never sets"),
        (("> 0.05", "> 0.5"), "a threshold moved"),
    ],
)
def test_a_broken_rule_fails_its_unit_tests(tmp_path: Path, mutation: tuple[str, str], why: str) -> None:
    old, new = mutation
    text = ALERTS.read_text()
    assert old in text
    (tmp_path / "alerts.yml").write_text(text.replace(old, new))
    shutil.copy(ALERT_TESTS, tmp_path / "alerts.test.yml")

    tested = promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert tested.returncode != 0, why


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
    # What an operator looks for, each in at least one panel.
    queried = {m for expr in dashboard_exprs() for m in metrics_in(expr)}
    for wanted in (
        "gateway_turns_total",
        "gateway_http_request_duration_seconds_bucket",
        "gateway_time_to_first_delta_seconds_bucket",
        "gateway_circuit_breaker_state",
        "gateway_open_streams",
        "gateway_active_store_up",
        "gateway_archive_operations_total",
        "gateway_scheduler_last_success_timestamp_seconds",
        "gateway_sessions_overdue_for_archive",
    ):
        assert wanted in queried, wanted


def test_the_expression_parser_finds_names_and_labels() -> None:
    """The check below relies on it: a metric inside a function, its matchers, its grouping."""
    expr = 'sum by (outcome, mode) (rate(gateway_turns_total{instance=~"$i", outcome!="ok"}[5m])) / up'
    assert metrics_in(expr) == {"gateway_turns_total", "up"}
    assert labels_matched(expr) == {"gateway_turns_total": {"instance", "outcome"}}
    assert labels_grouped(expr) == {"outcome", "mode"}


def test_every_metric_and_label_queried_is_one_the_running_gateway_exports(gateways: list[Gateway]) -> None:
    """The names come from a real gateway's /metrics (after a turn, so the labelled series
    show their labels), not from a list kept by hand."""
    gateway = gateways[0]
    client = gateway.client(gateway.dev_token())
    session = client.post("/api/v1/sessions").json()["id"]
    assert client.post(f"/api/v1/sessions/{session}/messages", json={"content": "hello"}).status_code == 200
    text = httpx.get(f"{gateway.base_url}/metrics", timeout=10).text

    exprs = {f"alert {rule['alert']}": rule["expr"] for rule in alert_rules()}
    exprs |= {f"dashboard #{i}": expr for i, expr in enumerate(dashboard_exprs())}
    assert problems_in(exprs, text) == []

    # The same reading finds a misspelt metric, a label the metric lacks, a grouping by nothing.
    broken = {
        "misspelt": "max(gateway_streams_open)",
        "wrong label": 'gateway_scheduler_last_success_timestamp_seconds{pass="archive"}',
        "wrong grouping": "sum by (tenant) (rate(gateway_turns_total[5m]))",
    }
    assert problems_in(broken, text) == [
        "misspelt: gateway_streams_open is not exported",
        "wrong label: gateway_scheduler_last_success_timestamp_seconds has no label pass",
        "wrong grouping: no metric has a label tenant",
    ]


def problems_in(exprs: dict[str, str], text: str) -> list[str]:
    """What in `exprs` reads a metric or label that the /metrics `text` does not have."""
    names = exported(text) | {"up": "up"}
    labels = label_names(text)
    # Labels of series that a quiet test gateway has not produced yet (no breaker tripped, no
    # scheduler pass, no archive operation, no model server error): from the metrics' definitions.
    for metric in (CIRCUIT_BREAKER, SCHEDULER_LAST_SUCCESS, ARCHIVE_OPERATIONS, BACKEND_ERRORS):
        family = metric._name + ("_total" if metric._type == "counter" else "")
        labels.setdefault(family, set()).update(metric._labelnames)
    known_labels = set().union(*labels.values()) | TARGET_LABELS | {"le"}
    problems = []
    for where, expr in exprs.items():
        used = metrics_in(expr)
        if not used:
            problems.append(f"{where}: reads no gateway metric")
        problems += [f"{where}: {m} is not exported" for m in sorted(used - set(names))]
        for metric, matched in labels_matched(expr).items():
            allowed = labels.get(names.get(metric, metric), set()) | TARGET_LABELS
            if metric.endswith("_bucket"):
                allowed |= {"le"}
            problems += [f"{where}: {metric} has no label {label}" for label in sorted(matched - allowed)]
        problems += [f"{where}: no metric has a label {label}" for label in sorted(labels_grouped(expr) - known_labels)]
    return problems
