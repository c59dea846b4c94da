"""A real Prometheus and Alertmanager over a live worker: the shipped rules, route and dashboard.

A worker (real broker, real redis-server) monitors two models: ``fraud``, with a mean shift injected
on f2 and f3 (two features in critical drift: a dataset drift, and a retraining request), and
``churn``, stable; both with late labels, and two bad messages between them; then a burst of single
events of a third model, ``ads``, faster than the worker reads them (lag). Prometheus
(Debian's ``prometheus``) scrapes it every second and evaluates the shipped ``docker/alert-rules.yml``;
Alertmanager (``prometheus-alertmanager``) runs the shipped ``docker/alertmanager.yml`` with only its
webhook URLs replaced by a receiver this test runs, and its ``group_wait`` and ``group_interval``
(30 s and 5 min there) set to 1 s. The test asserts what the receiver got, then evaluates every query
of the shipped Grafana dashboard against that Prometheus and asserts each returns data.

The binaries come from ``tests/system-packages.sh`` (``make test`` runs it first); a machine without
them fails here, saying so, never skips.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer

from streams.services import ServiceProcess, wait_for_port
from streams.settings import Settings
from streams.simulate import Drift, LabelDelay, LabelPlan, Traffic, send
from tests.integration.harness import WorkerProcess, alerts_of, isolated_settings, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docker" / "alert-rules.yml"
ROUTE = ROOT / "docker" / "alertmanager.yml"
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "driftstream.json"

EVENTS = 8000  # per model
DRIFT_AT = 4000  # fraud's f2 and f3 move by 1.5 sigmas from this event on
TRAFFIC = Traffic(models=("fraud", "churn"), numeric=4, categorical=1, seed=21,
                  drifts=(Drift("f2", start=DRIFT_AT, kind="mean_shift", magnitude=1.5, model="fraud"),
                          Drift("f3", start=DRIFT_AT, kind="mean_shift", magnitude=1.5, model="fraud")))  # fmt: skip
LABELS = LabelPlan(delay=LabelDelay("exp", 2.0))  # labels come about 2 s after their predictions
RATE = 4000.0  # events/s: the traffic spans several scrapes, so every rate() sees it grow
BURST = Traffic(models=("ads",), numeric=4, categorical=1, seed=22)  # one event a message, flat out
BURST_EVENTS = 20_000

# Grafana variables: "All" of a multi-value variable is its allValue; $__rate_interval is what Grafana
# computes for the compose datasource (timeInterval 15s) at the dashboard's default range:
# max(4 x 15 s, $__interval + 15 s) = 1m. Here, with 1 s scrapes, 1m holds 60 samples.
RATE_INTERVAL = "1m"


def tool(*names: str) -> str:
    """The path of the first of ``names`` installed; fails (never skips) when none is."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"{' or '.join(names)} is not installed: run `bash tests/system-packages.sh` (make test runs it "
                f"first), which installs Debian's prometheus and prometheus-alertmanager packages")  # fmt: skip


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class Prometheus(ServiceProcess):
    """Debian's prometheus with ``config`` (a dict), its storage in a temporary directory."""

    name = "prometheus"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = config

    def command(self) -> list[str]:
        self._dir = Path(tempfile.mkdtemp(prefix="driftstream-prometheus-"))
        config = self._dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config))
        check = subprocess.run([tool("promtool"), "check", "config", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, f"promtool check config:\n{check.stdout}{check.stderr}"
        return [tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}"]  # fmt: skip

    def start(self, timeout: float = 20.0) -> None:
        super().start(timeout)
        wait_until(self.ready, timeout, f"prometheus ready (log {self.log_path})")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return int(response.status) == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a GET of /api/v1/``path``; fails on an error answer, quoting it."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            body = get_json(url)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{path} {params}: HTTP {exc.code} {exc.read().decode(errors='replace')}") from exc
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", f"{expr}: a {data['resultType']}, not an instant vector"
        return list(data["result"])


class Alertmanager(ServiceProcess):
    """Debian's prometheus-alertmanager with ``config`` (YAML text), alone (no cluster), storage in a tmp dir."""

    name = "alertmanager"

    def __init__(self, config: str) -> None:
        super().__init__()
        self.config = config

    def command(self) -> list[str]:
        self._dir = Path(tempfile.mkdtemp(prefix="driftstream-alertmanager-"))
        config = self._dir / "alertmanager.yml"
        config.write_text(self.config)
        return [tool("prometheus-alertmanager", "alertmanager"), f"--config.file={config}",
                f"--storage.path={self._dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address="]  # fmt: skip


class Webhook:
    """An HTTP server on a free port keeping every JSON body POSTed to it, with its path."""

    def __init__(self) -> None:
        received: list[tuple[str, dict[str, Any]]] = []
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server signature
                pass

        self._received, self._lock = received, lock
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def posts(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return list(self._received)

    def alerts(self) -> list[tuple[str, dict[str, Any]]]:
        """(path, alert) for every alert of every notification so far."""
        return [(path, alert) for path, post in self.posts() for alert in post["alerts"]]

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def shipped_route(webhook: str) -> str:
    """docker/alertmanager.yml with its webhook URLs sent to ``webhook`` (each keeping its path) and its
    group_wait and group_interval set to 1 s (the route tree, receivers and inhibit rules as shipped)."""
    config = yaml.safe_load(ROUTE.read_text())
    paths = []
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            paths.append(urllib.parse.urlsplit(hook["url"]).path)
            hook["url"] = webhook + paths[-1]
    assert sorted(paths) == ["/driftstream/critical", "/driftstream/warning"], paths

    def quicken(route: dict[str, Any]) -> None:
        for timing in ("group_wait", "group_interval"):
            if timing in route:
                route[timing] = "1s"
        for child in route.get("routes", []):
            quicken(child)

    quicken(config["route"])
    return yaml.safe_dump(config)


def short(result: list[dict[str, Any]], limit: int = 4) -> str:
    """A query result in a line or so: ``{labels} value`` per series (job and instance left out)."""
    items = []
    for series in result[:limit]:
        labels = {k: v for k, v in series["metric"].items() if k not in ("job", "instance")}
        text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        value = float(series["value"][1])
        items.append(f"{{{text}}} {value:.4g}")
    more = f" ... ({len(result)} series)" if len(result) > limit else f" ({len(result)} series)"
    return "; ".join(items) + more


def substitute(expr: str, values: dict[str, str]) -> str:
    """``expr`` with Grafana's variables replaced; fails on one the dashboard test does not know."""
    for name in sorted(values, key=len, reverse=True):  # $feature before a hypothetical $f
        expr = expr.replace("$" + name, values[name])
    left = re.findall(r"\$\{?\w+", expr)
    assert not left, f"unknown Grafana variables {left} in {expr}"
    return expr


def series(result: list[dict[str, Any]], **labels: str) -> list[float]:
    """The values of the series of ``result`` carrying all of ``labels``."""
    return [float(s["value"][1]) for s in result if labels.items() <= s["metric"].items()]


def poll(what: str, get: Callable[[], list[Any]], timeout: float) -> list[Any]:
    """``get()`` until it is non-empty (the rules and rates need a few scrapes); fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        found = get()
        if found or time.monotonic() > deadline:
            assert found, f"no data for {what}"
            return found
        time.sleep(0.5)


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    return isolated_settings(kafka_bootstrap, redis_url, "prom", topic_partitions=2, reference_size=2000)


@pytest.fixture
def services(settings: Settings) -> Iterator[tuple[WorkerProcess, Prometheus, Webhook]]:
    """A worker, a webhook receiver, the shipped route in Alertmanager and Prometheus scraping the worker."""
    with ExitStack() as stack:
        webhook = stack.enter_context(Webhook())
        alertmanager = stack.enter_context(Alertmanager(shipped_route(webhook.url)))
        worker = WorkerProcess(settings)
        stack.callback(worker.stop)
        worker.wait_for(lambda: worker.samples() is not None, 60, "the worker's /metrics")
        prometheus = stack.enter_context(Prometheus({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],  # the shipped rules, unchanged
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager.port}"]}]}]},
            "scrape_configs": [{"job_name": "driftstream",  # as the rules and dashboard expect
                                "static_configs": [{"targets": [f"127.0.0.1:{worker.settings.web_port}"]}]}],
        }))  # fmt: skip
        wait_for_port(alertmanager.port, 10)
        poll("the worker scraped (up == 1)", lambda: prometheus.query('up{job="driftstream"} == 1'), 20)
        yield worker, prometheus, webhook


def bad_message(settings: Settings) -> None:
    producer = Producer(settings.confluent_config())
    producer.produce(settings.topic_events, key=b"fraud", value=b"\xff not json")
    producer.flush(10)


def test_shipped_files_are_valid() -> None:
    checked = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    print(checked.stdout.strip())
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout + checked.stderr
    checked = subprocess.run([tool("amtool"), "check-config", str(ROUTE)], capture_output=True, text=True)
    print(checked.stdout.strip())
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout + checked.stderr


@pytest.mark.timeout(180)
def test_drift_reaches_the_webhook_and_every_dashboard_query_has_data(
    settings: Settings, services: tuple[WorkerProcess, Prometheus, Webhook]
) -> None:
    worker, prometheus, webhook = services
    bad_message(settings)
    sent = send(settings, TRAFFIC, count=EVENTS, rate=RATE, batch_size=100, labels=LABELS, label_batch=100)
    bad_message(settings)  # a second one, seconds later: the rejection rate grows between scrapes
    assert sent.events == 2 * EVENTS and sent.labels == 2 * EVENTS
    assert send(settings, BURST, count=BURST_EVENTS).events == BURST_EVENTS
    worker.wait_for(lambda: worker.metric("driftstream_events_consumed_total") == 2 * EVENTS + BURST_EVENTS
                    and worker.metric("driftstream_events_rejected_total") == 2
                    and worker.metric("driftstream_labels_total", {"outcome": "joined"}) == 2 * EVENTS,
                    60, "every event, both bad messages and every label applied")  # fmt: skip

    # -- Alertmanager: the shipped rule fired on the drift and the shipped route delivered it --------
    def arrived(path: str, alertname: str, **labels: str) -> list[dict[str, Any]]:
        return [a for p, a in webhook.alerts() if p == path and a["status"] == "firing"
                and a["labels"]["alertname"] == alertname and labels.items() <= a["labels"].items()]  # fmt: skip

    critical = poll("DriftstreamDriftDetected (critical) for fraud at the webhook", lambda: arrived(
        "/driftstream/critical", "DriftstreamDriftDetected", model="fraud", type="data_drift", severity="critical",
    ), 45)  # fmt: skip
    feature = poll("DriftstreamFeatureDrift for fraud/f2 at the webhook", lambda: arrived(
        "/driftstream/warning", "DriftstreamFeatureDrift", model="fraud", feature="f2", severity="warning",
    ), 30)  # fmt: skip
    poll("DriftstreamFeatureDrift for fraud/f3 at the webhook", lambda: arrived(
        "/driftstream/warning", "DriftstreamFeatureDrift", model="fraud", feature="f3", severity="warning",
    ), 30)  # fmt: skip
    time.sleep(3)  # let any other notification of this drift land before judging what arrived
    for path, post in webhook.posts():
        print(f"webhook {path}: " + json.dumps({k: post[k] for k in ("status", "receiver", "groupLabels")}))
        for alert in post["alerts"]:
            print("   ", json.dumps({k: alert[k] for k in ("status", "labels", "annotations", "startsAt")}))
    # Why the rule has a second term: a counter series appears at its first increment, already at 1.
    print("increase() alone:", short(prometheus.query('increase(driftstream_alerts_total{status="firing"}[15m])')))
    everything = webhook.alerts()
    assert {a["labels"]["alertname"] for _, a in everything} == {"DriftstreamDriftDetected", "DriftstreamFeatureDrift"}
    assert {a["labels"]["model"] for _, a in everything} == {"fraud"}, "the stable model raised an alert"
    assert {a["labels"].get("feature") for _, a in everything if "feature" in a["labels"]} == {"f2", "f3"}
    assert all(a["labels"]["detector"] in ("psi", "jensen_shannon", "wasserstein", "ks", "chi_square")
               for _, a in everything if a["labels"]["alertname"] == "DriftstreamFeatureDrift")  # fmt: skip
    # Routed by severity: critical to the paging receiver, warnings to the other.
    assert all(path == f"/driftstream/{alert['labels']['severity']}" for path, alert in everything)
    receivers = {post["receiver"] for _, post in webhook.posts()}
    assert receivers <= {"driftstream-critical", "driftstream-warning"} and "driftstream-critical" in receivers
    alert = critical[0]
    assert alert["annotations"]["summary"] == "critical data_drift on model fraud"
    assert "runbook" in alert["annotations"] and "drift-alerts" in alert["annotations"]["description"]
    assert "f2" in feature[0]["annotations"]["summary"] and "(whole model)" in feature[0]["annotations"]["description"]
    for _, post in webhook.posts():  # grouped per rule and model, as the route says
        assert set(post["groupLabels"]) == {"alertname", "model"}, post["groupLabels"]

    # -- Grafana: every query of the shipped dashboard, against this Prometheus ------------------------
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    values = {name: v.get("allValue", ".*") for name, v in variables.items()} | {"__rate_interval": RATE_INTERVAL}
    options: dict[str, list[str]] = {}
    for name, variable in variables.items():
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert match, f"variable {name}: only label_values(selector, label) is known here, not {query!r}"
        selector, label = substitute(match[1], values), match[2]
        found = poll(f"variable {name}", lambda label=label, selector=selector: prometheus.api(
            f"label/{label}/values", **{"match[]": selector}), 20)  # fmt: skip
        options[name] = found
        print(f"variable ${name}: {query}\n    -> /api/v1/label/{label}/values?match[]={selector} -> {found}")
    assert {"fraud", "churn"} <= set(options["model"])
    assert {"f0", "f1", "f2", "f3", "c0"} <= set(options["feature"])
    assert "psi" in options["detector"]

    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for panel in dashboard["panels"]:
        repeat = panel.get("repeat")
        for each in options[repeat] if repeat else [None]:
            at = values | ({repeat: each} if repeat and each is not None else {})
            title = panel["title"].replace(f"${repeat}", str(each)) if repeat else panel["title"]
            for target in panel["targets"]:
                expr = substitute(target["expr"], at)
                result = poll(f"panel {title!r} {target['refId']}: {expr}", lambda e=expr: prometheus.query(e), 20)
                results[(title, target["refId"])] = result
                print(f"panel {title!r} {target['refId']}: {' '.join(expr.split())}\n    -> {short(result)}")

    # What the new panels show is what happened.
    assert series(results[("Worker health: scraped (up) and ready", "A")]) == [1.0]
    assert series(results[("Worker health: scraped (up) and ready", "B")]) == [1.0]
    partitions = results[("Partitions assigned and models tracked per worker", "A")]
    assert series(partitions) == [2.0]
    assert min(series(results[("Partitions assigned and models tracked per worker", "B")])) >= 2
    lag = results[("Consumer lag: messages not read yet", "A")]
    lag_expr = next(p for p in dashboard["panels"] if p["title"].startswith("Consumer lag"))["targets"][0]["expr"]
    assert {s["metric"]["topic"] for s in lag} == {settings.topic_events, settings.topic_labels}
    assert all(value >= 0 for value in series(lag))
    # The burst: the panel's query over the last minutes saw the events topic behind.
    behind = prometheus.query(f"max_over_time({lag_expr}[5m:1s])")
    print("lag panel's query, highest over the run:", short(behind))
    assert series(behind, topic=settings.topic_events)[0] > 1000
    assert max(series(results[("Statistic / its line, per feature", "A")], model="fraud", feature="f2")) >= 1
    assert max(series(results[("Statistic / its line, per feature", "A")], model="churn")) < 1
    for name in ("f2", "f3"):
        statistic, line = (results[(f"Statistic and its line: {name}", ref)] for ref in ("A", "B"))
        assert series(statistic, model="fraud", detector="psi")[0] >= series(line, model="fraud", detector="psi")[0]
    for title in ("Alert timeline by model / type / severity", "Alerts emitted (per 5m)"):
        timeline = results[(title, "A")]
        assert min(series(timeline, model="fraud", type="data_drift", status="firing")) > 0, title
        assert not series(timeline, model="churn"), title
    # Every alert of the last 5 minutes counted, a series' first included: the topic's own count.
    published = Counter((a["model"], a["type"], a["severity"], a["status"]) for a in alerts_of(settings))
    counted = {tuple(s["metric"][k] for k in ("model", "type", "severity", "status")): float(s["value"][1])
               for s in results[("Alerts emitted (per 5m)", "A")]}  # fmt: skip
    assert counted == {key: float(n) for key, n in published.items()}, (counted, published)
    assert all(0 < v < 60 for v in series(results[("Label lag p50 / p90 per model", "A")]))
    assert series(results[("Model quality per labeled window", "A")], model="churn", metric="accuracy")
    assert series(results[("Retraining requests", "A")]) == [1.0]  # fraud's dataset drift, published
    assert series(results[("Retraining requests", "A")], model="fraud", outcome="published") == [1.0]
