"""A Deployment's container, run from an engine-less ``Image`` the way the kubelet and runc would run it.

Everything comes from the manifest: the user and groups (``runAsUser``, ``runAsGroup``, ``fsGroup``
and ``supplementalGroups`` as extra groups), ``allowPrivilegeEscalation: false`` (no new
privileges), ``capabilities.drop: [ALL]``, ``readOnlyRootFilesystem``, ``command``/``args`` over the
image's ENTRYPOINT/CMD, ``env`` over the image's ENV (and ``HOME`` from the image's passwd, else
``/``, as runc sets it), each ``volumeMount`` with its volume: an ``emptyDir`` is a tmpfs of its
``sizeLimit`` (group ``fsGroup``, setgid, as the kubelet makes it), a ``secret`` is a folder laid
out as the kubelet's atomic writer lays it out (``..data`` -> a timestamped folder, each key a
symlink through ``..data``; files ``defaultMode`` | 0440, group ``fsGroup``) and updated the same
way (``SecretVolume.write``: new timestamped folder, ``..data_tmp`` renamed over ``..data``).
"""

import datetime
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex
from typing import Any

import yaml

from tests.install.image_build import Image
from tests.install.image_sandbox import Container, Mount, Process, Sandbox

_QUANTITY = re.compile(r"(\d+)(Ki|Mi|Gi|k|M|G)?")
_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
DATA, DATA_TMP = "..data", "..data_tmp"


def quantity(text: str) -> int:
    """Bytes in a Kubernetes quantity such as ``16Mi``."""
    match = _QUANTITY.fullmatch(str(text))
    if not match:
        raise ValueError(f"unsupported quantity {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True, kw_only=True)
class PodSpec:
    """The parts of one container of a Deployment (and of its Pod) that decide how the process runs."""

    container: Mapping[str, Any]
    pod: Mapping[str, Any]

    @classmethod
    def from_manifest(cls, manifest: Path, *, deployment: str | None = None, container: str | None = None) -> "PodSpec":
        """The (named, or only) Deployment in ``manifest``, and its (named, or first) container."""
        documents = [doc for doc in yaml.safe_load_all(manifest.read_text()) if doc and doc["kind"] == "Deployment"]
        chosen_deployment = next(d for d in documents if deployment in (None, d["metadata"]["name"]))
        pod = chosen_deployment["spec"]["template"]["spec"]
        chosen = next(c for c in pod["containers"] if container in (None, c["name"]))
        return cls(container=chosen, pod=pod)

    def security(self, key: str, default: Any = None) -> Any:
        """A security setting, the container's overriding the Pod's, as the kubelet merges them."""
        container, pod = self.container.get("securityContext", {}), self.pod.get("securityContext", {})
        return container.get(key, pod.get(key, default))

    def port(self, name_or_number: str | int) -> int:
        if isinstance(name_or_number, int):
            return name_or_number
        return int(next(p["containerPort"] for p in self.container["ports"] if p.get("name") == name_or_number))

    def volume(self, name: str) -> Mapping[str, Any]:
        return next(v for v in self.pod["volumes"] if v["name"] == name)

    def empty_dirs(self) -> list[str]:
        return [m["mountPath"] for m in self.container["volumeMounts"] if "emptyDir" in self.volume(m["name"])]


class SecretVolume:
    """A Secret volume's host folder, written as the kubelet's AtomicWriter writes it."""

    def __init__(self, folder: Path, *, mode: int, group: int | None) -> None:
        self.folder, self.mode, self.group = folder, mode, group
        folder.mkdir(parents=True)
        # The kubelet's folder is a tmpfs (1777); with an fsGroup it becomes that group's, setgid.
        self._own(folder, 0o1777)

    def _own(self, path: Path, mode: int) -> None:
        if self.group is not None:
            os.lchown(path, -1, self.group)
            mode |= 0o2000 if path.is_dir() and not path.is_symlink() else 0
        if not path.is_symlink():
            os.chmod(path, mode)

    def write(self, payload: Mapping[str, bytes]) -> None:
        """Project ``payload`` (key -> content): a new timestamped folder, then ``..data`` swapped to it at once."""
        old = os.readlink(self.folder / DATA) if (self.folder / DATA).is_symlink() else None
        stamp = datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.") + token_hex(5)
        new = self.folder / stamp
        new.mkdir()
        self._own(new, 0o755)
        for key, content in payload.items():
            (new / key).write_bytes(content)
            # A read-only volume with an fsGroup: the kubelet ORs in 0440 and sets the group.
            self._own(new / key, self.mode | (0o440 if self.group is not None else 0))
        for key in payload:
            if not (self.folder / key).is_symlink():
                os.symlink(f"{DATA}/{key}", self.folder / key)
                self._own(self.folder / key, 0)
        os.symlink(stamp, self.folder / DATA_TMP)
        self._own(self.folder / DATA_TMP, 0)
        os.rename(self.folder / DATA_TMP, self.folder / DATA)
        if old:
            shutil.rmtree(self.folder / old)


def secret_volumes(spec: PodSpec, root: Path) -> dict[str, SecretVolume]:
    """A ``SecretVolume`` under ``root`` for each Secret volume of ``spec``, with its mode and the Pod's fsGroup."""
    group = spec.pod.get("securityContext", {}).get("fsGroup")
    return {
        v["name"]: SecretVolume(root / v["name"], mode=v["secret"].get("defaultMode", 0o644), group=group)
        for v in spec.pod.get("volumes", [])
        if "secret" in v
    }


def assert_unprivileged(spec: PodSpec, status: Mapping[str, str]) -> None:
    """The process (``/proc/PID/status``) has the user and groups ``spec`` names, no new privileges, no capability."""
    uid, gid, fs_group = (spec.security(key) for key in ("runAsUser", "runAsGroup", "fsGroup"))
    assert status["Uid"].split() == [str(uid)] * 4
    assert status["Gid"].split() == [str(gid)] * 4
    assert status["Groups"].split() == [str(fs_group)]
    assert status["NoNewPrivs"].strip() == "1"
    for capabilities in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert int(status[capabilities], 16) == 0, capabilities


def container_for(
    image: Image,
    spec: PodSpec,
    *,
    workspace: Path,
    secrets: Mapping[str, SecretVolume],
) -> tuple[Sandbox, Process]:
    """The sandbox and process for ``spec``'s container from ``image``; ``secrets`` by volume name."""
    mounts = list(image.layers)
    fs_group = spec.pod.get("securityContext", {}).get("fsGroup")
    for volume_mount in spec.container.get("volumeMounts", []):
        volume = spec.volume(volume_mount["name"])
        read_only = bool(volume_mount.get("readOnly", False))
        if "emptyDir" in volume:
            size = volume["emptyDir"].get("sizeLimit")
            options = [f"size={quantity(size)}"] if size else []
            options += ["mode=2777", f"gid={fs_group}"] if fs_group is not None else ["mode=0777"]
            mounts.append(Mount(target=volume_mount["mountPath"], options=",".join(options), read_only=read_only))
        elif "secret" in volume:
            # Secret volumes are read-only whatever the mount says (since Kubernetes 1.10).
            if volume["name"] not in secrets:
                raise ValueError(f"volume {volume['name']}: pass its SecretVolume in secrets=")
            mounts.append(Mount(target=volume_mount["mountPath"], source=secrets[volume["name"]].folder))
        else:
            raise ValueError(f"volume {volume['name']}: only emptyDir and secret volumes are reproduced")
    user, _, group = image.user.partition(":")
    uid = int(spec.security("runAsUser", int(user)))
    gid = int(spec.security("runAsGroup", int(group or 0)))
    if spec.security("runAsNonRoot"):
        assert uid != 0, "runAsNonRoot with UID 0: the kubelet would refuse to start this container"
    groups = ([fs_group] if fs_group is not None else []) + list(
        spec.pod.get("securityContext", {}).get("supplementalGroups", [])
    )
    env = dict(image.env)
    env.update({item["name"]: item["value"] for item in spec.container.get("env", [])})
    env.setdefault("HOME", _home(uid))
    entrypoint = tuple(spec.container.get("command", image.entrypoint))
    args = tuple(spec.container.get("args", () if "command" in spec.container else image.cmd))
    sandbox = Sandbox(
        workspace=workspace,
        python=image.python,
        mounts=tuple(mounts),
        read_only_root=bool(spec.security("readOnlyRootFilesystem", False)),
        private_network=True,
    )
    process = Process(
        argv=entrypoint + args,
        env=env,
        workdir=spec.container.get("workingDir", image.workdir),
        uid=uid,
        gid=gid,
        groups=tuple(dict.fromkeys(groups)),
        no_new_privs=spec.security("allowPrivilegeEscalation", True) is False,
        drop_capabilities="ALL" in spec.security("capabilities", {}).get("drop", []),
    )
    return sandbox, process


def _home(uid: int) -> str:
    """The home runc gives a process whose env has no HOME: its passwd entry's (the base's /etc), else /."""
    for line in Path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if len(fields) > 5 and fields[2] == str(uid):
            return fields[5]
    return "/"


def start(image: Image, spec: PodSpec, *, workspace: Path, secrets: Mapping[str, SecretVolume]) -> Container:
    """``spec``'s container from ``image``, assembled and sealed but not started (``Container.start``)."""
    sandbox, process = container_for(image, spec, workspace=workspace, secrets=secrets)
    return Container(sandbox, process, log=workspace / "container.log")
