"""Checks of the deployment kit (deploy/) against the Kubernetes schemas and the server itself.

    python3 -m venv target/deploy-venv
    target/deploy-venv/bin/pip install -r tests/deploy/requirements.txt
    target/deploy-venv/bin/pytest -q tests/deploy

- Every Kubernetes object in deploy/k8s/ validates against the Kubernetes 1.30 JSON schemas
  (kubernetes-validate, strict: unknown fields are errors). Custom resources it has no schema
  for (KEDA's ScaledObject, prometheus-operator's PodMonitor, kustomize's Kustomization) get
  structural checks of their own instead.
- The manifests agree with the server: every TRANSCRIBE_* variable is one the server or the
  model cache reads; terminationGracePeriodSeconds exceeds the drain (the server's default
  --drain-timeout, from `transcribe-server --help` when the binary is built, else from
  server/src/config.rs, and the value the Deployment sets); probes point at the container
  port; the token Secret is mounted where --auth-token-file points; the autoscaling metric
  is a gauge that server/src/metrics.rs registers; the gRPC health service name is the
  server's.
- Each kustomization (cpu, gpu, overlays/*) renders (`kubectl kustomize` or `kustomize
  build`, when installed), what it renders validates too, and its Deployment passes the same
  checks as the files (TLS: HTTPS probes, certificate mounted where the flags point).
- deploy/nginx passes `nginx -t` (when nginx is installed). deploy/envoy/envoy.yaml parses
  into Envoy's v3 Bootstrap message with its validation rules (xds-protos and
  protoc-gen-validate: Envoy's API, not an Envoy binary, which is not installed here) and is
  checked for the properties the fleet depends on.
- The Containerfiles agree with the manifests (entrypoint, port, user, model folder) and
  build both binaries without microphone capture (--no-default-features: no libasound2 in
  the images, an ldd check for libasound in the runtime stage), so no Deployment may use a
  mic source.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30.0"

# Kinds kubernetes-validate has no schema for, with the check that replaces it.
CUSTOM_KINDS = {
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}

# After the drain the server gives the transport 0.5 s for its last words (DRAIN_LAST_WORDS,
# server/src/lib.rs) and blocking tasks 0.5 s (RUNTIME_STOP, server/src/main.rs).
SERVER_EXIT_SECONDS = 1.0


# --- helpers ---------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(Path(p) for p in glob.glob(str(K8S / "**" / "*.yaml"), recursive=True))


def load_docs(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def all_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in yaml_files() for d in load_docs(p)]


def docs_of_kind(kind: str) -> list[tuple[Path, dict]]:
    return [(p, d) for p, d in all_docs() if d.get("kind") == kind]


def rel(path: Path) -> str:
    # Paths outside the repository (a CARGO_TARGET_DIR elsewhere) stay absolute.
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def parse_duration(text: str) -> float:
    """The server's duration syntax (config.rs parse_duration): 500ms, 2s, 1.5m, 1h, 30."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m|min|h)?\s*", text)
    assert m, f"{text!r} is not a duration the server accepts"
    scale = {"ms": 0.001, None: 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}[m.group(2)]
    return float(m.group(1)) * scale


def server_binary() -> Path | None:
    path = Path(os.environ.get("TRANSCRIBE_SERVER_BIN", ROOT / "target/release/transcribe-server"))
    return path if path.is_file() and os.access(path, os.X_OK) else None


def default_drain_timeout() -> tuple[float, str]:
    """The server's default --drain-timeout in seconds, and where it was read."""
    binary = server_binary()
    if binary is not None:
        out = subprocess.run(
            [str(binary), "--help"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        block = re.search(r"--drain-timeout <[A-Z_]+>(.*?)(?:\n\s*\n\s*-|\Z)", out, re.S)
        assert block, "no --drain-timeout in transcribe-server --help"
        default = re.search(r"\[default: ([^\]]+)\]", block.group(1))
        assert default, "--drain-timeout has no default in --help"
        return parse_duration(default.group(1)), f"{rel(binary)} --help"
    source = (ROOT / "server/src/config.rs").read_text()
    m = re.search(r'env = "TRANSCRIBE_DRAIN_TIMEOUT", default_value = "([^"]+)"', source)
    assert m, "no TRANSCRIBE_DRAIN_TIMEOUT default in server/src/config.rs"
    return parse_duration(m.group(1)), "server/src/config.rs"


def known_env_vars() -> set[str]:
    """Every TRANSCRIBE_* variable the server or the model cache reads (from the sources)."""
    names: set[str] = set()
    for src in ["server/src/config.rs", "flags/src/lib.rs"]:
        names |= set(re.findall(r'env = "(TRANSCRIBE_[A-Z0-9_]+)"', (ROOT / src).read_text()))
    for src in glob.glob(str(ROOT / "models/src/*.rs")):
        names |= set(re.findall(r'pub const \w+_ENV: &str = "([A-Z0-9_]+)"', Path(src).read_text()))
    assert "TRANSCRIBE_DRAIN_TIMEOUT" in names and "TRANSCRIBE_MODEL_DIR" in names, names
    return names


def registered_metrics() -> dict[str, str]:
    """Metric name (with the transcribe_ prefix) -> the Rust type of its field in Metrics."""
    source = (ROOT / "server/src/metrics.rs").read_text()
    prefix = re.search(r'Registry::with_prefix\("([a-z_]+)"\)', source)
    assert prefix, "no Registry::with_prefix in server/src/metrics.rs"
    fields = dict(re.findall(r"^\s*pub (\w+): (.+),$", source, re.M))
    out = {}
    for name, var in re.findall(r'registry\.register\(\s*"([a-z_]+)",\s*"[^"]*",\s*(\w+)\.clone\(\)', source):
        out[f"{prefix.group(1)}_{name}"] = fields.get(var, "")
    assert out, "no metric registered in server/src/metrics.rs"
    return out


def exported_names(metrics: dict[str, str]) -> set[str]:
    names = set()
    for name, ty in metrics.items():
        if "Counter" in ty:
            names.add(name + "_total")
        elif "Histogram" in ty:
            names |= {name + "_bucket", name + "_sum", name + "_count"}
        else:
            names.add(name)
    return names


def containers(deployment: dict) -> list[dict]:
    return deployment["spec"]["template"]["spec"]["containers"]


def server_container(deployment: dict) -> dict:
    [c] = [c for c in containers(deployment) if c["name"] == "transcribe"]
    return c


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def container_port(container: dict) -> dict:
    [port] = [p for p in container["ports"] if p["name"] == "grpc"]
    return port


def max_streams(deployment: dict) -> int:
    env = env_of(server_container(deployment))
    assert "TRANSCRIBE_MAX_STREAMS" in env, "set TRANSCRIBE_MAX_STREAMS: the scaling target depends on it"
    return int(env["TRANSCRIBE_MAX_STREAMS"])


def deployment_in(folder: Path) -> dict:
    [(_, d)] = [(p, d) for p, d in docs_of_kind("Deployment") if p.parent == folder]
    return d


DEPLOYMENTS = docs_of_kind("Deployment")


# --- schemas ---------------------------------------------------------------------------


def test_there_is_something_to_check():
    kinds = {d["kind"] for _, d in all_docs()}
    for kind in ["Deployment", "Service", "PodDisruptionBudget", "Secret", "ScaledObject",
                 "HorizontalPodAutoscaler", "Namespace", "Ingress", "PersistentVolumeClaim", "Job"]:
        assert kind in kinds, f"no {kind} in deploy/k8s"


@pytest.mark.parametrize("path", yaml_files(), ids=rel)
def test_objects_validate_against_kubernetes_schemas(path: Path):
    for doc in load_docs(path):
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CUSTOM_KINDS:
            continue  # structural checks below
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            pytest.fail(f"{rel(path)}: {doc['kind']}/{doc['metadata']['name']}: {where}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            pytest.fail(f"{rel(path)}: {e.message} (add a structural check to CUSTOM_KINDS?)")


def test_kustomizations_list_existing_files():
    for path, doc in docs_of_kind("Kustomization"):
        assert path.name == "kustomization.yaml", rel(path)
        assert doc["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
        for resource in doc["resources"]:
            target = path.parent / resource
            assert target.exists(), f"{rel(path)}: {resource} does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").is_file(), f"{rel(path)}: {resource} has no kustomization"
    listed = set()
    for path, doc in docs_of_kind("Kustomization"):
        listed |= {(path.parent / r).resolve() for r in doc["resources"]}
    # The example Secret must never be applied by `kubectl apply -k`.
    assert (K8S / "secret-tokens.example.yaml").resolve() not in listed


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        probe = subprocess.run(["kubectl", "kustomize", "--help"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["kubectl", "kustomize"]
    return None


# --- the Deployments against the server ------------------------------------------------
# Each check takes a Deployment; they run on every Deployment file and on the Deployment
# each kustomization renders (overlays included).


def check_env_vars_exist(deployment):
    known = known_env_vars()
    spec = deployment["spec"]["template"]["spec"]
    for c in spec["containers"] + spec.get("initContainers", []):
        for name in env_of(c):
            if name.startswith("TRANSCRIBE_"):
                assert name in known, f"{c['name']}: {name} is read by nothing (known: {sorted(known)})"


def check_grace_period_exceeds_the_drain(deployment):
    default, source = default_drain_timeout()
    spec = deployment["spec"]["template"]["spec"]
    grace = spec["terminationGracePeriodSeconds"]
    container = server_container(deployment)
    set_value = env_of(container).get("TRANSCRIBE_DRAIN_TIMEOUT")
    for i, arg in enumerate(container.get("args", [])):
        if arg.startswith("--drain-timeout"):
            set_value = arg.split("=", 1)[1] if "=" in arg else container["args"][i + 1]
    drain = parse_duration(set_value) if set_value else default
    pre_stop = 0.0
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    if command[:1] == ["sleep"]:
        pre_stop = float(command[1])
    assert grace > default, f"terminationGracePeriodSeconds {grace} <= default drain {default}s ({source})"
    need = pre_stop + drain + SERVER_EXIT_SECONDS
    assert grace > need, (
        f"terminationGracePeriodSeconds {grace} <= preStop {pre_stop}s + drain {drain}s "
        f"+ {SERVER_EXIT_SECONDS}s of exit"
    )


def check_probes_point_at_the_server_port(deployment):
    container = server_container(deployment)
    port = container_port(container)
    env = env_of(container)
    listen = env.get("TRANSCRIBE_LISTEN", "127.0.0.1:50051")
    assert listen.rsplit(":", 1)[0] not in ("127.0.0.1", "[::1]", "localhost"), (
        "the server listens on loopback only: probes and Services cannot reach it")
    assert int(listen.rsplit(":", 1)[1]) == port["containerPort"]
    service_name = re.search(
        r'pub const SERVICE_NAME: &str = "([^"]+)"', (ROOT / "server/src/lib.rs").read_text()
    ).group(1)
    tls = "TRANSCRIBE_TLS_CERT" in env
    for kind in ["startupProbe", "readinessProbe", "livenessProbe"]:
        probe = container[kind]
        if "grpc" in probe:
            # The kubelet's gRPC probe has no TLS.
            assert not tls, f"{kind}: gRPC probes cannot reach a server with --tls-cert"
            assert probe["grpc"]["port"] == port["containerPort"], kind
            assert probe["grpc"].get("service", "") in ("", service_name), kind
        elif "httpGet" in probe:
            assert probe["httpGet"]["port"] in (port["name"], port["containerPort"]), kind
            assert probe["httpGet"]["path"] in ("/healthz", "/readyz"), kind
            assert probe["httpGet"].get("scheme", "HTTP") == ("HTTPS" if tls else "HTTP"), kind
        else:
            pytest.fail(f"{kind} is neither gRPC nor HTTP")
    # Liveness must not fail while loading or draining; startup and readiness must.
    assert container["livenessProbe"].get("httpGet", {}).get("path") == "/healthz" or \
        "grpc" in container["livenessProbe"]
    for kind in ["startupProbe", "readinessProbe"]:
        assert "grpc" in container[kind] or container[kind]["httpGet"]["path"] == "/readyz", kind


def secret_files(deployment, container) -> dict[str, tuple[str, str]]:
    """Path in the container -> (Secret name, key) for every Secret volume it mounts."""
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    files = {}
    for mount in container["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        assert mount.get("readOnly") is True and "subPath" not in mount, mount
        for item in secret.get("items", []):
            files[f"{mount['mountPath'].rstrip('/')}/{item['path']}"] = (secret["secretName"], item["key"])
    return files


def check_token_secret_is_mounted_where_the_flag_points(deployment):
    container = server_container(deployment)
    env = env_of(container)
    token_file = env["TRANSCRIBE_AUTH_TOKEN_FILE"]
    [(_, example)] = docs_of_kind("Secret")
    files = secret_files(deployment, container)
    assert token_file in files, f"no Secret volume puts a file at {token_file}: {files}"
    name, key = files[token_file]
    assert name == example["metadata"]["name"] and key in example["stringData"], (name, key)
    for flag in ["TRANSCRIBE_TLS_CERT", "TRANSCRIBE_TLS_KEY"]:
        if flag in env:
            assert env[flag] in files, f"{flag} points at no mounted Secret key"


def check_models_come_from_the_volume_or_image(deployment):
    spec = deployment["spec"]["template"]["spec"]
    container = server_container(deployment)
    env = env_of(container)
    model_dir = env["TRANSCRIBE_MODEL_DIR"]
    assert env.get("TRANSCRIBE_OFFLINE") == "1", "pods should not download at start-up"
    mounts = [m for m in container["volumeMounts"] if m["mountPath"] == model_dir]
    if not mounts:
        # Models baked into the image (Containerfile.models): nothing may fill a volume.
        assert not spec.get("initContainers"), "an init container fills a folder nobody mounts"
        return
    [mount] = mounts
    assert mount.get("readOnly") is True
    for init in spec.get("initContainers", []):
        init_env = env_of(init)
        assert init_env["TRANSCRIBE_MODEL"] == env["TRANSCRIBE_MODEL"]
        assert init_env["TRANSCRIBE_MODEL_DIR"] == model_dir
        assert any(m["name"] == mount["name"] and not m.get("readOnly") for m in init["volumeMounts"])


def check_pod_settings(deployment):
    spec = deployment["spec"]["template"]["spec"]
    # A Service named `transcribe` would inject TRANSCRIBE_PORT etc. into the server's
    # own variable namespace.
    assert spec["enableServiceLinks"] is False
    strategy = deployment["spec"]["strategy"]
    if strategy["type"] == "RollingUpdate":
        # A new replica loads its model before an old one drains.
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    container = server_container(deployment)
    assert container["resources"]["limits"]["memory"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


DEPLOYMENT_CHECKS = [check_env_vars_exist, check_grace_period_exceeds_the_drain,
                     check_probes_point_at_the_server_port,
                     check_token_secret_is_mounted_where_the_flag_points,
                     check_models_come_from_the_volume_or_image, check_pod_settings]


@pytest.mark.parametrize("check", DEPLOYMENT_CHECKS, ids=lambda c: c.__name__[len("check_"):])
@pytest.mark.parametrize("path,deployment", DEPLOYMENTS, ids=[rel(p) for p, _ in DEPLOYMENTS])
def test_deployment(path, deployment, check):
    check(deployment)


KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml") if p.parent.name != "base")


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=rel)
def test_kustomization_renders_and_validates(folder: Path):
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    out = subprocess.run(command + [str(folder)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "Service", "PodDisruptionBudget", "PodMonitor", "Deployment",
            "ScaledObject"} <= kinds, kinds
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    for check in DEPLOYMENT_CHECKS:
        check(deployment)
    spec = deployment["spec"]["template"]["spec"]
    flavour = "cuda" if folder.name == "gpu" else "cpu"
    for c in spec["containers"] + spec.get("initContainers", []):
        assert re.fullmatch(rf"transcribe:{flavour}(-[a-z0-9.-]+)?", c["image"]), c["image"]
    [monitor] = [d for d in docs if d["kind"] == "PodMonitor"]
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    tls = "TRANSCRIBE_TLS_CERT" in env_of(server_container(deployment))
    assert endpoint["scheme"] == ("https" if tls else "http")


# --- Services, budget, scrape, autoscaling --------------------------------------------


FLEET = [(p, d) for p, d in DEPLOYMENTS if p.parent.name in ("cpu", "gpu")]


def pod_labels() -> dict:
    """The labels of the fleet's pods (the cpu and gpu variants: the same)."""
    labels = [d["spec"]["template"]["metadata"]["labels"] for _, d in FLEET]
    assert len(labels) == 2 and all(lab == labels[0] for lab in labels)
    return labels[0]


def test_selectors_match_the_pods():
    for _, d in DEPLOYMENTS:
        template = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= template.items()
    for _, svc in docs_of_kind("Service"):
        selected = [d for _, d in DEPLOYMENTS
                    if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert selected, f"Service {svc['metadata']['name']} selects no pod"
        for port in svc["spec"]["ports"]:
            for d in selected:
                assert port["targetPort"] in (container_port(server_container(d))["name"],
                                              container_port(server_container(d))["containerPort"])
    labels = pod_labels()
    for name in ["transcribe", "transcribe-headless"]:
        [svc] = [d for _, d in docs_of_kind("Service") if d["metadata"]["name"] == name]
        assert svc["spec"]["selector"].items() <= labels.items(), name
    for kind in ["PodDisruptionBudget", "PodMonitor"]:
        for _, doc in docs_of_kind(kind):
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items(), kind
    # A caption source's replica must stay out of the fleet's Services, budget and scaling.
    for path, d in DEPLOYMENTS:
        if (path, d) not in FLEET:
            assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"]["type"] == "Recreate"
            assert not labels.items() <= d["spec"]["template"]["metadata"]["labels"].items()


def test_disruption_budget():
    [(_, pdb)] = docs_of_kind("PodDisruptionBudget")
    # The API server refuses both at once; the schema does not say so.
    assert len({"minAvailable", "maxUnavailable"} & set(pdb["spec"])) == 1
    assert pdb["spec"].get("maxUnavailable", 1) >= 1, "a budget of 0 blocks node drains for ever"


def test_pod_monitor_scrapes_metrics_with_a_token():
    [(_, monitor)] = docs_of_kind("PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    for _, d in DEPLOYMENTS:
        assert endpoint["port"] == container_port(server_container(d))["name"]
    [(_, secret)] = docs_of_kind("Secret")
    creds = endpoint["authorization"]["credentials"]
    assert creds["name"] == secret["metadata"]["name"]
    assert creds["key"] in secret["stringData"]
    token = secret["stringData"][creds["key"]].strip()
    tokens = [t.strip() for t in secret["stringData"]["tokens"].splitlines()
              if t.strip() and not t.strip().startswith("#")]
    assert token in tokens, "the metrics token must be one the server accepts"


def check_scaling_metric(query: str, per_replica: float, deployment: dict, what: str):
    metrics = registered_metrics()
    used = set(re.findall(r"\btranscribe_[a-z_]+", query))
    assert used, f"{what}: no transcribe_ metric in {query!r}"
    for name in used:
        assert name in exported_names(metrics), f"{what}: {name} is not a metric of server/src/metrics.rs"
        assert "Gauge" in metrics.get(name, ""), f"{what}: {name} is not a gauge"
    assert 0 < per_replica < max_streams(deployment), (
        f"{what}: target {per_replica} per replica must be below TRANSCRIBE_MAX_STREAMS, "
        "so replicas are added before the existing ones refuse streams")


@pytest.mark.parametrize("path,scaled", docs_of_kind("ScaledObject"),
                         ids=[rel(p) for p, _ in docs_of_kind("ScaledObject")])
def test_scaled_object_structure(path, scaled):
    # KEDA's CRD is not in kubernetes-validate: the fields KEDA requires, checked by hand.
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval",
                         "cooldownPeriod", "idleReplicaCount", "advanced", "triggers", "fallback",
                         "initialCooldownPeriod"}, set(spec)
    deployment = deployment_in(path.parent)
    ref = spec["scaleTargetRef"]
    assert (ref.get("apiVersion", "apps/v1"), ref.get("kind", "Deployment"), ref["name"]) == \
        ("apps/v1", "Deployment", deployment["metadata"]["name"])
    assert scaled["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    for key in ["pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"]:
        assert isinstance(spec[key], int), key
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    # The HPA's behaviour: validate it with the real HPA schema.
    kubernetes_validate.validate({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "check"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 2,
                 "behavior": behavior},
    }, KUBERNETES_VERSION, strict=True)
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger.get("metricType", "AverageValue") == "AverageValue"
    meta = trigger["metadata"]
    assert set(meta) <= {"serverAddress", "query", "threshold", "activationThreshold",
                         "ignoreNullValues", "namespace", "customHeaders", "unsafeSsl",
                         "queryParameters", "timeout"}, set(meta)
    assert re.match(r"https?://", meta["serverAddress"])
    assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata values are strings"
    check_scaling_metric(meta["query"], float(meta["threshold"]), deployment, rel(path))
    assert re.search(r'namespace="' + re.escape(deployment["metadata"]["namespace"]) + '"', meta["query"])


def test_hpa_alternative_uses_a_real_gauge():
    [(path, hpa)] = docs_of_kind("HorizontalPodAutoscaler")
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    cpu = deployment_in(K8S / "cpu")
    assert hpa["spec"]["scaleTargetRef"]["name"] == cpu["metadata"]["name"]
    check_scaling_metric(metric["pods"]["metric"]["name"],
                         float(metric["pods"]["target"]["averageValue"]), cpu, rel(path))
    [(_, adapter)] = [(p, d) for p, d in docs_of_kind("ConfigMap") if d["metadata"]["name"] == "prometheus-adapter"]
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert any(metric["pods"]["metric"]["name"] in r["seriesQuery"] for r in rules)


# --- balancers -------------------------------------------------------------------------


def nginx_files() -> list[Path]:
    return sorted((DEPLOY / "nginx").glob("*.conf"))


def nginx_optional_files() -> list[Path]:
    return sorted((DEPLOY / "nginx/optional").glob("*.conf"))


def test_nginx_config_content():
    text = "\n".join(p.read_text() for p in nginx_files())
    port = container_port(server_container(DEPLOYMENTS[0][1]))["containerPort"]
    for needle in ["grpc_pass grpc://", "least_conn", "$transcribe_native_grpc", "client_max_body_size 0", "client_body_timeout",
                   "grpc_read_timeout", "grpc_send_timeout", "proxy_set_header Upgrade",
                   "location = /v1/stream", "location = /v1/captions", "location /v1/audio/",
                   "location /grpc.health.v1.Health/", "keepalive ", "http2"]:
        assert needle in text, needle
    # Tokens travel in the query string on the WebSocket doors: the log must not keep it.
    log_format = re.search(r"log_format transcribe (.*?);", text, re.S).group(1)
    for variable in ["$request ", "$request_uri", "$args", "$query_string", "$arg_"]:
        assert variable not in log_format + " ", variable
    assert "log_format" in text and text.count("access_log") == text.count("server_name")
    servers = re.findall(r"^\s*server\s+([0-9.]+):(\d+)", text, re.M)
    assert servers and all(int(p) == port for _, p in servers)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def free_ports(n: int) -> list[int]:
    """`n` distinct free loopback ports, held open together while they are picked: picked
    one by one, two servers started together could get the same port (a replica and an
    nginx listener on one port leave nginx retrying that bind while the listeners it did
    bind accept connections)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def local_listeners(text: str, ports: dict) -> str:
    """transcribe.conf's listeners moved to loopback ports: `ports` names them `tls`
    (443), `h2c` (50051) and `http` (8080); the IPv6 ones are dropped."""
    text = re.sub(r"^\s*listen \[::\].*\n", "", text, flags=re.M)
    text = text.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{ports['tls']} ssl http2;")
    text = text.replace("listen 50051 http2;", f"listen 127.0.0.1:{ports['h2c']} http2;")
    return text.replace("listen 8080;", f"listen 127.0.0.1:{ports['http']};")


def install_nginx(tmp_path: Path, edit=lambda name, text: text, optional: bool = False) -> Path:
    """deploy/nginx as installed (/etc/nginx/transcribe/ and its log in /var/log/nginx/, both
    moved to tmp_path), a test
    certificate, and a wrapper nginx.conf that includes transcribe.conf in `http {}`."""
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificate")
    conf = tmp_path / "conf"
    (conf / "tls").mkdir(parents=True)
    (conf / "optional").mkdir()
    for src in nginx_files() + nginx_optional_files():
        text = src.read_text().replace("/etc/nginx/transcribe/", f"{conf}/")
        text = text.replace("/var/log/nginx/", f"{tmp_path}/")
        name = src.relative_to(DEPLOY / "nginx")
        (conf / name).write_text(edit(str(name), text))
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=transcribe.example.com", "-addext", "subjectAltName=DNS:transcribe.example.com",
         "-keyout", str(conf / "tls/privkey.pem"), "-out", str(conf / "tls/fullchain.pem")],
        check=True, capture_output=True, timeout=60)
    wrapper = tmp_path / "nginx.conf"
    wrapper.write_text(f"""
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {conf}/transcribe.conf;
{"".join(f"    include {conf}/optional/{p.name};{chr(10)}" for p in nginx_optional_files()) if optional else ""}}}
""")
    return wrapper


@pytest.mark.parametrize("optional", [False, True], ids=["transcribe.conf", "with-optional"])
def test_nginx_accepts_the_config(tmp_path: Path, optional: bool):
    wrapper = install_nginx(tmp_path, optional=optional)
    out = subprocess.run([nginx_binary(), "-t", "-c", str(wrapper), "-p", f"{tmp_path}/"],
                         capture_output=True, text=True, timeout=60)
    print(out.stderr)
    assert out.returncode == 0, out.stderr
    assert "test is successful" in out.stderr


def envoy_config() -> dict:
    return yaml.safe_load((DEPLOY / "envoy/envoy.yaml").read_text())


def test_envoy_config_structure():
    # The properties the fleet depends on (the API's own rules: the test above).
    config = envoy_config()
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    [listener] = config["static_resources"]["listeners"]
    [chain] = listener["filter_chains"]
    [hcm] = chain["filters"]
    hcm = hcm["typed_config"]
    assert hcm["@type"].endswith("http_connection_manager.v3.HttpConnectionManager")
    assert hcm["codec_type"] == "AUTO"
    assert parse_duration(hcm["stream_idle_timeout"]) >= 300
    assert hcm["http_filters"][-1]["name"] == "envoy.filters.http.router"
    routes = [r for vh in hcm["route_config"]["virtual_hosts"] for r in vh["routes"]]
    for route in routes:
        if "route" in route:
            assert route["route"]["cluster"] in clusters, route
    grpc_routes = [r for r in routes if "grpc" in r["match"]]
    assert grpc_routes and all(r["route"]["cluster"] == "transcribe_grpc" for r in grpc_routes)
    [api] = [r for r in grpc_routes if r["match"]["prefix"] == "/transcribe.v1.TranscriptionService/"]
    assert api["route"]["timeout"] == "0s"
    assert "unavailable" in api["route"]["retry_policy"]["retry_on"].split(",")
    # gRPC-Web and CORS preflights on the API's path: after the native gRPC route, over HTTP/1.1.
    api_index = routes.index(api)
    [web] = [r for r in routes if r["match"].get("prefix") == "/transcribe.v1.TranscriptionService/"
             and "grpc" not in r["match"]]
    assert routes.index(web) > api_index and web["route"]["cluster"] == "transcribe_http"
    assert web["route"]["timeout"] == "0s"
    ws = [r for r in routes if r["match"].get("path") in ("/v1/stream", "/v1/captions")]
    assert len(ws) == 2 and all(r["route"]["cluster"] == "transcribe_http" for r in ws)
    assert all(r["route"]["upgrade_configs"][0]["upgrade_type"] == "websocket" for r in ws)

    grpc = clusters["transcribe_grpc"]
    options = grpc["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in options["explicit_http_config"], "gRPC needs HTTP/2 upstream"
    http = clusters["transcribe_http"]
    options = http["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http_protocol_options" in options["explicit_http_config"], "WebSocket needs HTTP/1.1 upstream"
    service_name = re.search(r'pub const SERVICE_NAME: &str = "([^"]+)"',
                             (ROOT / "server/src/lib.rs").read_text()).group(1)
    assert grpc["health_checks"][0]["grpc_health_check"]["service_name"] == service_name
    assert http["health_checks"][0]["http_health_check"]["path"] == "/readyz"

    headless = [d for _, d in docs_of_kind("Service") if d["spec"].get("clusterIP") == "None"]
    [svc] = headless
    fqdn = f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local"
    port = container_port(server_container(DEPLOYMENTS[0][1]))["containerPort"]
    for cluster in clusters.values():
        assert cluster["type"] == "STRICT_DNS"
        for group in cluster["load_assignment"]["endpoints"]:
            for ep in group["lb_endpoints"]:
                addr = ep["endpoint"]["address"]["socket_address"]
                assert (addr["address"], addr["port_value"]) == (fqdn, port)
    # Every typed_config names a v3 type.
    for types in re.findall(r'"@type":\s*(\S+)', (DEPLOY / "envoy/envoy.yaml").read_text()):
        assert types.startswith("type.googleapis.com/envoy.") and ".v3." in types, types


def import_envoy_types(text: str):
    """Imports the generated modules of every `@type` the config names (so that Any fields
    unpack) and returns the symbol database they register in."""
    import importlib
    import pkgutil

    from google.protobuf import symbol_database

    for full in set(re.findall(r'"@type":\s*type\.googleapis\.com/(\S+)', text)):
        package = full.rsplit(".", 1)[0]
        module = importlib.import_module(package)
        for info in pkgutil.iter_modules(module.__path__):
            if info.name.endswith("_pb2"):
                importlib.import_module(f"{package}.{info.name}")
    return symbol_database.Default()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_envoy_config_against_the_v3_api():
    """The config parsed into Envoy's Bootstrap message (unknown fields and wrong types are
    errors), each message checked against the API's validation rules (required fields,
    ranges), no deprecated field used. This is Envoy's API as xds-protos packages it, not an
    Envoy binary: `envoy --mode validate` was not run."""
    bootstrap_pb2 = pytest.importorskip("envoy.config.bootstrap.v3.bootstrap_pb2")
    validator = pytest.importorskip("protoc_gen_validate.validator")
    from google.protobuf import any_pb2, json_format, message

    text = (DEPLOY / "envoy/envoy.yaml").read_text()
    db = import_envoy_types(text)
    bootstrap = bootstrap_pb2.Bootstrap()
    json_format.ParseDict(yaml.safe_load(text), bootstrap)
    problems: list[str] = []

    def walk(msg, path):
        try:
            validator.validate(msg)
        except validator.ValidationFailed as e:
            problems.append(f"{path}: {e}")
        for field, value in msg.ListFields():
            if field.GetOptions().deprecated:
                problems.append(f"{path}.{field.name} is deprecated")
            if field.type != field.TYPE_MESSAGE:
                continue
            if field.message_type.GetOptions().map_entry:
                values = [value[k] for k in value]
            else:
                values = list(value) if field.is_repeated else [value]
            for v in values:
                if isinstance(v, any_pb2.Any):
                    inner = db.GetSymbol(v.TypeName())()
                    assert v.Unpack(inner), v.TypeName()
                    walk(inner, f"{path}.{field.name}[{v.TypeName()}]")
                elif isinstance(v, message.Message):
                    walk(v, f"{path}.{field.name}")

    walk(bootstrap, "bootstrap")
    assert not problems, "\n".join(problems)
    assert [c.name for c in bootstrap.static_resources.clusters] == ["transcribe_grpc", "transcribe_http"]


# --- container files -------------------------------------------------------------------


def test_no_deployment_uses_a_microphone():
    """The images are built without the `capture` feature: a server given a mic source
    (`[NAME=]mic[:DEVICE]`, SourceSpec::parse in server/src/config.rs) exits at start-up."""
    seen = 0
    for path, d in DEPLOYMENTS:
        for c in containers(d):
            values = (env_of(c).get("TRANSCRIBE_SOURCE") or "").split(";")
            args = c.get("command", []) + c.get("args", [])
            values += [a.split("=", 1)[1] for a in args if a.startswith("--source=")]
            values += [b for a, b in zip(args, args[1:]) if a == "--source"]
            for value in filter(None, (v.strip() for v in values)):
                seen += 1
                body = value.split("=", 1)[1] if re.match(r"[\w.-]+=(file:|mic)", value) else value
                assert not body.startswith("mic"), f"{rel(path)}: {value!r} needs `capture`"
    assert seen, "no caption source in deploy/k8s to check"


@pytest.mark.parametrize("name", ["Containerfile", "Containerfile.cuda"])
def test_containerfile_agrees_with_the_manifests(name: str):
    text = (DEPLOY / "container" / name).read_text()
    assert (DEPLOY / "container" / f"{name}.dockerignore").is_file()
    assert re.search(r"^target$", (DEPLOY / "container" / f"{name}.dockerignore").read_text(), re.M)
    assert 'ENTRYPOINT ["/usr/local/bin/transcribe-server"]' in text
    # Both binaries, without microphone capture (the `capture` feature links libasound.so.2):
    # only the Whisper engine, or the two `cuda` features (which bring it).
    joined = re.sub(r"\\\n\s*", " ", text)  # continuation lines joined
    build = re.findall(r"^RUN .*?(cargo build [^&\n]*)", joined, re.M)
    assert len(build) == 1, build
    args = build[0].split()
    assert "--locked" in args and "--release" in args
    assert " ".join(args[args.index("-p"):][:4]) == "-p transcribe-server -p transcribe-cli"
    assert "--no-default-features" in args, "the images are built without `capture`"
    features = args[args.index("--features") + 1]
    expected = ("transcribe-server/cuda,transcribe-cli/cuda" if name.endswith("cuda")
                else "transcribe-server/whisper")
    assert features == expected
    assert args.count("--features") == 1 and "capture" not in features
    # Nothing ALSA is installed: no libasound2 / libasound2t64 at run time, no headers and
    # no pkg-config (only cpal's alsa-sys needs it) at build time.
    installs = " ".join(re.findall(r"apt-get install[^&|]*", text))
    for package in ["libasound2", "libasound2t64", "libasound2-dev", "pkg-config"]:
        assert not re.search(rf"(?<![\w.-]){re.escape(package)}(?![\w.-])", installs), package
    assert "TODO(capture optional)" not in text
    # The runtime stage refuses a binary that links libasound (a build with `capture`).
    runtime = text[text.index("FROM runtime-base AS runtime"):]
    assert re.search(r"ldd /usr/local/bin/\$b \| grep libasound; then[^;]*; exit 1", runtime)
    if name.endswith("cuda"):
        assert re.search(r"^FROM nvidia/cuda:\$\{CUDA_VERSION\}-devel-", text, re.M)
        assert re.search(r"^FROM nvidia/cuda:\$\{CUDA_VERSION\}-runtime-", text, re.M)
    else:
        assert re.search(r"^FROM debian:\$\{DEBIAN_SUITE\}-slim AS runtime-base", text, re.M)
        assert re.search(r"^ARG DEBIAN_SUITE=bookworm$", text, re.M)
    expose = int(re.search(r"^EXPOSE (\d+)", text, re.M).group(1))
    listen = re.search(r"TRANSCRIBE_LISTEN=([^\s\\]+)", text).group(1)
    model_dir = re.search(r"TRANSCRIBE_MODEL_DIR=([^\s\\]+)", text).group(1)
    user = re.search(r"^USER (\d+):(\d+)", text, re.M)
    assert int(listen.rsplit(":", 1)[1]) == expose
    for _, d in DEPLOYMENTS:
        c = server_container(d)
        assert container_port(c)["containerPort"] == expose
        assert env_of(c)["TRANSCRIBE_MODEL_DIR"] == model_dir
        sc = d["spec"]["template"]["spec"]["securityContext"]
        assert (sc["runAsUser"], sc["runAsGroup"]) == (int(user.group(1)), int(user.group(2)))
    for stage in re.findall(r"^FROM \S+ AS (\S+)", text, re.M):
        assert stage in {"rust", "build-deps", "build", "runtime-base", "runtime"}, stage


def test_free_ports_are_distinct():
    # Picked one by one, ports of servers started together could repeat (25 of 20,000 groups
    # of six here); a fleet's replicas and nginx listeners are picked in one call.
    for _ in range(200):
        ports = free_ports(6)
        assert len(set(ports)) == 6, ports
