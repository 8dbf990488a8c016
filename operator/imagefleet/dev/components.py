"""Pinned versions of the control-plane binaries and how to build each from Go modules.

Some modules (Kubernetes, etcd) carry `replace` directives pointing into their own
repository, which `go install module@version` refuses. Those are built through a
small wrapper module of our own that pins each replaced module to its published
version (Kubernetes' staging modules are published as `v0.<minor>.<patch>`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
# Prometheus 3.16 (its Go module numbers v3.x as v0.3xx). Debian's prometheus package is
# built without Kubernetes service discovery, which the local fleet needs.
PROMETHEUS_VERSION = "v0.316.0"
HELM_VERSION = "v3.22.0"
KUBECONFORM_VERSION = "v0.8.0"
KUBE_SCORE_VERSION = "v1.20.0"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
DISTRIBUTION_VERSION = "v3.1.2"
# KEDA's operator and metrics API server (`imagefleet dev up --with-keda`; built only then).
KEDA_VERSION = "v2.21.1"
# KEDA v2.21.1's go.mod asks for go 1.27.4: the go command fetches that toolchain from the
# module proxy (golang.org/toolchain) into the module cache.
KEDA_TOOLCHAIN = "go1.27.4"
# Helm's Makefile sets its default Kubernetes version from the k8s.io/client-go it requires:
# v0.37.0 in helm v3.22.0's go.mod, hence 1.37 (`helm template` checks kubeVersion against it).
HELM_KUBERNETES_MAJOR, HELM_KUBERNETES_MINOR = "1", "37"


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


def _helm_ldflags(version: str) -> list[str]:
    """What helm's Makefile passes for a release build (less the git commit)."""
    flags = [f"-X helm.sh/helm/v3/internal/version.version={version}"]
    for package in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
        flags += [
            f"-X {package}.k8sVersionMajor={HELM_KUBERNETES_MAJOR}",
            f"-X {package}.k8sVersionMinor={HELM_KUBERNETES_MINOR}",
        ]
    return flags


# The simulated pods' IPs: loopback addresses, which answer on this machine without setup.
SIMULATED_POD_CIDR = "127.100.0.0/16"


@dataclass(frozen=True)
class SourcePatch:
    """One exact text replacement in a file of the module, applied with `go build -overlay`."""

    path: str  # inside the module
    old: str
    new: str
    why: str


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


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
    patches: tuple[SourcePatch, ...] = ()
    # Go build tags.
    tags: tuple[str, ...] = ()
    # Build in a copy of the module with its own go.mod and go.sum (its `replace` and `exclude`
    # directives kept); `binaries` are then package paths relative to the module's root.
    own_go_mod: bool = False
    # The Go toolchain (GOTOOLCHAIN) when the module needs a newer Go than the local one.
    toolchain: str = "local"

    @property
    def key(self) -> str:
        """The cache key: name and version, plus a short hash of each build input there is
        (the patches, the ldflags and build tags), so that changing any of them builds anew."""
        key = f"{self.name}-{self.version}"
        if self.patches:
            key += "-patched-" + _digest(repr([(p.path, p.old, p.new) for p in self.patches]))
        flags = [*self.ldflags(self.version), *(f"-tags={tag}" for tag in self.tags)]
        if self.toolchain != "local":
            flags.append(f"GOTOOLCHAIN={self.toolchain}")
        if flags:
            key += "-" + _digest("\n".join(flags))
        return key


# EndpointSlices (and Endpoints) refuse loopback addresses. The local fleet's pods have
# loopback IPs that really answer, so the API server built for it accepts exactly the
# simulated pod range, and nothing else changes. docs/local-fleet.md says so too.
_ALLOW_SIMULATED_POD_IPS = SourcePatch(
    path="pkg/apis/core/validation/validation.go",
    old="""	if ip.IsLoopback() {
		allErrs = append(allErrs, field.Invalid(fldPath, ipAddress, "may not be in the loopback range""",
    new=f"""	if _, simulated, _ := netutils.ParseCIDRSloppy("{SIMULATED_POD_CIDR}"); simulated.Contains(ip) {{
		return allErrs // imagefleet dev: the simulated pods' loopback IPs
	}}
	if ip.IsLoopback() {{
		allErrs = append(allErrs, field.Invalid(fldPath, ipAddress, "may not be in the loopback range""",
    why="EndpointSlices may list the simulated pods' loopback IPs",
)

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
    patches=(_ALLOW_SIMULATED_POD_IPS,),
)
ETCD = Component(
    name="etcd",
    module="go.etcd.io/etcd/server/v3",
    version=ETCD_VERSION,
    binaries={"etcd": "go.etcd.io/etcd/server/v3"},
    replaced_version=_same_version,
)
# kubectl matching the API server (the machine's own may be several minors off).
KUBECTL = replace(KUBERNETES, name="kubectl", binaries={"kubectl": "k8s.io/kubernetes/cmd/kubectl"}, patches=())
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
    ldflags=_helm_ldflags,
)

# Manifest linters the tests run over the chart, the examples and the operator's output.
KUBECONFORM = Component(
    name="kubeconform",
    module="github.com/yannh/kubeconform",
    version=KUBECONFORM_VERSION,
    binaries={"kubeconform": "github.com/yannh/kubeconform/cmd/kubeconform"},
)
KUBE_SCORE = Component(
    name="kube-score",
    module="github.com/zegl/kube-score",
    version=KUBE_SCORE_VERSION,
    binaries={"kube-score": "github.com/zegl/kube-score/cmd/kube-score"},
)
# The ServiceMonitor and PrometheusRule CRDs, to check the chart's monitoring objects against.
PROMETHEUS_OPERATOR_CRDS = Component(
    name="prometheus-operator-crds",
    module="github.com/prometheus-operator/prometheus-operator",
    version=PROMETHEUS_OPERATOR_VERSION,
    binaries={},
    module_files={
        "crds.yaml": (
            "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
            "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
        )
    },
)

PROMETHEUS = Component(
    name="prometheus",
    module="github.com/prometheus/prometheus",
    version=PROMETHEUS_VERSION,
    binaries={"prometheus": "github.com/prometheus/prometheus/cmd/prometheus"},
    ldflags=lambda version: [f"-X github.com/prometheus/common/version.Version=3.{int(version.split('.')[1]) - 300}.0"],
    # Static, file and Kubernetes service discovery only: a fraction of the build.
    tags=("remove_all_sd", "enable_kubernetes_sd"),
)

# The OCI registry (CNCF Distribution) the release tests push the images and the chart to.
REGISTRY = Component(
    name="registry",
    module="github.com/distribution/distribution/v3",
    version=DISTRIBUTION_VERSION,
    binaries={"registry": "github.com/distribution/distribution/v3/cmd/registry"},
)

# Built like upstream's Makefile (`go build` of cmd/operator and cmd/adapter with the version
# ldflag) in the module's own tree; its CRDs come from the module's config/crd/bases (the
# kustomize patches beside them only tighten ScaledJob and window validation).
KEDA = Component(
    name="keda",
    module="github.com/kedacore/keda/v2",
    version=KEDA_VERSION,
    binaries={"keda": "./cmd/operator", "keda-adapter": "./cmd/adapter"},
    ldflags=lambda version: [f"-X=github.com/kedacore/keda/v2/version.Version={version}"],
    module_files={"crds.yaml": ("config/crd/bases/*.yaml",)},
    own_go_mod=True,
    toolchain=KEDA_TOOLCHAIN,
)

CONTROL_PLANE = (ETCD, KUBERNETES, KWOK)
LINTERS = (KUBECONFORM, KUBE_SCORE, PROMETHEUS_OPERATOR_CRDS)
# The control plane and the client tools the tests and the demo use (KEDA only on demand).
ALL = (*CONTROL_PLANE, KUBECTL, HELM, PROMETHEUS, *LINTERS, REGISTRY)
