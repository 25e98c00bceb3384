"""``tunegate.yaml`` ``training:``: hyperparameter overrides, the "did it learn" threshold, and
how and where the training step is launched (launcher, processes, pool, Kubernetes pod)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    model_validator,
)

from pipelines.config.base import Strict


class KubernetesSettings(Strict):
    """``training.kubernetes``: the pod ``qlora_adapter`` runs in when ``training.backend`` is
    ``kubernetes``, in dagster-k8s' terms (``PipesK8sClient.run``: image, namespace,
    ``base_pod_spec``, ``base_pod_meta``). Raw Kubernetes fields (``resources``, ``tolerations``,
    ``volumes``, ``volume_mounts``, ``pod_spec``, ``pod_meta``) take the API's keys, snake_case or
    camelCase, and are checked against the ``kubernetes`` client's models before a pod is
    submitted. The pod sees the run's files at the same absolute paths as the Dagster process:
    mount the shared volume(s) at ``TUNEGATE_HOME`` (and at a local base-model folder)."""

    image: str = ""  # an image with this repo installed (`make setup`)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    namespace: str | None = None  # None: the current namespace, else "default" (dagster-k8s)
    working_dir: str | None = None  # where the repo lives in the image
    python: str = "python"  # the image's interpreter (runs pipelines.orchestration.axolotl_launcher)
    axolotl: str = "axolotl"  # the image's Axolotl CLI
    gpus: int | None = Field(None, ge=0)  # nvidia.com/gpu request = limit; None: training.processes
    resources: dict[str, Any] = Field(default_factory=dict)  # V1ResourceRequirements (cpu, memory, ...)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    volumes: list[dict[str, Any]] = Field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list)
    service_account_name: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    pod_spec: dict[str, Any] = Field(default_factory=dict)  # any other V1PodSpec field, merged under ours
    pod_meta: dict[str, Any] = Field(default_factory=dict)  # V1ObjectMeta: labels, annotations
    delete_pod_on_completion: bool = True


class TrainingSettings(Strict):
    """Run-level hyperparameters (merged over the templates in ``axolotl_configs/``) and how
    the training step is launched: which Axolotl launcher, how many data-parallel processes,
    in which Dagster concurrency pool, and on which backend."""

    overrides: dict[str, Any] = Field(default_factory=dict)
    min_eval_loss_drop: float = Field(0.10, ge=0, lt=1)
    timeout_s: int = 3600
    launcher: Literal["python", "accelerate", "torchrun"] = "python"  # axolotl train --launcher
    processes: int = Field(1, ge=1)  # data-parallel processes (one per GPU; gloo on CPU)
    pool: str = Field("accelerator", pattern=r"^[A-Za-z0-9_.-]+$")  # Dagster concurrency pool of qlora_adapter
    pool_limit: int = Field(1, ge=1)  # training steps running at once, across all runs
    backend: Literal["local", "kubernetes"] = "local"
    kubernetes: KubernetesSettings = KubernetesSettings()

    @model_validator(mode="after")
    def _launch_fits(self) -> TrainingSettings:
        if self.launcher == "python" and self.processes > 1:
            raise ValueError(
                f"`processes: {self.processes}` needs `launcher: torchrun` or `launcher: accelerate`; "
                "`python` runs one process"
            )
        if self.backend == "kubernetes" and not self.kubernetes.image:
            raise ValueError("`backend: kubernetes` needs `kubernetes.image` (an image with tunegate installed)")
        return self
