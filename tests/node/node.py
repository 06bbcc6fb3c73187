"""A real node on this machine: the control plane, containerd and one kubelet, all on loopback.

``start_node`` starts etcd and kube-apiserver (as ``tests/e2e/conftest.py`` does, plus what a node needs: ``Node``
authorization, ``NodeRestriction``, a static token for ``system:node:localhost``), then containerd and the
kubelet (``tests/node/build.sh``) inside one private mount namespace (``unshare --mount --propagation
private``), so every mount they make dies with it; the images ``tests/node/images.sh`` built are imported into
containerd. ``Node.stop`` deletes the Pods, stops everything in the reverse order (kube-apiserver before etcd)
and puts the host back as it found it (``HostState``): the sysctls the kubelet sets, the cgroups it and
containerd create, any iptables chain that appeared (the last node running puts back what nodes share).

Loopback only: the node is named ``localhost`` and the API server reaches the kubelet by that name
(``--kubelet-preferred-address-types=Hostname``); the kubelet refuses a loopback node IP, so its InternalIP is
this machine's own address, which nothing here dials. Pods run with ``hostNetwork`` on 127.0.0.1 and distinct
free ports, their probes name ``host: 127.0.0.1``, and no CNI network is configured.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.conftest import ADMIN_TOKEN, ISSUER, ApiError, ControlPlane, _start, _stop, binaries, wait_until
from tests.tls_material import free_port
from tests.tools import missing

HERE = Path(__file__).parent
NODE_NAME = "localhost"
"""The node's name, and the host name the API server dials for exec and logs: it resolves to loopback."""
TAG = "node-e2e"
IMAGES = ("pause", "token-projector", "api-and-data-store")
"""The images ``tests/node/images.sh`` saves, each ``localhost/NAME:node-e2e``."""
SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "net/ipv4/ip_forward")
"""What the kubelet (and a CNI bridge) change on the host, under /proc/sys: put back at teardown."""
IPTABLES = ("iptables", "ip6tables")
KUBE_CHAINS = ("KUBE-", "CNI-")
CGROUP_PREFIX = "token-projector-node-"
NODE_TOKEN = "node-e2e-" + uuid.uuid4().hex


def image(name: str) -> str:
    return f"localhost/{name}:{TAG}"


def parts() -> dict[str, Path]:
    """Where the kubelet, containerd and the images are (``build.sh --where``), or skip/fail saying how to build."""
    if os.geteuid() != 0:
        missing("a node needs root (containerd, mounts, cgroups); CI runs as root")
    where = subprocess.run([str(HERE / "build.sh"), "--where"], capture_output=True, text=True, check=True)
    found = {key: Path(value) for key, _, value in (line.partition("=") for line in where.stdout.splitlines())}
    wanted = [
        found["kubelet"] / "kubelet",
        *(found["containerd"] / name for name in ("containerd", "containerd-shim-runc-v2", "ctr")),
        *(found["images"] / f"{name}.tar" for name in IMAGES),
    ]
    absent = [str(path) for path in wanted if not path.exists()]
    if absent:
        missing(f"the node's parts are not built ({', '.join(absent)}): run `make node-deps images`")
    for tool in ("runc", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed: run `make node-deps`")
    return found


@dataclass(frozen=True)
class HostPaths:
    """Where the host's state lives; a unit test points these at a temporary folder."""

    proc_sys: Path = Path("/proc/sys")
    cgroups: Path = Path("/sys/fs/cgroup")
    record: Path = Path("/run/token-projector-node.json")
    """The shared record: the host's original sysctls and iptables chains, and every node running (its holder)."""
    lock: Path = Path("/run/token-projector-node.lock")
    container_logs: Path = Path("/var/log/containers")
    """Where the kubelet links each container's log, whatever its root dir."""
    iptables: tuple[str, ...] = IPTABLES


@dataclass
class HostState:
    """What a node changes on this host, read before it starts, so that teardown can put it back.

    Two test sessions on one machine may each run a node: each kubelet has its own cgroup root
    (``cgroup_root``), and the host's original sysctls and iptables chains are kept in one record shared by every
    node running (``HostPaths.record``), put back by the last to stop. A session killed before its teardown
    (SIGKILL, a CI timeout) leaves its holder in the record, dead: the next node to start puts the recorded
    originals back and removes the dead node's cgroup roots before it changes anything itself.
    """

    cgroup_root: str
    """This node's cgroup root, the parent of its ``kubepods``, in every hierarchy: no other kubelet touches it."""
    workdir: Path
    paths: HostPaths = field(default_factory=HostPaths)
    holder: int = field(default_factory=os.getpid)
    """The process whose node this is: the record names it, with its start time, while the node may run."""

    @classmethod
    def read(cls, workdir: Path, *, paths: HostPaths | None = None, holder: int | None = None) -> HostState:
        """Record this node as a holder and make its cgroup roots; on any failure, undo what was done and raise."""
        state = cls(
            CGROUP_PREFIX + uuid.uuid4().hex[:8], workdir, paths or HostPaths(), holder if holder else os.getpid()
        )
        _hold(state)
        try:
            for hierarchy in _hierarchies(state.paths):
                folder = hierarchy / state.cgroup_root
                folder.mkdir()
                for name in ("cpuset.cpus", "cpuset.mems"):  # a new cpuset is empty until given its parent's
                    if (hierarchy / name).exists():
                        (folder / name).write_text((hierarchy / name).read_text())
        except BaseException as error:
            left = state.restore()
            if left:
                error.add_note(f"the host was not fully restored: {left}")
            raise
        return state

    def restore(self) -> list[str]:
        """Undo what this node did; returns what could not be undone (empty: the host is as it was)."""
        left = _remove_cgroup_root(self.paths, self.cgroup_root)
        logs = self.paths.container_logs
        for link in logs.iterdir() if logs.is_dir() else ():
            if link.is_symlink() and Path(os.readlink(link)).is_relative_to(self.workdir):
                link.unlink(missing_ok=True)
        return left + _release(self)


def _hierarchies(paths: HostPaths) -> list[Path]:
    return [path for path in paths.cgroups.iterdir() if path.is_dir() and (path / "cgroup.procs").exists()]


def _remove_cgroup_root(paths: HostPaths, cgroup_root: str) -> list[str]:
    """Remove ``cgroup_root`` and every cgroup under it, deepest first; returns those still there (busy)."""
    left: list[str] = []
    for hierarchy in _hierarchies(paths):
        root = hierarchy / cgroup_root
        if not root.is_dir():
            continue
        for cgroup in sorted(
            [root, *(p for p in root.rglob("*") if p.is_dir())], key=lambda p: len(p.parts), reverse=True
        ):
            try:
                cgroup.rmdir()
            except FileNotFoundError:
                pass
            except OSError as error:
                left.append(f"cgroup {cgroup}: {error.strerror}")
    return left


def _started_at(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), or None if it is gone: a reused pid differs here."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _alive(holder: dict[str, Any]) -> bool:
    started = _started_at(holder["pid"])
    return started is not None and started == holder["started"]


@contextlib.contextmanager
def _record(paths: HostPaths) -> Iterator[dict[str, Any]]:
    """The shared record under its lock, with the holders still alive; written back (or removed) after."""
    with paths.lock.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record: dict[str, Any] = json.loads(paths.record.read_text()) if paths.record.exists() else {}
        # A record from before holders named their start time and cgroup root (a bare pid) counts as alive while
        # its pid exists: its cgroups are then never reaped.
        record["holders"] = [
            holder
            for holder in (
                h if isinstance(h, dict) else {"pid": h, "started": _started_at(h)} for h in record.get("holders", [])
            )
            if _alive(holder)
        ]
        yield record
        if record["holders"]:
            written = paths.record.with_name(paths.record.name + ".new")
            written.write_text(json.dumps(record))
            os.replace(written, paths.record)  # a run killed mid-write leaves the old record whole
        else:
            paths.record.unlink(missing_ok=True)


def _hold(state: HostState) -> None:
    """Make ``state`` a holder; first, if no node runs, put back what a killed node left, or read the originals."""
    paths = state.paths
    with _record(paths) as record:
        if not record["holders"]:
            if "originals" in record:  # every holder died before its teardown: these are still the host's own
                _write_sysctls(paths, record["originals"])
            else:
                record["originals"] = {name: (paths.proc_sys / name).read_text().strip() for name in SYSCTLS}
            if "chains" in record:
                _remove_new_chains(paths, record["chains"])
            else:
                record["chains"] = {f"{command} {table}": sorted(c) for (command, table), c in _chains(paths).items()}
        held = {str(h.get("cgroup_root")) for h in record["holders"]}
        if all("cgroup_root" in h for h in record["holders"]):  # else a live node's root is unknown: reap nothing
            for hierarchy in _hierarchies(paths):
                for leftover in {p.name for p in hierarchy.glob(CGROUP_PREFIX + "*") if p.is_dir()} - held:
                    _remove_cgroup_root(paths, leftover)  # still busy: the dead node's processes live on
        record["holders"].append(
            {"pid": state.holder, "started": _started_at(state.holder), "cgroup_root": state.cgroup_root}
        )


def _release(state: HostState) -> list[str]:
    """Remove ``state`` from the holders; the last to leave puts the sysctls back and removes the new chains."""
    paths = state.paths
    with _record(paths) as record:
        record["holders"] = [h for h in record["holders"] if h.get("cgroup_root") != state.cgroup_root]
        if record["holders"]:
            return []
        _write_sysctls(paths, record.get("originals", {}))
        return _remove_new_chains(paths, record.get("chains"))


def _write_sysctls(paths: HostPaths, values: dict[str, str]) -> None:
    for name, value in values.items():
        path = paths.proc_sys / name
        if path.read_text().strip() != value:
            path.write_text(value)


def _chains(paths: HostPaths) -> dict[tuple[str, str], set[str]]:
    chains: dict[tuple[str, str], set[str]] = {}
    for command in paths.iptables:
        if shutil.which(command) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            listed = subprocess.run([command, "-t", table, "-S"], capture_output=True, text=True, check=False)
            chains[(command, table)] = {
                line.split()[1]
                for line in listed.stdout.splitlines()
                if line.startswith("-N ") and len(line.split()) > 1
            }
    return chains


def _remove_new_chains(paths: HostPaths, originals: dict[str, list[str]] | None) -> list[str]:
    """Flush and delete every ``KUBE-``/``CNI-`` chain not in ``originals``; returns those that stay.

    Only with no node running: a chain that appeared may be another running node's.
    """
    if originals is None:  # a record from before chains were kept: which chains are the host's is unknown
        return []
    left: list[str] = []
    for (command, table), chains in _chains(paths).items():
        new = sorted(c for c in chains - set(originals.get(f"{command} {table}", [])) if c.startswith(KUBE_CHAINS))
        for chain in new:
            subprocess.run([command, "-t", table, "-F", chain], capture_output=True, check=False)
        for chain in new:
            if subprocess.run([command, "-t", table, "-X", chain], capture_output=True, check=False).returncode:
                left.append(f"{command} -t {table} chain {chain}")
    return left


@dataclass
class Node:
    """The control plane plus one kubelet and containerd: Pods with ``nodeName: localhost`` really run."""

    control_plane: ControlPlane
    workdir: Path
    host: HostState
    namespace_holder: subprocess.Popen[bytes]
    kubelet: subprocess.Popen[bytes] | None = None
    containerd: subprocess.Popen[bytes] | None = None
    kubelet_port: int = 0
    socket: Path | None = None
    """containerd's socket."""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    """etcd and kube-apiserver, in start order."""

    # --- what the tests use -------------------------------------------------------------------------------------
    def namespace(self) -> str:
        """A fresh namespace with ServiceAccount ``app`` and ``kube-root-ca.crt`` (no controller-manager makes them)."""
        name = self.control_plane.namespace()
        ca = (self.control_plane.workdir / "apiserver.crt").read_text()
        self.control_plane.request(
            "POST",
            f"/api/v1/namespaces/{name}/configmaps",
            body={"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": ca}},
        )
        return name

    def run_pod(self, namespace: str, pod: dict[str, Any], *, timeout: float = 120) -> dict[str, Any]:
        """Create ``pod`` on this node and wait until it is Ready; returns it as the API server then has it."""
        pod["spec"]["nodeName"] = NODE_NAME
        created = self.control_plane.create_pod(namespace, pod)
        return self.wait_ready(namespace, created["metadata"]["name"], timeout=timeout)

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self.control_plane.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")

    def wait_ready(self, namespace: str, name: str, *, timeout: float = 120) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def ready() -> bool:
            found.update(self.pod(namespace, name))
            conditions = found.get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        try:
            wait_until(ready, what=f"Pod {namespace}/{name} Ready", timeout=timeout, process=self.kubelet)
        except AssertionError as error:
            raise AssertionError(f"{error}\nstatus: {json.dumps(found.get('status'))}\n{self.log_tail()}") from None
        return found

    def exec(self, namespace: str, pod: str, container: str, *command: str) -> subprocess.CompletedProcess[str]:
        """``kubectl exec`` in the container: through the API server and the kubelet, as a person does it."""
        return self.control_plane.kubectl("exec", "-n", namespace, pod, "-c", container, "--", *command)

    def read_in(self, namespace: str, pod: str, container: str, script: str) -> str:
        """What a Python ``script`` prints, run in the container as its own user (the images have Python)."""
        result = self.exec(namespace, pod, container, "python", "-c", script)
        assert result.returncode == 0, f"exec in {namespace}/{pod}/{container} failed: {result.stderr[-500:]}"
        return result.stdout

    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.control_plane.request(
                "DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body={"gracePeriodSeconds": 1}
            )
        except ApiError as error:
            if error.status != 404:
                raise

    def log_tail(self, lines: int = 20) -> str:
        text = (
            (self.workdir / "kubelet.log").read_text(errors="replace")
            if (self.workdir / "kubelet.log").exists()
            else ""
        )
        return "kubelet log:\n" + "\n".join(text.splitlines()[-lines:])

    # --- teardown -----------------------------------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Stop everything this node started and restore the host; returns what could not be restored."""
        left: list[str] = []
        # Each step runs even if one before it fails (an exit stack runs its callbacks last-registered first).
        with contextlib.ExitStack() as then:
            then.callback(lambda: left.extend(self.host.restore()))
            for process in self.processes:  # kube-apiserver before etcd
                then.callback(_stop, process)
            # Each container's shim outlives containerd; every process left in the node's mount namespace is ours.
            then.callback(_stop_namespace, self.namespace_holder)
            for started in (self.containerd, self.kubelet):
                if started is not None:
                    then.callback(_stop, started)
            if self.kubelet is not None and self.kubelet.poll() is None:
                _delete_every_pod(self)
        return left


def _delete_every_pod(node: Node) -> None:
    listed = node.control_plane.request("GET", "/api/v1/pods")
    for item in listed["items"]:
        node.delete_pod(item["metadata"]["namespace"], item["metadata"]["name"])

    def gone() -> bool:
        return not node.control_plane.request("GET", "/api/v1/pods")["items"]

    # Stopped below regardless: the processes left in the node's namespace are ended by id.
    with contextlib.suppress(AssertionError):
        wait_until(gone, what="every Pod deleted by the kubelet", timeout=60)


def _stop_namespace(holder: subprocess.Popen[bytes]) -> None:
    """End every process in the holder's mount namespace (containers, shims), then the holder itself."""
    try:
        namespace = os.readlink(f"/proc/{holder.pid}/ns/mnt")
    except OSError:
        namespace = None
    for _ in range(3):
        if namespace is None:
            break
        inside = [pid for pid in _pids() if pid != holder.pid and _mount_namespace(pid) == namespace]
        if not inside:
            break
        for pid in inside:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        time.sleep(0.5)
    _stop(holder)


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _mount_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


# --- start ------------------------------------------------------------------------------------------------------
def start_node(work: Path) -> Node:
    """The whole node, started; on any failure everything started so far is stopped and the host restored."""
    found = parts()
    folder = binaries()
    host = HostState.read(work)  # on a failure it undoes its own part
    holder: subprocess.Popen[bytes] | None = None
    node: Node | None = None
    try:
        holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--", "sleep", "infinity"])
        plane, processes = _control_plane(folder, work)
        node = Node(plane, work, host, holder, processes=processes)
        _containerd(node, found["containerd"], found["images"])
        _kubelet(node, found["kubelet"] / "kubelet")
        return node
    except BaseException as error:
        if node is not None:
            left = node.stop()
        else:
            if holder is not None:
                _stop_namespace(holder)
            left = host.restore()
        if left:
            error.add_note(f"the host was not fully restored: {left}")
        raise


def _in_namespace(
    node: Node, command: list[str], log: Path, *, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(
        ["nsenter", "-t", str(node.namespace_holder.pid), "-m", "--", *command],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
    )


def _control_plane(folder: Path, work: Path) -> tuple[ControlPlane, list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    try:
        client_port, peer_port = free_port(), free_port()
        etcd = _start(
            [
                str(folder / "etcd"),
                "--name=node-e2e",
                f"--data-dir={work / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{client_port}",
                f"--advertise-client-urls=http://127.0.0.1:{client_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=node-e2e=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            work / "etcd.log",
        )
        processes.append(etcd)
        wait_until(
            lambda: b"true" in urllib.request.urlopen(f"http://127.0.0.1:{client_port}/health", timeout=2).read(),
            what="etcd",
            process=etcd,
        )
        key = ec.generate_private_key(ec.SECP256R1())
        (work / "sa.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (work / "sa.pub").write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        (work / "tokens.csv").write_text(
            f'{ADMIN_TOKEN},admin,admin,"system:masters"\n{NODE_TOKEN},system:node:{NODE_NAME},node,"system:nodes"\n'
        )
        port = free_port()
        apiserver = _start(
            [
                str(folder / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{client_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={work / 'apiserver-certs'}",
                f"--token-auth-file={work / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer={ISSUER}",
                f"--api-audiences={ISSUER}",
                f"--service-account-key-file={work / 'sa.pub'}",
                f"--service-account-signing-key-file={work / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--endpoint-reconciler-type=none",
                "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,NodeRestriction,Priority,"
                "MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
                "--allow-privileged=false",
                # exec and logs reach the kubelet by its node name, localhost: never this machine's other address
                "--kubelet-preferred-address-types=Hostname",
            ],
            work / "kube-apiserver.log",
        )
        processes.append(apiserver)
        serving_cert = work / "apiserver-certs" / "apiserver.crt"
        wait_until(
            serving_cert.exists, what="kube-apiserver's certificate", process=apiserver, log=work / "kube-apiserver.log"
        )
        shutil.copy(serving_cert, work / "apiserver.crt")
        context = ssl.create_default_context(cafile=str(work / "apiserver.crt"))
        plane = ControlPlane(f"https://127.0.0.1:{port}", folder, work, context, processes)

        def ready() -> bool:
            try:
                return plane.request("GET", "/api/v1/namespaces/default") is not None
            except ApiError:
                return False

        wait_until(ready, what="kube-apiserver", process=apiserver, timeout=120, log=work / "kube-apiserver.log")
        return plane, processes
    except BaseException:
        for process in reversed(processes):
            _stop(process)
        raise


CONTAINERD_CONFIG = """\
version = 3
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.cri.v1.runtime"]
  # this host lacks CAP_SYS_RESOURCE: a negative OOM score cannot be set, so containerd must not ask for one
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{cni}"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{pause}"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""


def _containerd(node: Node, folder: Path, images: Path) -> None:
    work = node.workdir / "containerd"
    (work / "cni").mkdir(parents=True)
    socket = work / "containerd.sock"
    config = work / "config.toml"
    runc = shutil.which("runc") or "/usr/sbin/runc"
    config.write_text(
        CONTAINERD_CONFIG.format(
            root=work / "root", state=work / "state", socket=socket, runc=runc, cni=work / "cni", pause=image("pause")
        )
    )
    env = {**os.environ, "PATH": f"{folder}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
    node.containerd = _in_namespace(
        node, [str(folder / "containerd"), "--config", str(config)], node.workdir / "containerd.log", env=env
    )
    wait_until(socket.exists, what="containerd's socket", process=node.containerd, log=node.workdir / "containerd.log")
    for name in IMAGES:
        with (images / f"{name}.tar").open("rb") as archive:
            imported = subprocess.run(
                [
                    str(folder / "ctr"),
                    "--address",
                    str(socket),
                    "--namespace",
                    "k8s.io",
                    "images",
                    "import",
                    "--local",
                    "-",
                ],
                stdin=archive,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        assert imported.returncode == 0, f"ctr images import {name}: {imported.stderr[-500:]}"
    node.socket = socket


def _kubelet(node: Node, kubelet: Path) -> None:
    work = node.workdir / "kubelet"
    work.mkdir()
    port, healthz = free_port(), free_port()
    socket = node.workdir / "containerd" / "containerd.sock"
    config = {
        "kind": "KubeletConfiguration",
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "address": "127.0.0.1",
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz,
        "containerRuntimeEndpoint": f"unix://{socket}",
        # this host: cgroup v1 (hybrid), no systemd, swap allowed, iptables left alone
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{node.host.cgroup_root}",
        "failCgroupV1": False,
        "failSwapOn": False,
        "makeIPTablesUtilChains": False,
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "syncFrequency": "10s",
        "podLogsDir": str(work / "pods"),
        "serializeImagePulls": False,
    }
    (work / "config.json").write_text(json.dumps(config))
    node.control_plane.kubeconfig(token=NODE_TOKEN, name="node").rename(work / "kubeconfig")
    node.kubelet_port = port
    node.kubelet = _in_namespace(
        node,
        [
            str(kubelet),
            f"--config={work / 'config.json'}",
            f"--kubeconfig={work / 'kubeconfig'}",
            f"--root-dir={work / 'root'}",
            f"--cert-dir={work / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            "--v=1",
        ],
        node.workdir / "kubelet.log",
    )

    def registered() -> bool:
        try:
            node.control_plane.request("GET", f"/api/v1/nodes/{NODE_NAME}")
        except ApiError:
            return False
        return True

    wait_until(
        registered, what="the kubelet's Node", timeout=120, process=node.kubelet, log=node.workdir / "kubelet.log"
    )
