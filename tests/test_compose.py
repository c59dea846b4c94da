"""docker-compose.yml read as data (no Docker here): where Kafka keeps its log, and the alerting path
from Prometheus to the shipped Alertmanager route."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def mounts(service: str) -> dict[str, str]:
    """A service's volumes as container path -> source (a named volume, or a path for a bind mount)."""
    found = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target, *_ = volume.split(":")
        found[target] = source
    return found


def test_kafka_keeps_its_log_on_a_named_volume() -> None:
    # Without log.dirs the apache/kafka image writes its log under /tmp in the container, and a
    # recreated container starts with no topics and no consumer-group offsets.
    env = SERVICES["kafka"]["environment"]
    log_dirs = env["KAFKA_LOG_DIRS"].split(",")
    assert env.get("KAFKA_METADATA_LOG_DIR", log_dirs[0]) in log_dirs  # KRaft metadata beside the log
    volumes = mounts("kafka")
    for log_dir in log_dirs:
        assert log_dir in volumes, f"{log_dir} (log.dirs) is not a volume of the kafka service: {volumes}"
        assert volumes[log_dir] in COMPOSE["volumes"], f"{log_dir} is mounted from {volumes[log_dir]}: not a volume"
    assert env["CLUSTER_ID"] and len(env["CLUSTER_ID"]) == 22  # the id the volume's log is formatted with


def test_prometheus_sends_its_alerts_to_the_shipped_route() -> None:
    alertmanager = SERVICES["alertmanager"]
    config = next(arg.split("=", 1)[1] for arg in alertmanager["command"] if arg.startswith("--config.file="))
    assert mounts("alertmanager")[config] == "./docker/alertmanager.yml"
    storage = next(arg.split("=", 1)[1] for arg in alertmanager["command"] if arg.startswith("--storage.path="))
    assert mounts("alertmanager")[storage] in COMPOSE["volumes"]
    assert not any(arg.startswith("--web.listen-address") for arg in alertmanager["command"])  # so it listens on 9093

    prometheus = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    targets = [t for am in prometheus["alerting"]["alertmanagers"] for c in am["static_configs"] for t in c["targets"]]
    assert targets == ["alertmanager:9093"]
    prometheus_mounts = mounts("prometheus")
    assert prometheus_mounts["/etc/prometheus/prometheus.yml"] == "./docker/prometheus.yml"
    assert prometheus_mounts["/etc/prometheus/alert-rules.yml"] == "./docker/alert-rules.yml"

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `bash tests/system-packages.sh` (make test runs it first)")
    checked = subprocess.run([promtool, "check", "config", str(ROOT / "docker" / "prometheus.yml")],
                             capture_output=True, text=True)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr  # the config and the rule file it names
