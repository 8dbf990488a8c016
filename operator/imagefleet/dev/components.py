"""Pinned versions of the control-plane binaries and how to build each from Go modules.

Some modules (Kubernetes, etcd) carry `replace` directives pointing into their own
repository, which `go install module@version` refuses. Those are built through a
small wrapper module of our own that pins each replaced module to its published
version (Kubernetes' staging modules are published as `v0.<minor>.<patch>`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"


def _kubernetes_staging_version(module_version: str) -> str:
    return "v0" + module_version[len("v1") :]


def _same_version(module_version: str) -> str:
    return module_version


def _kubernetes_ldflags(version: str) -> list[str]:
    major, minor = version.lstrip("v").split(".")[:2]
    package = "k8s.io/component-base/version"
    return [
        f"-X {package}.gitVersion={version}",
        f"-X {package}.gitMajor={major}",
        f"-X {package}.gitMinor={minor}",
        f"-X {package}.gitTreeState=clean",
    ]


@dataclass(frozen=True)
class Component:
    """A Go module version and the commands built from it."""

    name: str
    module: str
    version: str
    # binary name -> package path of its main package
    binaries: dict[str, str]
    # Set for modules with local `replace` directives: maps the module's version to
    # the version its replaced modules are published under.
    replaced_version: Callable[[str], str] | None = None
    ldflags: Callable[[str], list[str]] = field(default=lambda version: [])
    # Data files assembled from the module's own tree: output name -> globs inside the module.
    module_files: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


KUBERNETES = Component(
    name="kubernetes",
    module="k8s.io/kubernetes",
    version=KUBERNETES_VERSION,
    binaries={
        "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    },
    replaced_version=_kubernetes_staging_version,
    ldflags=_kubernetes_ldflags,
)
ETCD = Component(
    name="etcd",
    module="go.etcd.io/etcd/server/v3",
    version=ETCD_VERSION,
    binaries={"etcd": "go.etcd.io/etcd/server/v3"},
    replaced_version=_same_version,
)
# kubectl matching the API server (the machine's own may be several minors off).
KUBECTL = replace(KUBERNETES, name="kubectl", binaries={"kubectl": "k8s.io/kubernetes/cmd/kubectl"})
KWOK = Component(
    name="kwok",
    module="sigs.k8s.io/kwok",
    version=KWOK_VERSION,
    binaries={"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
    # KWOK's own stages: nodes become Ready and keep a heartbeat lease, pods become Ready.
    module_files={
        "stages.yaml": (
            "kustomize/stage/node/fast/*.yaml",
            "kustomize/stage/node/heartbeat-with-lease/*.yaml",
            "kustomize/stage/pod/fast/*.yaml",
        )
    },
)
HELM = Component(
    name="helm",
    module="helm.sh/helm/v3",
    version=HELM_VERSION,
    binaries={"helm": "helm.sh/helm/v3/cmd/helm"},
)

CONTROL_PLANE = (ETCD, KUBERNETES, KWOK)
# The control plane and the client tools the tests and the demo use.
ALL = (*CONTROL_PLANE, KUBECTL, HELM)
