"""The node's bookkeeping of the host (``HostState``), on a temporary copy of /proc/sys and /sys/fs/cgroup.

No node runs here: each test lays out the files a node reads and writes, the shared record included, and checks
what a next node does with what a killed one left, and what a setup that fails partway leaves (nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node.node import CGROUP_PREFIX, SYSCTLS, HostPaths, HostState
from tests.tools import REPO

HOST_VALUES = {
    "vm/overcommit_memory": "0",
    "kernel/panic": "0",
    "kernel/panic_on_oops": "0",
    "net/ipv4/ip_forward": "0",
}
KUBELET_VALUES = {
    "vm/overcommit_memory": "1",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "net/ipv4/ip_forward": "1",
}


@pytest.fixture
def paths(tmp_path: Path) -> HostPaths:
    """A host with two cgroup hierarchies and the kubelet's sysctls at the host's values.

    The folders stand for cgroups: unlike cgroupfs they cannot be removed once a file is written in them, so the
    cpuset's own values (copied into each new cpuset) are left out.
    """
    found = HostPaths(
        proc_sys=tmp_path / "proc-sys",
        cgroups=tmp_path / "cgroup",
        record=tmp_path / "run" / "record.json",
        lock=tmp_path / "run" / "record.lock",
        container_logs=tmp_path / "var-log-containers",
        iptables=(),
    )
    for hierarchy in ("cpu", "cpuset"):
        (found.cgroups / hierarchy).mkdir(parents=True)
        (found.cgroups / hierarchy / "cgroup.procs").write_text("")
    found.record.parent.mkdir()
    set_sysctls(found, HOST_VALUES)
    return found


@pytest.fixture
def live_process() -> Iterator[int]:
    """Another process, alive for the test: a holder that is still running."""
    process = subprocess.Popen(["sleep", "120"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def dead_process() -> int:
    """The pid of a process that has ended: the holder of a run that was killed before its teardown."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def set_sysctls(paths: HostPaths, values: dict[str, str]) -> None:
    for name, value in values.items():
        (paths.proc_sys / name).parent.mkdir(parents=True, exist_ok=True)
        (paths.proc_sys / name).write_text(value + "\n")


def sysctls(paths: HostPaths) -> dict[str, str]:
    return {name: (paths.proc_sys / name).read_text().strip() for name in SYSCTLS}


def started_at(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]


def cgroup_roots(paths: HostPaths) -> set[str]:
    return {p.relative_to(paths.cgroups).as_posix() for p in paths.cgroups.glob(f"*/{CGROUP_PREFIX}*")}


def write_record(paths: HostPaths, holders: list[dict[str, object]], originals: dict[str, str]) -> None:
    paths.record.write_text(json.dumps({"holders": holders, "originals": originals, "chains": {}}))


def test_a_killed_nodes_recorded_originals_are_put_back_and_kept_by_the_next_node(
    paths: HostPaths, dead_process: int
) -> None:
    # A run was SIGKILLed while its kubelet's values were on the host: its record names a holder that is gone.
    write_record(paths, [{"pid": dead_process, "started": "1", "cgroup_root": CGROUP_PREFIX + "dead"}], HOST_VALUES)
    set_sysctls(paths, KUBELET_VALUES)

    state = HostState.read(Path("/nowhere"), paths=paths)

    assert sysctls(paths) == HOST_VALUES, "the killed node's values were not put back before the next node started"
    assert json.loads(paths.record.read_text())["originals"] == HOST_VALUES, "the saved originals were overwritten"
    set_sysctls(paths, KUBELET_VALUES)  # what this node's kubelet does
    assert state.restore() == []
    assert sysctls(paths) == HOST_VALUES
    assert not paths.record.exists()


def test_a_node_starting_beside_a_running_one_keeps_the_saved_originals_and_the_last_to_stop_restores_them(
    paths: HostPaths, live_process: int
) -> None:
    running = {"pid": live_process, "started": started_at(live_process), "cgroup_root": CGROUP_PREFIX + "other"}
    write_record(paths, [running], HOST_VALUES)
    set_sysctls(paths, KUBELET_VALUES)  # the running node's kubelet changed them

    state = HostState.read(Path("/nowhere"), paths=paths)
    assert sysctls(paths) == KUBELET_VALUES, "the values were put back under a node still running"
    assert json.loads(paths.record.read_text())["originals"] == HOST_VALUES
    assert state.restore() == []

    assert sysctls(paths) == KUBELET_VALUES, "a node that was not the last to stop put the values back"
    record = json.loads(paths.record.read_text())
    assert record["originals"] == HOST_VALUES
    assert [holder["pid"] for holder in record["holders"]] == [live_process]


def test_a_holder_whose_pid_was_reused_by_another_process_counts_as_dead(paths: HostPaths, live_process: int) -> None:
    write_record(paths, [{"pid": live_process, "started": "0", "cgroup_root": CGROUP_PREFIX + "dead"}], HOST_VALUES)
    set_sysctls(paths, KUBELET_VALUES)

    HostState.read(Path("/nowhere"), paths=paths).restore()

    assert sysctls(paths) == HOST_VALUES


def test_the_next_node_removes_the_cgroup_roots_of_dead_nodes_and_keeps_a_running_nodes(
    paths: HostPaths, dead_process: int, live_process: int
) -> None:
    dead, running = CGROUP_PREFIX + "dead", CGROUP_PREFIX + "running"
    for hierarchy in ("cpu", "cpuset"):
        (paths.cgroups / hierarchy / dead / "kubepods" / "besteffort").mkdir(parents=True)
        (paths.cgroups / hierarchy / running / "kubepods").mkdir(parents=True)
    holders: list[dict[str, object]] = [
        {"pid": dead_process, "started": "1", "cgroup_root": dead},
        {"pid": live_process, "started": started_at(live_process), "cgroup_root": running},
    ]
    write_record(paths, holders, HOST_VALUES)

    state = HostState.read(Path("/nowhere"), paths=paths)

    assert cgroup_roots(paths) == {f"{h}/{root}" for h in ("cpu", "cpuset") for root in (running, state.cgroup_root)}
    state.restore()
    assert cgroup_roots(paths) == {f"{h}/{running}" for h in ("cpu", "cpuset")}


def test_a_record_of_bare_pids_from_an_older_node_reaps_no_cgroup_root_while_that_node_runs(
    paths: HostPaths, live_process: int
) -> None:
    unknown = CGROUP_PREFIX + "unknown"
    (paths.cgroups / "cpu" / unknown).mkdir()
    write_record(paths, [live_process], {})  # type: ignore[list-item]

    HostState.read(Path("/nowhere"), paths=paths).restore()

    assert cgroup_roots(paths) == {f"cpu/{unknown}"}


def test_a_setup_that_fails_partway_leaves_no_cgroup_root_and_no_hold(paths: HostPaths) -> None:
    # The cpuset's values cannot be read: the failure comes after this node's folders were made.
    (paths.cgroups / "cpuset" / "cpuset.cpus").mkdir()

    with pytest.raises(IsADirectoryError):
        HostState.read(Path("/nowhere"), paths=paths)

    assert cgroup_roots(paths) == set()
    assert not paths.record.exists(), "the failed node is still recorded as holding the host's sysctls"
    assert sysctls(paths) == HOST_VALUES


def chains_in_this_network_namespace() -> set[str]:
    listed = subprocess.run(["iptables", "-t", "filter", "-S"], capture_output=True, text=True, check=True)
    return {line.split()[1] for line in listed.stdout.splitlines() if line.startswith("-N ")}


def two_nodes_add_chains_and_stop(folder: str) -> None:
    """Run in a network namespace of its own: two nodes each add a chain; what is left after each one stops."""
    paths = HostPaths(
        proc_sys=Path(folder) / "proc-sys",
        cgroups=Path(folder) / "cgroup",
        record=Path(folder) / "run" / "record.json",
        lock=Path(folder) / "run" / "record.lock",
        container_logs=Path(folder) / "var-log-containers",
        iptables=("iptables",),
    )
    subprocess.run(["iptables", "-N", "KUBE-THE-HOSTS-OWN"], check=True)
    first = HostState.read(Path("/nowhere"), paths=paths)
    subprocess.run(["iptables", "-N", "KUBE-FIRST"], check=True)
    second = HostState.read(Path("/nowhere"), paths=paths)
    subprocess.run(["iptables", "-N", "CNI-SECOND"], check=True)
    left = {"first": first.restore(), "after first": sorted(chains_in_this_network_namespace())}
    left |= {"second": second.restore(), "after second": sorted(chains_in_this_network_namespace())}
    print(json.dumps(left))


def test_new_chains_are_removed_only_by_the_last_node_to_stop_and_the_hosts_own_are_kept(paths: HostPaths) -> None:
    if shutil.which("iptables") is None or shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root, iptables and unshare (a network namespace of its own: the host's rules untouched)")
    ran = subprocess.run(
        [
            "unshare",
            "--net",
            "--",
            sys.executable,
            "-c",
            "from tests.node.test_host_state import two_nodes_add_chains_and_stop as run; import sys; run(sys.argv[1])",
            str(paths.cgroups.parent),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]

    left = json.loads(ran.stdout)

    assert left["first"] == []
    assert left["second"] == []
    assert left["after first"] == ["CNI-SECOND", "KUBE-FIRST", "KUBE-THE-HOSTS-OWN"], "a running node lost its chain"
    assert left["after second"] == ["KUBE-THE-HOSTS-OWN"]
