"""A projected volume laid out on disk exactly as the kubelet's atomic writer lays it out.

No kubelet runs in these tests, so this helper plays its part for the token file: the files live in a
timestamped directory, ``..data`` is a symlink to it and each visible file is a symlink through
``..data``. A rotation writes a new timestamped directory, points a ``..data_tmp`` symlink at it and
renames that over ``..data`` (the one atomic step), then removes the old directory. This is the
sequence of ``AtomicWriter.Write`` in kubernetes/pkg/volume/util/atomic_writer.go; a reader that
caches a file handle, or only watches the visible path's own inode, gets it wrong here as it would
in a Pod.

Usage (also from other test areas, e.g. the e2e example of issue 16)::

    from tests.audience_token.kubelet_volume import ProjectedVolume

    volume = ProjectedVolume.create(tmp_path / "tokens", {"token": first})
    TokenFile(volume.path("token"))  # what $SERVICE_ACCOUNT_TOKEN_PATH would name
    volume.rotate({"token": second})  # the kubelet's refresh at 80% of the token's life
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

DATA = "..data"
DATA_TMP = "..data_tmp"


@dataclass
class ProjectedVolume:
    """The mount directory of one projected volume, written the kubelet's way."""

    root: Path

    @classmethod
    def create(cls, root: Path, files: dict[str, str | bytes], *, mode: int = 0o644) -> ProjectedVolume:
        """A fresh volume at ``root`` (created) holding ``files`` (name → content)."""
        root.mkdir(parents=True, exist_ok=True)
        volume = cls(root)
        volume.rotate(files, mode=mode)
        return volume

    def path(self, name: str = "token") -> Path:
        """The visible path of ``name``: what a container sees and the env var names."""
        return self.root / name

    @property
    def data_dir(self) -> Path:
        """The timestamped directory ``..data`` points at now."""
        return self.root / os.readlink(self.root / DATA)

    def rotate(self, files: dict[str, str | bytes], *, mode: int = 0o644) -> Path:
        """Write ``files`` as the kubelet refreshes a volume; returns the new timestamped directory."""
        old = self.root / DATA
        previous = os.readlink(old) if old.is_symlink() else None
        stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.")
        new_dir = self.root / f"{stamp}{secrets.randbelow(10**9):09d}"
        new_dir.mkdir()
        for name, content in files.items():
            target = new_dir / name
            if isinstance(content, str):
                target.write_text(content)
            else:
                target.write_bytes(content)
            target.chmod(mode)
        tmp = self.root / DATA_TMP
        tmp.unlink(missing_ok=True)
        os.symlink(new_dir.name, tmp)
        os.replace(tmp, old)
        for name in files:
            visible = self.root / name
            if not visible.is_symlink():
                os.symlink(f"{DATA}/{name}", visible)
        if previous is not None and previous != new_dir.name:
            shutil.rmtree(self.root / previous)
        return new_dir

    def break_data_link(self) -> None:
        """Point ``..data`` at a directory that does not exist, as a half-torn-down volume would."""
        tmp = self.root / DATA_TMP
        tmp.unlink(missing_ok=True)
        os.symlink("..gone", tmp)
        os.replace(tmp, self.root / DATA)
