"""`imagefleet dev up`: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
KWOK as local processes on 127.0.0.1, with client-certificate authentication, RBAC, the
aggregation layer (front-proxy certificates) and an audit log, a simulated GPU fleet of KWOK
nodes, and the node agent that runs every runtime pod on those nodes as a real process at the
pod's loopback IP (imagefleet.nodeagent). KEDA joins on demand (`--with-keda`, `add_keda`).

Every process runs in its own session so that it outlives `up`; their PIDs and ports
are kept in `<state-dir>/state.json`, which `down` (and a later `up`, after a crash)
uses to stop exactly what was started.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..nodeagent import plan as agent_plan
from ..nodeagent.agent import agent_id
from . import build, components, keda, processes
from .errors import DevError
from .fleet import Fleet, load_fleet, node_manifests
from .pki import CertificateAuthority, KeyPair, write_service_account_keys

Progress = Callable[[str], None]

SERVICE_CIDR = "10.96.0.0/16"
# The user the API server's aggregation layer authenticates as to extension API servers.
FRONT_PROXY_CLIENT = "front-proxy-client"
CONTEXT = "imagefleet-dev"
PROMETHEUS_USER = "imagefleet-prometheus"
# What a Prometheus needs for Kubernetes service discovery of pods, and nothing more.
PROMETHEUS_RBAC = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": PROMETHEUS_USER},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": PROMETHEUS_USER},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": PROMETHEUS_USER},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": PROMETHEUS_USER}],
    },
]
# Writes only, minus the node heartbeats and leader leases every component renews:
# enough to count an operator's requests without a log that grows by itself.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}]},
        {"level": "None", "verbs": ["get", "list", "watch"]},
        {"level": "None", "users": ["system:kube-controller-manager", "system:kube-scheduler", "kwok"]},
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system", "system:nodes"]},
        {"level": "Metadata"},
    ],
}


@dataclass
class State:
    """What `up` started, persisted for `down`."""

    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    argv: dict[str, list[str]] = field(default_factory=dict)
    # Extra environment per process (KEDA's), so that `restart` starts it as it was.
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    kubeconfig: str = ""


class ControlPlane:
    def __init__(
        self,
        state_dir: Path,
        *,
        kubeconfig: Path | None = None,
        fleet: Fleet | None = None,
        apiserver_port: int = 0,
        node_agent: bool = True,
        emulation_speedup: float = 1.0,
        with_keda: bool = False,
        hpa_sync_seconds: float = 15.0,
    ) -> None:
        """`hpa_sync_seconds`: kube-controller-manager's --horizontal-pod-autoscaler-sync-period
        (its default; the time-compressed benchmarks divide it by their speed-up)."""
        self.state_dir = state_dir
        self.kubeconfig = kubeconfig or state_dir / "kubeconfig"
        # Read-only pod discovery for a Prometheus (kubernetes_sd_configs, role pod).
        self.prometheus_kubeconfig = state_dir / "prometheus.kubeconfig"
        self._fleet = fleet
        self.apiserver_port = apiserver_port
        self.node_agent = node_agent
        self.emulation_speedup = emulation_speedup
        self.with_keda = with_keda
        self.hpa_sync_seconds = hpa_sync_seconds
        self.pki_dir = state_dir / "pki"
        self.logs_dir = state_dir / "logs"
        self.audit_log = self.logs_dir / "audit.log"
        self._state_file = state_dir / "state.json"
        self._state = State()

    # -- public -------------------------------------------------------------

    def up(self, progress: Progress = print) -> Path:
        """Start everything, wait until the API server and every node are ready; return the kubeconfig."""
        self.clean_stale(progress)
        wanted = (*components.CONTROL_PLANE, *([components.KEDA] if self.with_keda else []))
        binaries = build.ensure_built(wanted, progress)
        try:
            self._start_all(binaries, progress)
            if self.with_keda:
                self.add_keda(progress)
        except BaseException:
            self.down()
            raise
        return self.kubeconfig

    def down(self) -> None:
        """Stop every process `up` started and remove the state (logs are kept)."""
        state = self._load_state()
        for name in reversed(list(state.pids)):
            processes.stop(state.pids[name])
        # Runtimes outlive an agent that was killed (a new one adopts them): stop those too.
        for pids in agent_processes(self.state_dir).values():
            for pid in pids:
                processes.stop(pid)
        if state.kubeconfig and Path(state.kubeconfig) != self.kubeconfig:
            Path(state.kubeconfig).unlink(missing_ok=True)
        self.kubeconfig.unlink(missing_ok=True)
        for path in self.state_dir.iterdir() if self.state_dir.is_dir() else ():
            if path == self.logs_dir:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        self._state = State()

    def clean_stale(self, progress: Progress = print) -> None:
        """Stop what an earlier, crashed `up` left behind in this state directory."""
        state = self._load_state()
        if any(processes.alive(pid) for pid in state.pids.values()) or self._state_file.exists():
            progress(f"cleaning up an earlier control plane in {self.state_dir}")
            self.down()
        shutil.rmtree(self.logs_dir, ignore_errors=True)

    @property
    def pids(self) -> dict[str, int]:
        return dict(self._load_state().pids)

    @property
    def ports(self) -> dict[str, int]:
        return dict(self._load_state().ports)

    def log_files(self) -> list[Path]:
        return sorted(self.logs_dir.glob("*.log")) if self.logs_dir.is_dir() else []

    # -- steps ----------------------------------------------------------------

    def _start_all(self, binaries: dict[str, Path], progress: Progress) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        ports = {
            "kube-apiserver": processes.claim_port(self.apiserver_port, "kube-apiserver", "--apiserver-port"),
            "etcd": processes.free_port(),
            "etcd-peer": processes.free_port(),
            "kube-controller-manager": processes.free_port(),
            "kube-scheduler": processes.free_port(),
            "kwok": processes.free_port(),
        }
        self._state = State(ports=ports, kubeconfig=str(self.kubeconfig))
        self._save_state()
        pki = self._write_pki()

        progress("starting etcd")
        self._start("etcd", self._etcd_argv(binaries["etcd"], ports))
        processes.wait_for(
            lambda: self._running() and _http_ok(f"http://{processes.HOST}:{ports['etcd']}/health"),
            30,
            "etcd to be healthy",
        )
        progress("starting kube-apiserver")
        self._start("kube-apiserver", self._apiserver_argv(binaries["kube-apiserver"], ports, pki))
        context = _client_tls(pki["ca"], pki["admin"])
        server = f"https://{processes.HOST}:{ports['kube-apiserver']}"
        processes.wait_for(
            lambda: self._running() and _http_ok(f"{server}/readyz", context),
            90,
            "kube-apiserver /readyz (see its log)",
        )
        for name in ("kube-controller-manager", "kube-scheduler", "kwok", "node-agent"):
            self._write_kubeconfig(self.state_dir / f"{name}.kubeconfig", server, pki["ca"], pki[name])
        self._write_kubeconfig(self.kubeconfig, server, pki["ca"], pki["admin"])
        self._write_kubeconfig(self.prometheus_kubeconfig, server, pki["ca"], pki["prometheus"])

        progress("starting kube-controller-manager, kube-scheduler and KWOK")
        self._start("kube-controller-manager", self._controller_manager_argv(binaries, ports, pki))
        self._start("kube-scheduler", self._scheduler_argv(binaries, ports))
        self._start("kwok", self._kwok_argv(binaries, ports))

        nodes = node_manifests(self._fleet or load_fleet())
        progress(f"creating {len(nodes)} simulated nodes")
        self._create_nodes(nodes)
        self._create_objects(PROMETHEUS_RBAC)
        if self.node_agent:
            progress("starting the node agent (one runtime process per runtime pod, at the pod's IP)")
            self.start_node_agent()

    def start_node_agent(self) -> None:
        """Start the node agent (again, after it died: it adopts the runtimes that still run)."""
        self._start("node-agent", self._node_agent_argv())

    def restart(self, name: str) -> None:
        """Stop one component (SIGTERM, then SIGKILL) and start it again as it was started.

        For fault tests: the API server comes back on its port, etcd on its data directory.
        """
        self._state = self._load_state()
        if name not in self._state.argv:
            raise DevError(f"no component {name!r} was started here (started: {', '.join(self._state.argv)})")
        processes.stop(self._state.pids[name])
        self._start(name, self._state.argv[name], self._state.env.get(name))

    def add_keda(self, progress: Progress = print) -> None:
        """Start KEDA's operator and metrics API server on this running control plane (built
        on first use), install KEDA's CRDs and register external.metrics.k8s.io; return once
        the API server serves that API through the metrics server."""
        binaries = build.ensure_built([components.KEDA], progress)
        self.remove_keda()  # what an earlier, crashed add left behind
        ca = CertificateAuthority.load(self.pki_dir)
        cert_dir = keda.write_certs(ca, self.state_dir / "keda-certs")
        kubeconfig = self.state_dir / "keda.kubeconfig"
        server = f"https://{processes.HOST}:{self._state.ports['kube-apiserver']}"
        self._write_kubeconfig(kubeconfig, server, ca.pair, ca.issue("keda", "keda", ("system:masters",)))
        ports = {name: processes.free_port() for name in (*keda.OPERATOR_PORTS, *keda.METRICS_SERVER_PORTS)}
        self._state.ports.update(ports)
        self._save_state()

        progress(f"installing KEDA {components.KEDA_VERSION}'s CRDs")
        crds = [doc for doc in yaml.safe_load_all(binaries["keda"].with_name("crds.yaml").read_text()) if doc]
        self._create_missing(crds)
        self._wait_established([crd["metadata"]["name"] for crd in crds])
        progress("starting KEDA's operator and metrics API server")
        environment = keda.environment(kubeconfig)
        self._start(keda.OPERATOR, keda.operator_argv(binaries["keda"], cert_dir, ports), environment)
        health = f"http://{processes.HOST}:{ports[keda.OPERATOR_PORTS[2]]}/readyz"
        processes.wait_for(lambda: self._running() and _http_ok(health), 60, "KEDA's operator /readyz (see its log)")
        self._start(
            keda.METRICS_SERVER,
            keda.metrics_server_argv(binaries["keda-adapter"], cert_dir, kubeconfig, ports),
            environment,
        )
        self._create_missing(keda.api_objects(ca.pair.cert, ports[keda.METRICS_SERVER_PORTS[0]]))
        context = _client_tls(ca.pair, KeyPair(self.pki_dir / "admin.crt", self.pki_dir / "admin.key"))
        processes.wait_for(
            lambda: self._running() and _http_ok(f"{server}/apis/{keda.API_GROUP}/{keda.API_VERSION}", context),
            90,
            f"the API server to serve {keda.API_SERVICE} through KEDA's metrics server (see its log)",
        )

    def remove_keda(self) -> None:
        """Stop KEDA's processes and unregister its API (its CRDs and namespace stay)."""
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException

        self._state = self._load_state()
        for name in (keda.METRICS_SERVER, keda.OPERATOR):
            if name in self._state.pids:
                processes.stop(self._state.pids.pop(name))
                self._state.argv.pop(name, None)
                self._state.env.pop(name, None)
        self._save_state()
        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        try:
            deletions = (
                lambda: client.ApiregistrationV1Api(api).delete_api_service(keda.API_SERVICE),
                lambda: client.CoreV1Api(api).delete_namespaced_service(keda.METRICS_SERVER, keda.NAMESPACE),
            )
            for delete in deletions:
                try:
                    delete()
                except ApiException as error:
                    if error.status != 404:
                        raise
        finally:
            api.close()

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        process = processes.start(argv, self.logs_dir / f"{name}.log", env)
        self._state.pids[name] = process.pid
        self._state.argv[name] = argv
        if env is not None:
            self._state.env[name] = env
        self._save_state()

    def _running(self) -> bool:
        """True while every started process lives; a DevError naming the first that exited."""
        for name, pid in self._state.pids.items():
            if not processes.alive(pid):
                log = self.logs_dir / f"{name}.log"
                lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
                last = lines[-1].strip()[:300] if lines else "no output"
                raise DevError(f"{name} exited during start-up: {last} (log: {log})")
        return True

    def _write_pki(self) -> dict[str, KeyPair]:
        ca = CertificateAuthority(self.pki_dir)
        # The aggregation layer's own CA, as kubeadm keeps it apart: a certificate from the
        # cluster CA must not pass for the API server forwarding a request to an extension.
        front_proxy = CertificateAuthority(self.pki_dir, "front-proxy-ca", "imagefleet-dev-front-proxy-ca")
        return {
            "ca": ca.pair,
            "front-proxy-ca": front_proxy.pair,
            "front-proxy-client": front_proxy.issue("front-proxy-client", FRONT_PROXY_CLIENT),
            "sa": write_service_account_keys(self.pki_dir),
            "apiserver": ca.issue(
                "apiserver",
                "kube-apiserver",
                server_names=(
                    processes.HOST, "localhost", "10.96.0.1", "kubernetes", "kubernetes.default",
                    "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
                ),
            ),
            "admin": ca.issue("admin", "imagefleet-admin", ("system:masters",)),
            "kube-controller-manager": ca.issue("kube-controller-manager", "system:kube-controller-manager"),
            "kube-scheduler": ca.issue("kube-scheduler", "system:kube-scheduler"),
            # KWOK plays every kubelet of the fleet; the node agent plays it for runtime pods.
            "kwok": ca.issue("kwok", "kwok", ("system:masters",)),
            "node-agent": ca.issue("node-agent", "imagefleet-node-agent", ("system:masters",)),
            "prometheus": ca.issue("prometheus", PROMETHEUS_USER),
        }

    def _etcd_argv(self, etcd: Path, ports: dict[str, int]) -> list[str]:
        client = f"http://{processes.HOST}:{ports['etcd']}"
        peer = f"http://{processes.HOST}:{ports['etcd-peer']}"
        return [
            str(etcd),
            "--name=default",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_argv(self, binary: Path, ports: dict[str, int], pki: dict[str, KeyPair]) -> list[str]:
        policy = self.state_dir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        return [
            str(binary),
            f"--etcd-servers=http://{processes.HOST}:{ports['etcd']}",
            f"--bind-address={processes.HOST}",
            f"--advertise-address={processes.HOST}",
            f"--secure-port={ports['kube-apiserver']}",
            f"--tls-cert-file={pki['apiserver'].cert}",
            f"--tls-private-key-file={pki['apiserver'].key}",
            f"--client-ca-file={pki['ca'].cert}",
            "--authorization-mode=Node,RBAC",
            "--anonymous-auth=false",
            f"--service-account-key-file={pki['sa'].cert}",
            f"--service-account-signing-key-file={pki['sa'].key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The aggregation layer (extension API servers such as KEDA's metrics server).
            f"--requestheader-client-ca-file={pki['front-proxy-ca'].cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki['front-proxy-client'].cert}",
            f"--proxy-client-key-file={pki['front-proxy-client'].key}",
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--profiling=false",
            "--v=1",
        ]

    def _controller_manager_argv(
        self, binaries: dict[str, Path], ports: dict[str, int], pki: dict[str, KeyPair]
    ) -> list[str]:
        kubeconfig = self.state_dir / "kube-controller-manager.kubeconfig"
        return [
            str(binaries["kube-controller-manager"]),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={processes.HOST}",
            f"--secure-port={ports['kube-controller-manager']}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki['sa'].key}",
            f"--root-ca-file={pki['ca'].cert}",
            f"--cluster-signing-cert-file={pki['ca'].cert}",
            f"--cluster-signing-key-file={pki['ca'].key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--horizontal-pod-autoscaler-sync-period={self.hpa_sync_seconds:g}s",
            "--v=1",
        ]

    def _scheduler_argv(self, binaries: dict[str, Path], ports: dict[str, int]) -> list[str]:
        kubeconfig = self.state_dir / "kube-scheduler.kubeconfig"
        return [
            str(binaries["kube-scheduler"]),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={processes.HOST}",
            f"--secure-port={ports['kube-scheduler']}",
            "--leader-elect=false",
            "--v=1",
        ]

    def _node_agent_argv(self) -> list[str]:
        return [
            sys.executable, "-m", "imagefleet", "dev", "agent",
            f"--state-dir={self.state_dir}",
            f"--kubeconfig={self.state_dir / 'node-agent.kubeconfig'}",
            f"--emulation-speedup={self.emulation_speedup!r}",
        ]

    def _kwok_argv(self, binaries: dict[str, Path], ports: dict[str, int]) -> list[str]:
        # With the node agent, KWOK leaves runtime pods (their status and deletion) to it.
        agent_pods = [f"--disregard-status-with-label-selector={agent_plan.RUNTIME_SELECTOR}"] if self.node_agent else []
        return [
            str(binaries["kwok"]),
            *agent_pods,
            f"--config={binaries['kwok'].with_name('stages.yaml')}",
            "--node-lease-duration-seconds=40",
            f"--kubeconfig={self.state_dir / 'kwok.kubeconfig'}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--cidr=10.0.0.1/16",
            "--node-ip=10.0.0.1",
            f"--server-address={processes.HOST}:{ports['kwok']}",
        ]

    def _write_kubeconfig(self, path: Path, server: str, ca: KeyPair, user: KeyPair) -> None:
        def b64(file: Path) -> str:
            return base64.b64encode(file.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": CONTEXT, "cluster": {"server": server, "certificate-authority-data": b64(ca.cert)}}
            ],
            "users": [
                {
                    "name": CONTEXT,
                    "user": {"client-certificate-data": b64(user.cert), "client-key-data": b64(user.key)},
                }
            ],
            "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT}}],
            "current-context": CONTEXT,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def _create_objects(self, manifests: list[dict[str, Any]]) -> None:
        from kubernetes import config, utils

        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        try:
            utils.create_from_yaml(api, yaml_objects=manifests)
        finally:
            api.close()

    def _create_missing(self, manifests: list[dict[str, Any]]) -> None:
        """Create each object unless it exists already (KEDA added again to the same cluster)."""
        from kubernetes import config, utils

        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        try:
            for manifest in manifests:
                try:
                    utils.create_from_dict(api, manifest)
                except utils.FailToCreateError as error:
                    if any(failure.status != 409 for failure in error.api_exceptions):
                        raise
        finally:
            api.close()

    def _wait_established(self, names: list[str]) -> None:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        extensions = client.ApiextensionsV1Api(api)

        def established(name: str) -> bool:
            conditions = extensions.read_custom_resource_definition(name).status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        try:
            processes.wait_for(lambda: all(established(name) for name in names), 30, "KEDA's CRDs to be established")
        finally:
            api.close()

    def _create_nodes(self, nodes: list[dict[str, Any]]) -> None:
        from kubernetes import client, config

        api = client.CoreV1Api(config.new_client_from_config(config_file=str(self.kubeconfig)))
        for node in nodes:
            api.create_node(node)

        def all_ready() -> bool:
            self._running()
            listed = api.list_node(label_selector="imagefleet.io/simulated=true").items
            return len(listed) == len(nodes) and all(
                any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
                for n in listed
            )

        processes.wait_for(all_ready, 60, "the simulated nodes to become Ready (see kwok.log)")

    # -- state ----------------------------------------------------------------

    def _load_state(self) -> State:
        if not self._state_file.exists():
            return self._state
        try:
            return State(**json.loads(self._state_file.read_text()))
        except (ValueError, TypeError):
            return State()

    def _save_state(self) -> None:
        self._state_file.write_text(json.dumps(asdict(self._state), indent=2))


def agent_processes(state_dir: Path) -> dict[str, list[int]]:
    """Runtime processes the node agent of the control plane in `state_dir` started, by pod UID."""
    from ..nodeagent.processes import find

    return find(agent_id(state_dir))


def _client_tls(ca: KeyPair, user: KeyPair) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.cert))
    context.load_cert_chain(str(user.cert), str(user.key))
    return context


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=context) as response:
        return bool(response.status == 200)


__all__ = ["ControlPlane", "DevError"]
