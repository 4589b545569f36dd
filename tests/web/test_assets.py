"""The browser files the package ships (service/static/): what scripts/refresh_web_assets wrote,
at the versions package-lock.json pins, with their licences, in the wheel, and none of our own
files pointing at another host."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile

from tests.conftest import REPO_ROOT

STATIC = REPO_ROOT / "service" / "static"
LOCK = json.loads((REPO_ROOT / "package-lock.json").read_text())
PACKAGE = json.loads((REPO_ROOT / "package.json").read_text())


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_direct_dependencies_are_pinned_exactly_in_package_json_and_the_lock():
    for name, version in PACKAGE["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} {version}: an exact version"
        locked = LOCK["packages"][f"node_modules/{name}"]
        assert locked["version"] == version and locked["integrity"].startswith("sha512-")
    assert LOCK["packages"][""]["dependencies"] == PACKAGE["dependencies"]
    assert PACKAGE["dependencies"]["abcjs"] == "6.7.2"


def test_vendored_files_match_their_manifest_and_the_locked_versions():
    manifest = json.loads((STATIC / "vendor" / "MANIFEST.json").read_text())
    on_disk = {str(p.relative_to(STATIC / "vendor")) for p in (STATIC / "vendor").rglob("*") if p.is_file()}
    assert on_disk == set(manifest) | {"MANIFEST.json"}
    for name, entry in manifest.items():
        assert sha256(STATIC / "vendor" / name) == entry["sha256"], f"{name} changed since the refresh"
        assert entry["version"] == LOCK["packages"][f"node_modules/{entry['package']}"]["version"], name
    for folder in ("abcjs", "swagger-ui", "redoc"):
        assert any(re.match(r"LICEN[CS]E", p.name) for p in (STATIC / "vendor" / folder).iterdir()), folder


def test_the_soundfont_has_every_pitch_abcjs_names_and_its_licence():
    manifest = json.loads((STATIC / "soundfont" / "MANIFEST.json").read_text())
    notes = manifest["files"]
    names = ["C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B"]
    expected = {f"acoustic_grand_piano-mp3/{names[n % 12]}{n // 12 - 1}.mp3" for n in range(21, 120)}
    assert set(notes) == expected
    for name, entry in notes.items():
        data = (STATIC / "soundfont" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
        assert data[:3] == b"ID3" or data[0] == 0xFF, f"{name} is an MP3"
    licence = (STATIC / "soundfont" / "LICENSE").read_text()
    assert "FluidR3" in licence and "MIT license" in licence
    assert manifest["license"] == "MIT"


def test_our_own_files_load_nothing_from_another_host():
    for name in ("index.html", "playground.js", "playground.css"):
        text = (STATIC / name).read_text()
        urls = re.findall(r"https?://[^\s\"'`)]+", text)
        assert urls == ["http://www.w3.org/2000/svg"] * len(urls), f"{name}: {urls}"
    assert "soundFontUrl: SOUND_FONT" in (STATIC / "playground.js").read_text()


def test_the_shipped_assets_stay_a_sensible_size():
    total = sum(p.stat().st_size for p in STATIC.rglob("*") if p.is_file())
    assert total < 5_000_000, f"service/static is {total / 1e6:.1f} MB"


def test_the_wheel_ships_the_static_files(tmp_path):
    """`pip install` gets every file the pages load: no npm, no network at run time."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(REPO_ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("seqserve-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"service/static/{p.relative_to(STATIC)}" for p in STATIC.rglob("*") if p.is_file()}
    assert expected <= names, sorted(expected - names)[:5]
