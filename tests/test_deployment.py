"""The deployment files, checked without a cluster.

``kubectl kustomize k8s/`` renders the manifests; every rendered object must pass its schema: the
core Kubernetes ones those bundled by ``kubernetes-validate`` (strict: unknown fields fail, as
``kubectl apply`` refuses them), the KEDA ones the openAPIV3Schema of KEDA's own CRDs, vendored
in tests/fixtures/keda/ with the kafka scaler's parameters. Then what no schema knows: the
autoscaler fits the worker (its consumer group, topics, partitions, credentials), every
environment variable set by the Dockerfile, k8s/ and docker-compose.yml is a setting the worker
reads, the probes split liveness from readiness, and the memory limit fits the documented peak.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from faust.types.settings import Settings as FaustSettings

from streams.app import Worker
from streams.settings import Settings
from streams.state import MemoryStateStore

ROOT = Path(__file__).resolve().parent.parent
KEDA = Path(__file__).resolve().parent / "fixtures" / "keda"
# The oldest Kubernetes minor the manifests are checked against, and the newest bundled.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
PREFIX = "DRIFTSTREAM_"
# Every variable Faust reads for itself (APP_DATADIR, WEB_PORT, BROKER_URL...): Faust takes
# them over what the worker passes, so none may be set beside the worker's settings.
FAUST_VARIABLES = frozenset(p.env_name for p in FaustSettings.SETTINGS.values() if p.env_name)
HEADROOM = 1.25  # the memory limit over the documented peak, at least

Object = dict[str, Any]


# -- rendering -----------------------------------------------------------------------------------


def render(directory: Path) -> list[Object]:
    """``kubectl kustomize DIRECTORY``, parsed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: `bash tests/system-packages.sh` installs Debian's kubernetes-client "
                    "(make test runs it first)")  # fmt: skip
    done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@cache
def _rendered() -> tuple[Object, ...]:
    return tuple(render(ROOT / "k8s"))


@pytest.fixture
def rendered() -> list[Object]:
    """The rendered k8s/ objects (a fresh copy: tests may change theirs)."""
    return copy.deepcopy(list(_rendered()))


def the(objects: list[Object], kind: str, name: str | None = None) -> Object:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''} in the rendered k8s/, found {len(found)}"
    return found[0]


def worker_container(objects: list[Object]) -> Object:
    containers = the(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    (container,) = (c for c in containers if c["name"] == "worker")
    return container


def container_environment(objects: list[Object]) -> dict[str, str]:
    """What the worker container's environment holds: its envFrom ConfigMaps and Secrets, then its env."""
    container = worker_container(objects)
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment |= the(objects, "ConfigMap", source["configMapRef"]["name"]).get("data", {})
        if "secretRef" in source:
            environment |= the(objects, "Secret", source["secretRef"]["name"]).get("stringData", {})
    environment |= {v["name"]: v["value"] for v in container.get("env", []) if "value" in v}
    return environment


def clear_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DRIFTSTREAM_* or Faust variable of this process reaches the settings or the app a test builds."""
    for name in list(os.environ):
        if name.startswith(PREFIX) or name in FAUST_VARIABLES:
            monkeypatch.delenv(name)


def worker_settings(objects: list[Object], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a worker pod reads from its rendered environment."""
    clear_environment(monkeypatch)
    for name, value in container_environment(objects).items():
        monkeypatch.setenv(name, value)
    return Settings()


# -- schemas -------------------------------------------------------------------------------------


def _closed(schema: Object) -> Object:
    """A CRD's structural schema as JSON Schema: unknown fields fail (the API server's strict field
    validation, kubectl's default), int-or-string and nullable spelled out."""
    out = dict(schema)
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out:
        out["properties"] = {name: _closed(sub) for name, sub in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _closed(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = _closed(out["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [_closed(sub) for sub in out[key]]
    return out


def _cel_rules(schema: Object, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str, str]]:
    """Every x-kubernetes-validations rule of a schema: (path of properties, rule, message)."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule["rule"], rule.get("message", rule["rule"])
    for name, sub in schema.get("properties", {}).items():
        yield from _cel_rules(sub, (*path, name))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            assert not list(_cel_rules(schema[key])), f"a CEL rule under {key} at {path}: mirror it here first"


# The CEL rules of the vendored schemas, in Python: a rule without its mirror fails the test.
CEL_MIRRORS: dict[str, Callable[[Object], bool]] = {
    "!has(self.minReplicaCount) || self.minReplicaCount <= (has(self.maxReplicaCount) ? self.maxReplicaCount : 100)":
        lambda spec: "minReplicaCount" not in spec or spec["minReplicaCount"] <= spec.get("maxReplicaCount", 100),
}  # fmt: skip


class CustomResource:
    """A KEDA kind, checked as the API server would check it with KEDA's CRD installed."""

    def __init__(self, path: Path) -> None:
        self.source = path.read_text()
        self.schema = yaml.safe_load(self.source)
        self.rules = list(_cel_rules(self.schema))
        missing = [rule for _, rule, _ in self.rules if rule not in CEL_MIRRORS]
        assert not missing, f"{path.name}: CEL rules without a Python mirror in CEL_MIRRORS: {missing}"
        closed = _closed(self.schema)
        jsonschema.Draft7Validator.check_schema(closed)
        self.validator = jsonschema.Draft7Validator(closed)

    def problems(self, obj: Object) -> list[str]:
        errors = self.validator.iter_errors(obj)
        found = [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]
        for path, rule, message in [] if found else self.rules:  # the API server runs CEL on valid types only
            node: Any = obj
            for name in path:
                node = node.get(name) if isinstance(node, dict) else None
            if isinstance(node, dict) and not CEL_MIRRORS[rule](node):
                found.append(f"{'.'.join(path)}: {message}")
        # metadata is only `type: object` in a CRD; the API server checks it as any ObjectMeta.
        found += kubernetes_problems({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata", {})})
        return found


@cache
def custom_resources() -> dict[tuple[str, str], CustomResource]:
    return {
        ("keda.sh/v1alpha1", kind): CustomResource(KEDA / f"{kind.lower()}-v1alpha1.schema.yaml")
        for kind in ("ScaledObject", "TriggerAuthentication")
    }


@cache
def kafka_scaler() -> dict[str, Object]:
    """The kafka scaler's parameters (KEDA's kafkaMetadata struct tags): name -> type, where read, default, enum."""
    parameters: dict[str, Object] = json.loads((KEDA / "kafka-scaler-parameters.json").read_text())["parameters"]
    return parameters


GO_BOOLEANS = {"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"}  # strconv.ParseBool


def kafka_trigger_problems(trigger: Object, auth_parameters: set[str]) -> list[str]:
    """What KEDA's kafka scaler would refuse, or silently ignore (an unknown key only logs a warning)."""
    parameters, found = kafka_scaler(), []
    metadata: dict[str, str] = trigger["metadata"]
    for key, value in metadata.items():
        name = key.removesuffix("FromEnv")
        spec = parameters.get(name)
        if spec is None or "triggerMetadata" not in spec["in"]:
            found.append(f"metadata.{key}: not a parameter the kafka scaler reads from a trigger")
            continue
        if key != name:
            if "resolvedEnv" not in spec["in"]:
                found.append(f"metadata.{key}: {name} cannot come from the environment")
            continue
        if spec["type"] == "integer" and not re.fullmatch(r"-?\d+", value):
            found.append(f"metadata.{key}: {value!r} is not an integer")
        if spec["type"] == "boolean" and value not in GO_BOOLEANS:
            found.append(f"metadata.{key}: {value!r} is not a boolean")
        if "enum" in spec and value not in spec["enum"]:
            found.append(f"metadata.{key}: {value!r} is not one of {spec['enum']}")
    for name, spec in parameters.items():
        given = name in metadata or f"{name}FromEnv" in metadata or name in auth_parameters
        if spec["required"] and not given:
            found.append(f"metadata.{name}: required")
    # kafkaMetadata.Validate() and parseSASL()
    if re.fullmatch(r"-?\d+", metadata.get("lagThreshold", "10")) and int(metadata.get("lagThreshold", "10")) <= 0:
        found.append("metadata.lagThreshold: must be positive")
    if metadata.get("ensureEvenDistributionOfPartitions") == "true" and "topic" not in metadata:
        found.append("metadata.ensureEvenDistributionOfPartitions: needs a topic")
    if metadata.get("sasl") in ("plaintext", "scram_sha256", "scram_sha512"):
        found += [f"authentication: no {p} for sasl" for p in ("username", "password") if p not in auth_parameters]
    return found


def kubernetes_problems(obj: Object) -> list[str]:
    found = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.absolute_path)) or "(root)"
            found.append(f"{where}: {exc.message} (Kubernetes {version})")
    return found


# What the API server asks of every object's name (ValidateObjectMeta: a DNS-1123 subdomain).
NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def problems(obj: Object, objects: list[Object]) -> list[str]:
    """Why the API server (with KEDA's CRDs) or KEDA would refuse ``obj``, one of ``objects``; [] if none."""
    name = obj.get("metadata", {}).get("name", "")
    found = [] if NAME.fullmatch(name) and len(name) <= 253 else [f"metadata.name: {name!r} is no DNS-1123 subdomain"]
    crd = custom_resources().get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if crd is None:
        return found + kubernetes_problems(obj)
    found += crd.problems(obj)
    if obj["kind"] == "ScaledObject" and not found:
        for index, trigger in enumerate(obj["spec"]["triggers"]):
            auth: set[str] = set()
            if "authenticationRef" in trigger:
                ref = trigger["authenticationRef"]
                kind = ref.get("kind", "TriggerAuthentication")
                spec = the(objects, kind, ref["name"])["spec"]
                auth = {p["parameter"] for key in ("secretTargetRef", "configMapTargetRef", "env")
                        for p in spec.get(key, [])}  # fmt: skip
            if trigger["type"] == "kafka":
                found += [f"spec.triggers.{index}.{p}" for p in kafka_trigger_problems(trigger, auth)]
    if obj["kind"] == "TriggerAuthentication":
        authentication = {name for name, spec in kafka_scaler().items() if "authParams" in spec["in"]}
        for key in ("secretTargetRef", "configMapTargetRef", "env"):
            for index, ref in enumerate(obj["spec"].get(key, [])):
                if ref["parameter"] not in authentication:
                    found.append(f"spec.{key}.{index}.parameter: {ref['parameter']!r} is no kafka scaler parameter")
    return found


# -- the rendered manifests pass their schemas ----------------------------------------------------


def test_every_rendered_object_passes_its_schema(rendered: list[Object]) -> None:
    checked = []
    for obj in rendered:
        assert problems(obj, rendered) == [], f"{obj['kind']}/{obj['metadata']['name']}"
        checked.append(f"{obj['apiVersion']} {obj['kind']}/{obj['metadata']['name']}")
    kinds = {obj["kind"] for obj in rendered}
    assert {"Deployment", "ConfigMap", "Secret", "Service", "PodDisruptionBudget", "ScaledObject",
            "TriggerAuthentication"} <= kinds  # fmt: skip
    print(f"{len(checked)} objects valid (Kubernetes {', '.join(KUBERNETES_VERSIONS)}, KEDA v2.20.2 CRDs): "
          + "; ".join(checked))  # fmt: skip


def _set(path: str, value: Any) -> Callable[[Object], None]:
    def change(obj: Object) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for name in parents:
            node = node[int(name)] if isinstance(node, list) else node[name]
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if isinstance(node, list) else last] = value

    return change


_DELETE = object()
EVENTS = "spec.triggers.0.metadata"  # the events trigger's metadata


@pytest.mark.parametrize(("kind", "change", "expected"), [
    ("ScaledObject", _set("spec.maxReplicaCount", "12"), "spec.maxReplicaCount: '12' is not of type 'integer'"),
    ("ScaledObject", _set("spec.minReplicaCount", -1), "spec.minReplicaCount: -1 is less than the minimum of 0"),
    ("ScaledObject", _set("spec.scaleTargetRef", _DELETE), "'scaleTargetRef' is a required property"),
    ("ScaledObject", _set("spec.triggers", []), "spec.triggers: [] should be non-empty"),
    ("ScaledObject", _set("spec.maxReplicas", 12), "'maxReplicas' was unexpected"),  # the HPA's name for it
    ("ScaledObject", _set("spec.triggers.0.metadata.lagThreshold", 10000), "10000 is not of type 'string'"),
    ("ScaledObject", _set("spec.minReplicaCount", 13), "minReplicaCount must be less than or equal to maxReplicaCount"),
    ("ScaledObject", _set("metadata.name", "Driftstream_Worker"), "'Driftstream_Worker' is no DNS-1123 subdomain"),
    # The kafka scaler's parameters (a typo only logs a warning in KEDA, and the default applies).
    ("ScaledObject", _set(f"{EVENTS}.lagTreshold", "100"), "lagTreshold: not a parameter the kafka scaler reads"),
    ("ScaledObject", _set(f"{EVENTS}.lagThreshold", "10k"), "metadata.lagThreshold: '10k' is not an integer"),
    ("ScaledObject", _set(f"{EVENTS}.offsetResetPolicy", "smallest"), "is not one of ['latest', 'earliest']"),
    ("ScaledObject", _set(f"{EVENTS}.bootstrapServersFromEnv", _DELETE), "metadata.bootstrapServers: required"),
    ("ScaledObject", _set(f"{EVENTS}.username", "driftstream"), "metadata.username: not a parameter"),
    ("TriggerAuthentication", _set("spec.secretTargetRef.0.key", _DELETE), "'key' is a required property"),
    ("TriggerAuthentication", _set("spec.secretTargetRef.1.parameter", "pw"), "'pw' is no kafka scaler parameter"),
    ("Deployment", _set("spec.template.spec.containers.0.livenessProbe.httpGett", {}), "'httpGett' was unexpected"),
    ("Deployment", _set("spec.template.spec.containers.0.ports.0.containerPort", "6066"), "'6066' is not of type"),
    ("PodDisruptionBudget", _set("spec.selector.matchLabels", "worker"), "'worker' is not of type 'object'"),
])  # fmt: skip
def test_a_malformed_object_fails_its_schema(rendered: list[Object], kind: str, change: Any, expected: str) -> None:
    obj = the(rendered, kind)
    assert problems(obj, rendered) == []
    change(obj)
    found = problems(obj, rendered)
    assert any(expected in problem for problem in found), found
    print(f"{kind}: {found[0]}")


def test_a_malformed_scaledobject_file_fails_from_render_to_schema(tmp_path: Path) -> None:
    """The whole way: a scratch copy of k8s/ with one field of scaledobject.yaml broken, rendered by kubectl."""
    scratch = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", scratch)
    source = scratch / "scaledobject.yaml"
    text = source.read_text()
    assert text.count("  maxReplicaCount: 12\n") == 1
    source.write_text(text.replace("  maxReplicaCount: 12\n", "  maxReplicaCount: twelve\n"))
    objects = render(scratch)
    found = problems(the(objects, "ScaledObject"), objects)
    assert found == ["spec.maxReplicaCount: 'twelve' is not of type 'integer'"], found
    source.write_text(text.replace("  maxReplicaCount: 12\n", "  maxReplicaCount: 12\n  minReplicas: 1\n"))
    objects = render(scratch)
    found = problems(the(objects, "ScaledObject"), objects)
    assert found == ["spec: Additional properties are not allowed ('minReplicas' was unexpected)"], found
    print(found[0])


# -- the autoscaler fits the worker --------------------------------------------------------------


def test_the_autoscaler_stays_within_the_partitions_and_follows_the_worker_group(
    rendered: list[Object], monkeypatch: pytest.MonkeyPatch
) -> None:
    scaled = the(rendered, "ScaledObject")
    spec = scaled["spec"]
    deployment = the(rendered, "Deployment")
    settings = worker_settings(rendered, monkeypatch)
    environment = container_environment(rendered)
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": deployment["metadata"]["name"]}  # fmt: skip
    # A fixed count in the Deployment would be applied again by every `kubectl apply`.
    assert "replicas" not in deployment["spec"]
    # Bounded by the partitions the rendered configuration gives the events topic.
    assert f"{PREFIX}TOPIC_PARTITIONS" in environment, "the partition count must be set where the bound can be seen"
    partitions = settings.topic_partitions
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
    topics = {trigger["metadata"]["topic"] for trigger in spec["triggers"]}
    assert topics == {settings.topic_events, settings.topic_labels}
    worker = Worker(settings, MemoryStateStore())
    expected_sasl = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
    for trigger in spec["triggers"]:
        metadata = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert metadata["consumerGroup"] == settings.app_id == worker.app.conf.id
        assert environment[metadata["bootstrapServersFromEnv"]] == settings.kafka_bootstrap_servers
        assert metadata["offsetResetPolicy"] == worker.app.conf.consumer_auto_offset_reset
        assert metadata.get("allowIdleConsumers", "false") == "false"
        protocol = settings.kafka_security_protocol
        assert metadata.get("tls", "disable") == ("enable" if protocol.endswith("SSL") else "disable")
        assert metadata.get("sasl", "none") == (expected_sasl[settings.kafka_sasl_mechanism]
                                                if protocol.startswith("SASL") else "none")  # fmt: skip
        # The credentials are the worker's own.
        authentication = the(rendered, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        by_parameter = {ref["parameter"]: ref for ref in authentication["spec"]["secretTargetRef"]}
        for parameter, variable in (("username", "KAFKA_SASL_USERNAME"), ("password", "KAFKA_SASL_PASSWORD")):
            ref = by_parameter[parameter]
            assert ref["key"] == PREFIX + variable and ref["key"] in the(rendered, "Secret", ref["name"])["stringData"]
    print(f"{spec['minReplicaCount']}-{spec['maxReplicaCount']} workers on {partitions} partitions, group "
          f"{settings.app_id}, topics {sorted(topics)}")  # fmt: skip


# -- environment variables -----------------------------------------------------------------------


def dockerfile_variables(path: Path) -> dict[str, str]:
    """The ENV instructions of a Dockerfile (continuation lines joined, comments dropped)."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    instructions = re.sub(r"\\\n", " ", "\n".join(lines)).splitlines()
    found: dict[str, str] = {}
    for instruction in instructions:
        words = instruction.split(None, 1)
        if words and words[0].upper() == "ENV":
            for pair in shlex.split(words[1]):
                name, _, value = pair.partition("=")
                found[name] = value
    return found


def compose_variables(path: Path) -> dict[str, str]:
    """Every service's environment in a compose file (anchors and merge keys resolved)."""
    found: dict[str, str] = {}
    for service in yaml.safe_load(path.read_text())["services"].values():
        environment = service.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        found |= {str(name): str(value) for name, value in environment.items()}
    return found


def kubernetes_variables(objects: list[Object]) -> dict[str, str]:
    """What every container of the rendered workloads gets: its env, and the keys of its envFrom sources."""
    found: dict[str, str] = {}
    for workload in objects:
        if workload["kind"] not in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            continue
        for container in workload["spec"]["template"]["spec"]["containers"]:
            found |= {v["name"]: str(v.get("value", "")) for v in container.get("env", [])}
            for source in container.get("envFrom", []):
                for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if key in source:
                        obj = the(objects, kind, source[key]["name"])
                        found |= {**obj.get("data", {}), **obj.get("stringData", {})}
    return found


def test_every_variable_the_files_set_is_a_worker_setting_and_none_is_faust_s(rendered: list[Object]) -> None:
    sources = {
        "docker/Dockerfile": dockerfile_variables(ROOT / "docker" / "Dockerfile"),
        "k8s/ (rendered)": kubernetes_variables(rendered),
        "docker-compose.yml": compose_variables(ROOT / "docker-compose.yml"),
    }
    fields = {name.lower() for name in Settings.model_fields}
    for source, variables in sources.items():
        ours = [name for name in variables if name.upper().startswith(PREFIX)]
        assert ours, f"{source}: no {PREFIX}* variable found: is the parser reading it?"
        unknown = [name for name in ours if name[len(PREFIX):].lower() not in fields]
        assert unknown == [], f"{source} sets variables that are no setting of streams.settings.Settings"
        faust = sorted(name for name in variables if name.startswith("APP_") or name in FAUST_VARIABLES)
        assert faust == [], f"{source} sets Faust's own variables, which override the worker's settings"
        print(f"{source}: {', '.join(sorted(ours))}")
    # The data dir, where Faust keeps its files, is the worker's setting wherever it is set.
    for source in ("docker/Dockerfile", "k8s/ (rendered)"):
        assert sources[source][f"{PREFIX}DATA_DIR"] == "/var/lib/driftstream"
    mounts = {m["mountPath"] for m in worker_container(rendered)["volumeMounts"]}
    assert sources["k8s/ (rendered)"][f"{PREFIX}DATA_DIR"] in mounts  # a writable volume: the root is read-only
    # Service links would put <SERVICE>_PORT and the like in the environment, WEB_PORT for a Service `web`.
    assert the(rendered, "Deployment")["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_the_data_dir_setting_is_the_faust_app_s_datadir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_environment(monkeypatch)
    data = tmp_path / "data"
    worker = Worker(Settings(data_dir=str(data)), MemoryStateStore())
    assert worker.app.conf.datadir == data
    assert worker.app.conf.tabledir.is_relative_to(data)
    # Why no file may set Faust's own variable: Faust reads it over what the worker passes.
    monkeypatch.setenv("APP_DATADIR", str(tmp_path / "faust"))
    assert Worker(Settings(data_dir=str(data)), MemoryStateStore()).app.conf.datadir == tmp_path / "faust"


# -- probes --------------------------------------------------------------------------------------


def test_liveness_is_livez_and_readiness_is_healthz(rendered: list[Object], monkeypatch: pytest.MonkeyPatch) -> None:
    container = worker_container(rendered)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert ports[get["port"]] == worker_settings(rendered, monkeypatch).web_port
        paths[probe] = get["path"]
    # A worker waiting out a Redis or Kafka outage is alive (/livez) but not ready (/healthz): no
    # probe that restarts the pod may ask for readiness (tests/integration/test_outages.py runs both).
    assert paths == {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/healthz"}
    healthcheck = [line for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines()
                   if line.strip().startswith("CMD") and "urlopen" in line]  # fmt: skip
    assert len(healthcheck) == 1 and "/livez'" in healthcheck[0] and "/healthz" not in healthcheck[0]


# -- memory --------------------------------------------------------------------------------------


def documented_peak_bytes() -> int:
    """The worker's peak RSS at 100 models x 100 features, as the throughput benchmark wrote it.

    bench/throughput.py writes it in MB of 2**20 bytes (``peak_rss / 2**20``)."""
    text = (ROOT / "docs" / "throughput-table.md").read_text()
    match = re.search(r"^One worker, 100 models x 100 features .*?: peak RSS \*\*([\d,.]+) MB\*\*", text, re.M)
    assert match, "docs/throughput-table.md has no '## Memory' line of the 100 x 100 run"
    return round(float(match.group(1).replace(",", "")) * 2**20)


QUANTITY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "": 1}


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``1536Mi``, ``1.5Gi``, ``800M``) in bytes."""
    match = re.fullmatch(r"([\d.]+)(Ki|Mi|Gi|Ti|k|M|G|T|)", str(quantity))
    assert match, f"unreadable memory quantity {quantity!r}"
    return round(float(match.group(1)) * QUANTITY[match.group(2)])


def test_the_memory_limit_fits_the_documented_peak(rendered: list[Object]) -> None:
    peak = documented_peak_bytes()
    resources = worker_container(rendered)["resources"]
    request, limit = (quantity_bytes(resources[k]["memory"]) for k in ("requests", "limits"))
    assert request >= peak, "the scheduler must reserve the documented peak"
    assert limit >= HEADROOM * peak, f"the limit leaves less than {HEADROOM}x the documented peak"
    print(f"documented peak {peak / 2**20:,.0f} MiB; request {request / 2**20:,.0f} MiB, "
          f"limit {limit / 2**20:,.0f} MiB ({limit / peak:.2f}x)")  # fmt: skip
