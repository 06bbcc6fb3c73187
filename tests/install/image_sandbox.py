"""A container without an engine: a private mount (and network) namespace with a root assembled like an image's.

No Docker engine runs here. What a container runtime gives a process is rebuilt from kernel parts:
``unshare`` makes private mount and network namespaces; inside, a tmpfs becomes the root, and the
host's Debian bookworm ``/usr`` and ``/etc`` (as copy-on-write overlays, so mount points and the
``/usr/local/bin/python`` of the python image can be added without touching the host) stand in for
the base image's userland, Debian's ``python3.X`` for its Python. The image's own files (the build
stage's output) are bind-mounted where ``COPY --from`` puts them; ``/dev`` is a fresh tmpfs with
the device nodes runc makes and a 64 MiB ``/dev/shm``; ``/proc`` and a read-only ``/sys`` follow.
Then every mount the container should not write is remounted read-only, and the process starts
through ``chroot``, ``setpriv`` (user, groups, no new privileges, no capabilities) and ``env -i``.

The namespace lives as long as its shell, which waits for the test's word before starting the
process and again after it exits: the test looks at the container's writable mounts before and
after, through ``/proc/<shell>/root``, and talks to its ports through sockets made in its network
namespace (``setns`` in a short-lived thread: a thread's namespace is its own).
"""

import contextlib
import ctypes
import hashlib
import os
import queue
import shlex
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

BASE_DIRS = ("usr", "etc")
"""The host folders that stand in for the base image's userland (Debian bookworm in both)."""
MERGED_USR = ("bin", "lib", "lib64", "sbin")
"""Debian's merged /usr: these are symlinks into /usr, in the base image as on the host."""
EMPTY_DIRS = {"root": 0o700, "home": 0o755, "run": 0o755, "var": 0o755, "var/tmp": 0o1777, "opt": 0o755}
EMPTY_DIRS |= {"mnt": 0o755, "srv": 0o755, "media": 0o755, "proc": 0o555, "sys": 0o555, "dev": 0o755, "tmp": 0o1777}
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
"""The character devices runc creates in a container's /dev (mode 0666)."""
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
}
SHM_OPTIONS = "mode=1777,size=65536k,nosuid,nodev,noexec"
"""A container runtime's default /dev/shm: world-writable, 64 MiB."""
PSEUDO_FILESYSTEMS = frozenset({"proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2"})
"""Writable in a container, but not a place a file is written to: left out of the snapshots."""
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True, kw_only=True)
class Mount:
    """A mount inside the container: a bind of a host path, or a tmpfs when ``source`` is None."""

    target: str
    source: Path | None = None
    options: str = ""
    read_only: bool = True


@dataclass(frozen=True, kw_only=True)
class Process:
    """What the container runs, and as whom."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    workdir: str = "/"
    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    no_new_privs: bool = False
    drop_capabilities: bool = False


@dataclass(frozen=True, kw_only=True)
class Sandbox:
    workspace: Path
    """A host folder for the root and the overlays' upper layers (tmpfs over them, in the namespace only)."""
    python: str
    """The base image's Python as ``3.X``: Debian's ``/usr/bin/python3.X`` is put at ``/usr/local/bin/python``."""
    mounts: tuple[Mount, ...] = ()
    read_only_root: bool = False
    private_network: bool = False

    @property
    def root(self) -> Path:
        return self.workspace / "root"


def q(*words: object) -> str:
    return shlex.join(str(word) for word in words)


def assemble(sandbox: Sandbox) -> list[str]:
    """Shell lines that build the container's root at ``sandbox.root``; run them in a new mount namespace."""
    root, scratch = sandbox.root, sandbox.workspace / "scratch"
    lines = [q("mkdir", "-p", root, scratch), q("mount", "-t", "tmpfs", "-o", "mode=0755", "image-root", root)]
    lines.append(q("mount", "-t", "tmpfs", "-o", "mode=0700", "image-layers", scratch))
    for name in BASE_DIRS:
        upper, work = scratch / name / "upper", scratch / name / "work"
        options = f"lowerdir=/{name},upperdir={upper},workdir={work}"
        lines += [
            q("mkdir", "-p", upper, work, root / name),
            q("mount", "-t", "overlay", "-o", options, "base", root / name),
        ]
    lines += [q("ln", "-s", f"usr/{name}", root / name) for name in MERGED_USR]
    for name, mode in EMPTY_DIRS.items():
        lines += [q("mkdir", "-p", root / name), q("chmod", oct(mode)[2:], root / name)]
    local = root / "usr/local/bin"
    version = f"python{sandbox.python}"
    lines.append(q("rm", "-f", local / "python", local / "python3", local / version))
    lines += [q("ln", "-s", f"/usr/bin/{version}", local / version), q("ln", "-s", version, local / "python3")]
    lines.append(q("ln", "-s", "python3", local / "python"))
    lines += _dev(root / "dev")
    lines += [q("mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", root / "proc")]
    lines += [q("mount", "-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", root / "sys")]
    for mount in sandbox.mounts:
        lines += _mount(root, mount)
    if sandbox.private_network:
        lines.append("ip link set lo up")
    return lines


def _dev(dev: Path) -> list[str]:
    lines = [q("mount", "-t", "tmpfs", "-o", "mode=755,size=65536k,nosuid", "dev", dev)]
    for name, (major, minor) in DEVICES.items():
        lines.append(q("mknod", "-m", "666", dev / name, "c", major, minor))
    lines += [q("ln", "-s", target, dev / name) for name, target in DEV_LINKS.items()]
    return [*lines, q("mkdir", dev / "shm"), q("mount", "-t", "tmpfs", "-o", SHM_OPTIONS, "shm", dev / "shm")]


def _mount(root: Path, mount: Mount) -> list[str]:
    target = root / mount.target.lstrip("/")
    if mount.source is None:
        return [
            q("mkdir", "-p", target),
            q("mount", "-t", "tmpfs", "-o", mount.options or "mode=1777", "tmpfs", target),
        ]
    make = (
        q("mkdir", "-p", target)
        if mount.source.is_dir()
        else f"{q('mkdir', '-p', target.parent)} && {q('touch', target)}"
    )
    return [make, q("mount", "--bind", mount.source, target)]


def seal(sandbox: Sandbox) -> list[str]:
    """Shell lines that remount read-only what the container must not write (after ``assemble``)."""
    root = sandbox.root
    targets = [root / name for name in BASE_DIRS] + [root / m.target.lstrip("/") for m in sandbox.mounts if m.read_only]
    if sandbox.read_only_root:
        targets.insert(0, root)
    return [q("mount", "-o", "remount,bind,ro", target) for target in targets]


def launch(sandbox: Sandbox, process: Process) -> str:
    """The shell command that starts ``process`` in the assembled root, as its user, with its env only."""
    command = ["chroot", sandbox.root, "/usr/bin/setpriv", f"--reuid={process.uid}", f"--regid={process.gid}"]
    command.append("--pdeathsig=SIGKILL")  # set after the user change: dies with the sandbox's shell
    command.append("--groups=" + ",".join(map(str, process.groups)) if process.groups else "--clear-groups")
    if process.no_new_privs:
        command.append("--no-new-privs")
    if process.drop_capabilities:
        command += ["--bounding-set=-all", "--inh-caps=-all"]
    command += ["--", "/usr/bin/env", "-i", "-C", process.workdir, "--"]
    command += [f"{key}={value}" for key, value in process.env.items()]
    return q(*command, *process.argv)


def unshare(sandbox: Sandbox, script: list[str]) -> list[str]:
    """The argv that runs ``script`` (shell lines, stopping at the first failure) in new namespaces."""
    namespaces = ["--mount", "--propagation", "private"] + (["--net"] if sandbox.private_network else [])
    # The shell dies with the test process (and, through --pdeathsig in launch, what it started with it).
    return ["setpriv", "--pdeathsig=SIGKILL", "unshare", *namespaces, "--", "/bin/sh", "-euc", "\n".join(script)]


class Container:
    """A process started in a sealed sandbox; see the module docstring for how the test talks to it."""

    def __init__(self, sandbox: Sandbox, process: Process, *, log: Path) -> None:
        self.sandbox = sandbox
        script = [*assemble(sandbox), *seal(sandbox), "echo staged", "read go"]
        script += [f"{launch(sandbox, process)} </dev/null >&2 &", 'pid=$!; echo "started $pid"']
        script += ['rc=0; wait "$pid" || rc=$?', 'echo "exited $rc"', "read done"]
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = log.open("wb")
        self.shell = subprocess.Popen(
            unshare(sandbox, script), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_read_lines, args=(self.shell.stdout, self._lines), daemon=True).start()
        self.expect("staged", timeout=30)
        self.pid = 0
        self.returncode: int | None = None

    @property
    def log(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def expect(self, word: str, *, timeout: float) -> str:
        """The rest of the shell's next line, which must start with ``word``."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the sandbox did not say {word!r} within {timeout}s:\n{self.log[-3000:]}") from None
        if not line.startswith(word):
            raise AssertionError(f"the sandbox said {line!r}, not {word!r}:\n{self.log[-3000:]}")
        return line[len(word) :].strip()

    def _say(self, word: str) -> None:
        assert self.shell.stdin is not None
        self.shell.stdin.write(f"{word}\n".encode())
        self.shell.stdin.flush()

    def start(self) -> None:
        self._say("go")
        self.pid = int(self.expect("started", timeout=10))

    def alive(self) -> bool:
        """Whether the process still runs (its exit is the only line the shell still has to say)."""
        if self.returncode is None:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return True
            self.returncode = int(line.removeprefix("exited"))
        return False

    def wait(self, *, timeout: float) -> int:
        """The process's exit status (the namespace stays, for a last look, until ``close``)."""
        if self.returncode is None:
            self.returncode = int(self.expect("exited", timeout=timeout))
        return self.returncode

    def signal(self, signum: signal.Signals) -> None:
        os.kill(self.pid, signum)

    def close(self) -> None:
        if self.pid and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.shell.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                self._say("done")
            try:
                self.shell.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.shell.kill()
                self.shell.wait()
        self._log.close()

    def wait_until(self, condition: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Poll ``condition`` until it holds; fail saying ``what`` if the process exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.alive(), f"{what}: the process exited ({self.returncode}) first:\n{self.log[-3000:]}"
            assert time.monotonic() < deadline, f"{what}: not within {timeout}s:\n{self.log[-3000:]}"
            time.sleep(0.05)

    def proc_status(self) -> dict[str, str]:
        """The process's ``/proc/PID/status`` fields (``Uid``, ``Groups``, ``NoNewPrivs``, ``CapEff``, ...)."""
        return dict(line.split(":\t", 1) for line in Path(f"/proc/{self.pid}/status").read_text().splitlines())

    def host_path(self, path: str) -> Path:
        """Where the test (on the host) reads the container's ``path``, through the shell's mount namespace."""
        return Path(f"/proc/{self.shell.pid}/root") / str(self.sandbox.root).lstrip("/") / path.lstrip("/")

    def writable_mounts(self) -> list[str]:
        """The container paths of every mount in it that accepts writes (pseudo-filesystems left out)."""
        prefix = str(self.sandbox.root)
        found = []
        for line in Path(f"/proc/{self.shell.pid}/mountinfo").read_text().splitlines():
            fields = line.split()
            point, options = _unescape(fields[4]), fields[5].split(",")
            fstype = fields[fields.index("-") + 1]
            inside = point == prefix or point.startswith(prefix + "/")
            if inside and "rw" in options and fstype not in PSEUDO_FILESYSTEMS:
                found.append(point[len(prefix) :] or "/")
        return found

    def snapshot(self, mounts: list[str]) -> dict[str, tuple[object, ...]]:
        """Each file under ``mounts`` (not crossing into other mounts) with its type, owner, mode, size, times, hash."""
        result: dict[str, tuple[object, ...]] = {}
        for mount in mounts:
            top = self.host_path(mount)
            device = top.stat().st_dev
            for folder, dirs, files in os.walk(top):
                dirs[:] = [d for d in dirs if (Path(folder) / d).lstat().st_dev == device]
                for name in [".", *files]:  # each folder is listed once, by its own walk
                    relative = (Path(folder) / name).relative_to(top)
                    key = mount if str(relative) == "." else f"{mount.rstrip('/')}/{relative}"
                    result[key] = _describe(Path(folder) / name)
        return result

    def connect(self, port: int, *, timeout: float = 5) -> socket.socket:
        """A TCP connection to ``port`` on the container's loopback, made from inside its network namespace."""
        made: list[socket.socket | BaseException] = []
        netns = f"/proc/{self.shell.pid}/ns/net"

        def inside() -> None:
            descriptor = os.open(netns, os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(descriptor, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
                made.append(socket.create_connection(("127.0.0.1", port), timeout=timeout))
            except BaseException as error:  # handed to the caller's thread
                made.append(error)
            finally:
                os.close(descriptor)

        thread = threading.Thread(target=inside)
        thread.start()
        thread.join()
        if isinstance(made[0], BaseException):
            raise made[0]
        return made[0]


def _describe(path: Path) -> tuple[object, ...]:
    info = path.lstat()
    kind = stat.S_IFMT(info.st_mode)
    if stat.S_ISCHR(kind) or stat.S_ISBLK(kind):  # a device's times move with every read and write
        return (kind, info.st_rdev, info.st_mode, info.st_uid, info.st_gid)
    digest = (
        hashlib.sha256(path.read_bytes()).hexdigest()
        if stat.S_ISREG(kind)
        else os.readlink(path)
        if stat.S_ISLNK(kind)
        else ""
    )
    return (kind, info.st_mode, info.st_uid, info.st_gid, info.st_size, info.st_mtime_ns, digest)


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _read_lines(stream: IO[bytes] | None, into: "queue.Queue[str]") -> None:
    assert stream is not None
    for raw in stream:
        into.put(raw.decode().rstrip("\n"))
