"""Kubernetes settings shared by the pipelines: GPU placement and S3 credentials (kfp-kubernetes).

These only shape the compiled IR's platform spec; ``kfp.local`` ignores them.
"""

from kfp import kubernetes
from kfp.dsl import PipelineTask

# the Secret holding S3 credentials; keys = env var names, as in the Helm chart
S3_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}

DEFAULT_GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
DEFAULT_GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


# the S3 settings the Helm chart's ConfigMap holds (keys = env var names): without the endpoint a
# task would send s3:// reads and writes to AWS instead of the cluster's MinIO / SeaweedFS
S3_CONFIG_KEYS = ("NETDIFFUSION_S3_ENDPOINT", "MLFLOW_S3_ENDPOINT_URL", "AWS_DEFAULT_REGION", "NETDIFFUSION_S3_BUCKET")


def with_s3(task: PipelineTask, secret_name, config_map) -> PipelineTask:
    """Expose the S3 credentials Secret and the S3 settings of the chart's ConfigMap as env (both
    optional, so clusters with IRSA/workload identity, or on AWS itself, work without them)."""
    kubernetes.use_secret_as_env(task, secret_name=secret_name, secret_key_to_env=S3_SECRET_KEYS, optional=True)
    return kubernetes.use_config_map_as_env(task, config_map_name=config_map,
                                            config_map_key_to_env={k: k for k in S3_CONFIG_KEYS}, optional=True)


def on_gpu(task: PipelineTask, *, node_selector, tolerations, accelerator_type, accelerator_limit) -> PipelineTask:
    """Place a task on the GPU pool: node selector + tolerations (JSON parameters) + accelerator."""
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, tolerations)
    task.set_accelerator_type(accelerator_type)
    task.set_accelerator_limit(accelerator_limit)
    return task
