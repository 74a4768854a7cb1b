"""Distributed training as a Kubeflow Trainer ``TrainJob`` (trainer.kubeflow.org/v1alpha1).

``build_trainjob`` is a plain function (no cluster needed) so tests can validate its output against
the TrainJob CRD schema (``trainjob_schema.json``). ``run_trainjob`` creates it with the kubernetes
client and waits for a terminal condition. The job runs ``python -m components.train.remote``, which
fetches the dataset, runs ``netdiffusion train`` under ``torchrun`` (the ``torch-distributed``
runtime sets the ``PET_*`` variables torchrun reads) and uploads the model from node rank 0.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("netdiffusion.components.train")

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
RUNTIME = "torch-distributed"
TRAINER_JOB = "node"  # the replicated job (and container) name in the torch runtimes
PATCH_MANAGER = "netdiffusion.io/pipelines"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def trainjob_name(prefix: str, suffix: str) -> str:
    """An RFC 1035 label (the CRD requires it): lowercase, starts with a letter, <= 63 chars."""
    raw = re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{suffix}".lower()).strip("-")
    if not raw or not raw[0].isalpha():
        raw = "t-" + raw
    return raw[:63].rstrip("-")


def train_command(*, data_uri: str, model_uri: str, backend: str, config: str, seed: int) -> list[str]:
    """The training container's command: same library call as ``netdiffusion train``."""
    return ["python", "-m", "components.train.remote", "--data-uri", data_uri, "--model-uri", model_uri,
            "--backend", backend, "--config", config, "--seed", str(seed)]


def build_trainjob(
    name: str,
    *,
    image: str,
    command: Sequence[str],
    namespace: str | None = None,
    num_nodes: int = 1,
    gpus_per_node: int = 0,
    cpu: str = "4",
    memory: str = "16Gi",
    accelerator_resource: str = "nvidia.com/gpu",
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
    env: Mapping[str, str] | None = None,
    secret_env: Mapping[str, tuple[str, str]] | None = None,
    runtime: str = RUNTIME,
    labels: Mapping[str, str] | None = None,
    active_deadline_seconds: int | None = None,
) -> dict[str, Any]:
    """The TrainJob manifest: ``num_nodes`` x (cpu, memory, GPUs), placement via ``runtimePatches``.

    ``secret_env`` maps env var -> (secret name, key), e.g. S3 credentials.
    """
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
    if gpus_per_node < 0:
        raise ValueError(f"gpus_per_node must be >= 0, got {gpus_per_node}")
    resources: dict[str, dict[str, Any]] = {"requests": {"cpu": str(cpu), "memory": str(memory)},
                                            "limits": {"memory": str(memory)}}
    if gpus_per_node:
        resources["requests"][accelerator_resource] = int(gpus_per_node)
        resources["limits"][accelerator_resource] = int(gpus_per_node)
    env_list: list[dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in (env or {}).items()]
    env_list += [{"name": k, "valueFrom": {"secretKeyRef": {"name": s, "key": key}}}
                 for k, (s, key) in (secret_env or {}).items()]
    trainer: dict[str, Any] = {
        "image": image,
        "command": [str(c) for c in command],
        "numNodes": int(num_nodes),
        "resourcesPerNode": resources,
    }
    if env_list:
        trainer["env"] = env_list
    if gpus_per_node:
        trainer["numProcPerNode"] = int(gpus_per_node)
    spec: dict[str, Any] = {
        "runtimeRef": {"name": runtime, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
        "trainer": trainer,
    }
    pod_patch: dict[str, Any] = {}
    if node_selector:
        pod_patch["nodeSelector"] = {str(k): str(v) for k, v in node_selector.items()}
    if tolerations:
        pod_patch["tolerations"] = [dict(t) for t in tolerations]
    if pod_patch:
        spec["runtimePatches"] = [{
            "manager": PATCH_MANAGER,
            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
                "name": TRAINER_JOB,
                "template": {"spec": {"template": {"spec": pod_patch}}},
            }]}}},
        }]
    if active_deadline_seconds:
        spec["activeDeadlineSeconds"] = int(active_deadline_seconds)
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/part-of": "netdiffusion",
                                                         **(labels or {})}}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainJob", "metadata": metadata, "spec": spec}


def in_cluster() -> bool:
    """True inside a Kubernetes pod (service account token mounted and API host set)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (SERVICE_ACCOUNT_DIR / "token").exists()


def current_namespace(default: str = "kubeflow") -> str:
    path = SERVICE_ACCOUNT_DIR / "namespace"
    return path.read_text().strip() if path.exists() else default


def job_state(trainjob: Mapping[str, Any]) -> str | None:
    """``Complete``/``Failed`` once the TrainJob has a true terminal condition, else ``None``."""
    for cond in (trainjob.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and str(cond.get("status")) == "True":
            return str(cond["type"])
    return None


def run_trainjob(manifest: Mapping[str, Any], *, api: Any = None, poll_seconds: float = 15.0,
                 timeout_seconds: float = 24 * 3600) -> str:
    """Create the TrainJob and block until it completes; raise if it fails or times out.

    ``api`` is a ``kubernetes.client.CustomObjectsApi``; by default the in-cluster one (the pod's
    service account needs create/get on ``trainjobs.trainer.kubeflow.org``).
    """
    if api is None:
        from kubernetes import client, config

        config.load_incluster_config()
        api = client.CustomObjectsApi()
    namespace = manifest["metadata"].get("namespace") or current_namespace()
    name = manifest["metadata"]["name"]
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, dict(manifest))
    log.info("stage=train trainjob=%s/%s created (nodes=%s)", namespace, name,
             manifest["spec"]["trainer"]["numNodes"])
    deadline = time.monotonic() + timeout_seconds
    while True:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        state = job_state(obj)
        if state == "Complete":
            log.info("stage=train trainjob=%s complete", name)
            return state
        if state == "Failed":
            raise RuntimeError(f"TrainJob {namespace}/{name} failed: {obj.get('status')}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"TrainJob {namespace}/{name} did not finish within {timeout_seconds:.0f} s")
        time.sleep(poll_seconds)
