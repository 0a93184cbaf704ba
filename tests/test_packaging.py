"""What PyPI would get: an sdist and a wheel built from this checkout, each
installed into a fresh virtual environment and run there.

For speed the builds use this environment's setuptools without build isolation,
and the fresh environments borrow this one's installed packages (the
dependencies) through a .pth file instead of downloading them: what is checked
is the package as built, imported and run from where it was installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

import redis_wsgi_cache

ROOT = Path(__file__).resolve().parent.parent
PROJECT_URL = "https://github.com/redis-wsgi-cache/redis-wsgi-cache"
# What a checkout may hold that is no source: never copied into the build.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)
CLEAN_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
BUILD = "import sys; from setuptools import build_meta; print(build_meta.{hook}(sys.argv[1]))"


def run(*command: str | Path, cwd: Path) -> str:
    """Run ``command`` with nothing but its own environment on its path."""
    done = subprocess.run(
        command, cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done.stdout


def build(hook: str, source: Path, into: Path) -> Path:
    """Run a PEP 517 hook of setuptools in ``source``; the file it made."""
    name = run(sys.executable, "-c", BUILD.format(hook=hook), into, cwd=source)
    return into / name.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """The sdist of a copy of the checkout, and the wheel built from that sdist
    (as ``pip install`` of the sdist would)."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "checkout"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    sdist = build("build_sdist", source, work)
    with tarfile.open(sdist) as archive:
        archive.extractall(work / "unpacked", filter="data")
    (unpacked,) = (work / "unpacked").iterdir()
    return {"sdist": sdist, "wheel": build("build_wheel", unpacked, work)}


def fresh_venv(path: Path) -> Path:
    """A new virtual environment whose own site-packages is empty, seeing this
    environment's packages after it; its python."""
    venv.EnvBuilder(with_pip=False).create(path)
    python = path / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=path)
    borrowed = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (Path(purelib.strip()) / "borrowed.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    return python


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installs_imports_and_runs_in_a_fresh_venv(dists, kind, tmp_path):
    python = fresh_venv(tmp_path / "venv")
    # --ignore-installed: the borrowed packages include this checkout's own
    # install, which is not the new environment's to replace.
    run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        "--no-build-isolation",
        "--no-cache-dir",
        "--ignore-installed",
        "--disable-pip-version-check",
        dists[kind],
        cwd=tmp_path,
    )

    imported = run(
        python,
        "-c",
        "import redis_wsgi_cache, redis_wsgi_cache.integrations.paste as p;"
        " print(redis_wsgi_cache.__version__, redis_wsgi_cache.__file__)",
        cwd=tmp_path,
    )
    usage = run(tmp_path / "venv" / "bin" / "redis-wsgi-cache", "--help", cwd=tmp_path)

    version, location = imported.split()
    assert version == redis_wsgi_cache.__version__
    assert Path(location).is_relative_to(tmp_path / "venv")
    assert usage.startswith("usage: redis-wsgi-cache")


def test_the_wheel_holds_the_package_its_types_and_license_only(dists):
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = wheel.namelist()
        (info,) = {name.split("/")[0] for name in names if ".dist-info/" in name}
        metadata = wheel.read(f"{info}/METADATA").decode()
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()

    assert all(name.startswith(("redis_wsgi_cache/", f"{info}/")) for name in names), names
    assert not [name for name in names if name.startswith(("example_app", "tests", "benchmarks"))]
    assert "redis_wsgi_cache/py.typed" in names
    assert "redis_wsgi_cache/integrations/flask.py" in names
    # The dashboard's page and chart library, with the library's license.
    for static in ("index.html", "dashboard.js", "uPlot.iife.min.js", "uPlot.LICENSE"):
        assert f"redis_wsgi_cache/dashboard/static/{static}" in names
    assert {f"{info}/LICENSE", f"{info}/licenses/LICENSE"} & set(names)
    assert f"Project-URL: Source, {PROJECT_URL}" in metadata
    assert "[paste.filter_factory]\nmain = redis_wsgi_cache.integrations.paste:filter_factory" in (
        entry_points
    )


def test_the_sdist_holds_what_builds_the_package_and_no_tests(dists):
    with tarfile.open(dists["sdist"]) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}

    assert {
        "LICENSE",
        "README.md",
        "setup.cfg",
        "pyproject.toml",
        "redis_wsgi_cache/py.typed",
    } <= names
    assert not [name for name in names if name.startswith(("tests", "example_app", "benchmarks"))]


def test_readme_links_are_absolute():
    """The README is PyPI's project page, where a relative link leads nowhere."""
    targets = re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text())

    assert targets
    assert [target for target in targets if not target.startswith(("https://", "#"))] == []
