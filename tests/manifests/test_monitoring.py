"""Monitoring: the alert rules unit-tested with promtool, and every metric they and the dashboard name
checked against what a running ``token-projector serve`` really exports."""

import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.manifests.chart import RULES, helm, one, rule_spec, template, values_file
from tests.manifests.served import make_dev_certs, serving
from tests.tools import REPO, require
from webhook.core.wire import Json
from webhook.server.metrics import LATENCY_BUCKETS

MONITORING = REPO / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RUNBOOK = REPO / "docs" / "monitoring.md"
EXTERNAL_METRICS = {
    "up": "Prometheus, one series per scrape target",
    "kube_deployment_status_replicas_available": "kube-state-metrics",
    "kube_deployment_spec_replicas": "kube-state-metrics",
    "apiserver_admission_webhook_rejection_count": "kube-apiserver (tests/e2e/test_chart_dry_run.py finds it there)",
}
"""Metrics the rules and the dashboard use that token-projector does not export, and who does."""
TARGET_LABELS = {"job", "namespace", "pod", "instance", "service", "container", "endpoint"}
"""Labels Prometheus (the Operator's scrape configuration) adds to every scraped series."""

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_:])[0-9][A-Za-z0-9_.]*")
"""Numbers and durations (0.99, 86400, 10m after offset)."""
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless"}
_GRAFANA_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\)$")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords and label names left out)."""
    expr = _STRING.sub('""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = _GROUPING.sub(" ", expr)
    expr = _NUMBER.sub(" ", expr)
    names = set()
    for match in _NAME.finditer(expr):
        following = expr[match.end() :].lstrip()
        if following.startswith("(") or match.group() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def label_names(expr: str) -> dict[str, set[str]]:
    """The label names each metric selector of ``expr`` filters on."""
    found: dict[str, set[str]] = {}
    for metric, matchers in _SELECTOR.findall(_STRING.sub('""', expr)):
        found.setdefault(metric, set()).update(_MATCHER.findall(matchers))
    return found


def alert_rules() -> list[Json]:
    return [rule for group in rule_spec()["groups"] for rule in group["rules"]]


def dashboard_expressions() -> dict[str, str]:
    """Every PromQL expression of the dashboard, keyed by where it is (panel title or variable)."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            match = _GRAFANA_LABEL_VALUES.match(query)
            found[f"variable {variable['name']}"] = match.group(1) if match else query
    return found


def every_expression() -> dict[str, str]:
    return {**{f"alert {rule['alert']}": rule["expr"] for rule in alert_rules()}, **dashboard_expressions()}


def series_names(family: Metric) -> set[str]:
    """The series names a family is exposed as, whether or not it has samples yet (a labelled counter)."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "summary": ["", "_count", "_sum"]}
    return {family.name + suffix for suffix in suffixes.get(family.type, [""])}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Each series name a running server exports, with the label names seen on its samples."""
    workdir = tmp_path_factory.mktemp("served")
    certs = make_dev_certs(workdir / "certs")
    with serving(workdir, cert_file=certs / "tls.crt", key_file=certs / "tls.key") as server:
        assert server.review(ca_file=certs / "ca.crt") == 200  # so that the request series exist
        status, text = server.get("/metrics")
    assert status == 200
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for name in series_names(family):
            names.setdefault(name, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def test_promtool_finds_the_alert_rules_valid(tmp_path: Path) -> None:
    promtool = require("promtool", hint="run `make tools` (builds promtool from the Prometheus Go module)")
    rules = write_rule_file(tmp_path)
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def write_rule_file(folder: Path) -> Path:
    """The rules as a Prometheus rule file (the PrometheusRule's spec), where the promtool tests expect it."""
    path = folder / "token-projector.rules.yaml"
    path.write_text(yaml.safe_dump(rule_spec(), sort_keys=False))
    return path


def test_each_alert_fires_on_series_that_should_fire_it_and_stays_silent_on_healthy_ones(tmp_path: Path) -> None:
    promtool = require("promtool", hint="run `make tools` (builds promtool from the Prometheus Go module)")
    write_rule_file(tmp_path)
    tests = [shutil.copy(path, tmp_path) for path in sorted(MONITORING.glob("*.test.yaml"))]
    assert tests
    result = subprocess.run(
        [promtool, "test", "rules", *tests], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in MONITORING.glob("*.test.yaml"):
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (firing if case["exp_alerts"] else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never shown to fire"
    assert names - silent == set(), "alerts never shown to stay silent"


def runbook_anchors() -> set[str]:
    headings = re.findall(r"^#+\s+(.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_alert_says_what_breaks_and_what_to_do_and_links_its_runbook_section() -> None:
    anchors = runbook_anchors()
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        description = rule["annotations"]["description"]
        anchor = rule["alert"].lower()
        assert f"docs/monitoring.md#{anchor}" in description, rule["alert"]
        assert anchor in anchors, f"docs/monitoring.md has no section {rule['alert']}"


def test_every_metric_the_rules_and_the_dashboard_name_is_exported_by_the_running_server(
    exported: dict[str, set[str]],
) -> None:
    unknown = {
        where: sorted(metric_names(expr) - exported.keys() - EXTERNAL_METRICS.keys())
        for where, expr in every_expression().items()
    }
    assert {where: names for where, names in unknown.items() if names} == {}
    assert not EXTERNAL_METRICS.keys() & exported.keys(), "an external metric is ours after all: drop it from the list"


def test_every_label_the_rules_and_the_dashboard_filter_on_is_on_the_servers_samples(
    exported: dict[str, set[str]],
) -> None:
    for where, expr in every_expression().items():
        for metric, labels in label_names(expr).items():
            if metric in EXTERNAL_METRICS or not exported.get(metric):
                continue  # no samples yet (a counter nothing has counted): its labels are not known
            assert labels - exported[metric] - TARGET_LABELS == set(), f"{where}: {metric}"


def test_the_slow_review_alert_counts_above_the_highest_bucket_the_server_exports(
    exported: dict[str, set[str]],
) -> None:
    expr = next(rule["expr"] for rule in alert_rules() if rule["alert"] == "TokenProjectorSlowReviews")
    assert f'le="{LATENCY_BUCKETS[-1]}"' in expr
    assert "le" in exported["token_projector_webhook_latency_seconds_bucket"]


def test_the_rules_find_the_webhook_by_the_job_both_service_monitors_name_it() -> None:
    for rule in alert_rules():
        for metric in metric_names(rule["expr"]):
            if metric.startswith("token_projector_") or metric == "up":
                assert f'{metric}{{job="token-projector"' in re.sub(r"\s+", " ", rule["expr"]), rule["alert"]


def test_the_dashboard_shows_every_metric_the_server_exports(exported: dict[str, set[str]]) -> None:
    shown = set().union(*(metric_names(expr) for expr in dashboard_expressions().values()))
    families = {
        "token_projector_webhook_requests_total",
        "token_projector_webhook_latency_seconds_bucket",
        "token_projector_webhook_requests_in_flight",
        "token_projector_tls_certificate_not_after_timestamp_seconds",
        "token_projector_tls_certificate_reloads_total",
    }
    assert families <= exported.keys()
    assert families <= shown
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "token-projector"
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {
        "Reviews by outcome",
        "Latency percentiles",
        "Reviews in flight",
        "Serving certificate expires in",
    } <= titles


@pytest.fixture(scope="module")
def repo_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """manifests/ and charts/ side by side, as in a clone (the component includes the chart's rule file)."""
    tree = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "manifests", tree / "manifests", ignore=shutil.ignore_patterns("*.crt", "*.key"))
    shutil.copytree(REPO / "charts", tree / "charts")
    return tree


def kustomize_build(tree: Path, *components: str) -> list[Json]:
    kustomize = require("kustomize", hint="run `make tools` (builds it with Go)")
    overlay = tree / "manifests" / "test-overlays" / "-".join(components)
    overlay.mkdir(parents=True, exist_ok=True)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["../../overlays/cert-manager"],
                "components": [f"../../components/{c}" for c in components],
            }
        )
    )
    result = subprocess.run([kustomize, "build", str(overlay)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def assert_scrapes_the_metrics_port(monitor: Json, service: Json) -> None:
    """The ServiceMonitor selects the Service, on its plain-HTTP port, with the job the rules expect."""
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    [endpoint] = monitor["spec"]["endpoints"]
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    assert (port["port"], endpoint["path"], endpoint["scheme"]) == (8080, "/metrics", "http")
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "token-projector"


def test_the_kustomize_component_scrapes_the_metrics_port_and_installs_the_one_rule_file(repo_tree: Path) -> None:
    objects = kustomize_build(repo_tree, "monitoring")
    assert_scrapes_the_metrics_port(one(objects, "ServiceMonitor"), one(objects, "Service"))
    rule = one(objects, "PrometheusRule")
    assert rule["metadata"]["namespace"] == "token-projector"
    assert rule["spec"] == rule_spec()


def test_the_charts_monitoring_is_off_by_default_and_installs_the_same_rule_file_when_on() -> None:
    assert not [o for o in template() if o["kind"] in ("ServiceMonitor", "PrometheusRule")]
    objects = template(*values_file("monitoring"), release="prod", namespace="platform")
    monitor = one(objects, "ServiceMonitor")
    assert_scrapes_the_metrics_port(monitor, one(objects, "Service"))
    assert monitor["spec"]["endpoints"][0]["interval"] == "15s"
    rule = one(objects, "PrometheusRule")
    assert rule["spec"] == rule_spec()
    for obj in (monitor, rule):
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_the_packaged_chart_carries_the_rule_file_but_not_its_kustomization(tmp_path: Path) -> None:
    result = helm("package", str(RULES.parents[2]), "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    [package] = tmp_path.glob("token-projector-*.tgz")
    with tarfile.open(package) as archive:
        names = set(archive.getnames())
    assert "token-projector/files/prometheus-rules/prometheusrule.yaml" in names
    assert "token-projector/files/prometheus-rules/kustomization.yaml" not in names


def test_the_metric_name_check_itself_sees_names_and_skips_functions_labels_and_keywords() -> None:
    expr = (
        'sum by (namespace, le) (rate(a_total{job="x", le="2.5"}[5m] offset 1h)) > 4 * on (pod) b '
        'unless absent(c{d="e}"}) and histogram_quantile(0.9, d_bucket) - time()'
    )
    assert metric_names(expr) == {"a_total", "b", "c", "d_bucket"}
    assert label_names(expr) == {"a_total": {"job", "le"}, "c": {"d"}}
