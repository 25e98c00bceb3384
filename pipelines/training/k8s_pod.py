"""The pod the training step runs in on Kubernetes, from ``tunegate.yaml`` ``training.kubernetes``.

Plain Python, no Dagster: ``assets/training.py`` hands what this builds to dagster-k8s'
``PipesK8sClient.run`` (image, command, namespace, env, ``base_pod_spec``, ``base_pod_meta``),
which adds the Pipes bootstrap variables, names the pod and turns it into a ``V1Pod``.
The container runs the same ``python -m pipelines.orchestration.axolotl_launcher`` as the local launch, with
the same Pipes extras, so logs and metadata stream back the same way (through pod logs).

The run directory, the generated YAML and the data are files the Dagster process wrote: the pod
must see them at the same absolute paths, so ``launch_paths_mounted`` refuses a spec whose
``volume_mounts`` do not cover them (a pod would otherwise fail minutes later, on a GPU node)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from pipelines.config.training import KubernetesSettings

GPU_RESOURCE = "nvidia.com/gpu"  # the NVIDIA device plugin's resource name
# What the generated config is validated against when it will train in a GPU pod rather than
# on this machine (Axolotl's ``gpu_capabilities()`` form): bf16-capable GPUs (Ampere or newer),
# as axolotl_configs/gpu.yaml asks for.
POD_GPU_CAPABILITIES = {"bf16": True, "fp8": False, "tf32": True, "compute_capability": "sm_80"}


class PodSpecError(ValueError):
    """``training.kubernetes`` cannot run the training step; the message names the key."""


@dataclass(frozen=True)
class PodLaunch:
    """Keyword arguments of ``PipesK8sClient.run`` besides ``context`` and ``extras``."""

    image: str
    command: list[str]
    namespace: str | None
    env: dict[str, str]
    base_pod_spec: dict[str, Any]
    base_pod_meta: dict[str, Any]
    delete_pod_on_completion: bool

    def run_kwargs(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "command": self.command,
            "namespace": self.namespace,
            "env": self.env,
            "base_pod_spec": self.base_pod_spec,
            "base_pod_meta": self.base_pod_meta,
            "delete_pod_on_completion": self.delete_pod_on_completion,
        }


def _container_resources(k8s: KubernetesSettings, processes: int) -> dict[str, Any]:
    """``resources`` with the GPU count as request and limit (extended resources need both
    equal); one GPU per data-parallel process unless ``gpus`` says otherwise."""
    resources = {key: dict(value) for key, value in k8s.resources.items()}
    gpus = pod_gpus(k8s, processes)
    if gpus:
        for key in ("requests", "limits"):
            resources.setdefault(key, {})[GPU_RESOURCE] = str(gpus)
    return resources


def pod_gpus(k8s: KubernetesSettings, processes: int) -> int:
    return processes if k8s.gpus is None else k8s.gpus


def pod_capabilities(k8s: KubernetesSettings, processes: int) -> tuple[dict, dict]:
    """Axolotl's ``(capabilities, env_capabilities)`` of the pod, for ``validate_config``."""
    import torch

    return (
        {**POD_GPU_CAPABILITIES, "n_gpu": max(pod_gpus(k8s, processes), 1)},
        {"torch_version": str(torch.__version__).split("+", maxsplit=1)[0]},
    )


def _mount_path(mount: dict[str, Any]) -> str:
    return str(mount.get("mount_path") or mount.get("mountPath") or "")


def launch_paths_mounted(k8s: KubernetesSettings, paths: list[str]) -> None:
    """Every path the pod must read or write lies under one of ``volume_mounts``."""
    mounts = [PurePosixPath(_mount_path(m)) for m in k8s.volume_mounts if _mount_path(m)]
    missing = [p for p in paths if not any(PurePosixPath(p).is_relative_to(m) for m in mounts)]
    if missing:
        raise PodSpecError(
            f"training.kubernetes.volume_mounts: the pod must see {missing} at the same paths as the Dagster "
            f"process (mounted now: {[str(m) for m in mounts] or 'nothing'}); mount the shared volume at "
            "TUNEGATE_HOME (and at a local base-model folder)"
        )


def pod_launch(k8s: KubernetesSettings, *, processes: int, launcher_module: str, paths: list[str]) -> PodLaunch:
    """What ``PipesK8sClient.run`` gets for one training step."""
    launch_paths_mounted(k8s, paths)
    if "containers" in k8s.pod_spec:
        raise PodSpecError(
            "training.kubernetes.pod_spec: `containers` is built by tunegate (image, command, "
            "resources, volume_mounts); set those keys under training.kubernetes instead"
        )
    container: dict[str, Any] = {
        "image_pull_policy": k8s.image_pull_policy,
        "resources": _container_resources(k8s, processes),
    }
    if k8s.volume_mounts:
        container["volume_mounts"] = [dict(m) for m in k8s.volume_mounts]
    if k8s.working_dir:
        container["working_dir"] = k8s.working_dir
    spec: dict[str, Any] = {**k8s.pod_spec, "containers": [container]}
    if k8s.node_selector:
        spec["node_selector"] = dict(k8s.node_selector)
    if k8s.tolerations:
        spec["tolerations"] = [dict(t) for t in k8s.tolerations]
    if k8s.volumes:
        spec["volumes"] = [dict(v) for v in k8s.volumes]
    if k8s.service_account_name:
        spec["service_account_name"] = k8s.service_account_name
    meta = {
        **k8s.pod_meta,
        "labels": {
            "app.kubernetes.io/part-of": "tunegate",
            "tunegate/step": "training",
            **k8s.pod_meta.get("labels", {}),
        },
    }
    return PodLaunch(
        image=k8s.image,
        command=[k8s.python, "-m", launcher_module],
        namespace=k8s.namespace,
        env=dict(k8s.env),
        base_pod_spec=spec,
        base_pod_meta=meta,
        delete_pod_on_completion=k8s.delete_pod_on_completion,
    )
