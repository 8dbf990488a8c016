"""The two container images, built without a Docker daemon.

buildah (as root, `--isolation chroot`) builds docker/Dockerfile.operator and
docker/Dockerfile.runtime with their base given as a build argument. Where the public
base cannot be pulled, the base is a Debian bookworm root filesystem made by mmdebstrap
(bookworm's python3 is 3.11, the Python the pins were resolved for).

Images stay in buildah's own storage, tagged with a hash of their inputs (the Dockerfile,
the pinned requirements, the base and the project files the Dockerfile copies): an
unchanged image is found, not rebuilt, and `--layers` reuses the slow pip layer when only
the code changed. The pinned wheels are downloaded once per requirements file into a
wheelhouse outside the repository, which the build reads offline (a pip.conf with
`no-index` and the wheelhouse mounted into the RUN steps, never into an image): torch is
downloaded once per machine, not once per build. One build of each image runs at a time on a
machine (a file lock): CI starts the runtime image's build in the background while the tests
run, and the tests that need it wait for it and then find it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import DevError
from .paths import cache_dir

Progress = Callable[[str], None]

SUITE = "bookworm"
# python-is-python3: the operator Dockerfile, written for python:3.11-slim, calls `python`;
# passwd: groupadd and useradd.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "passwd", "ca-certificates")
BASE_REPOSITORY = "localhost/imagefleet-base"
WHEELS_INSIDE = "/wheels"
SKIPPED_PARTS = {"__pycache__", ".mypy_cache", ".pytest_cache"}


@dataclass(frozen=True)
class ImageSpec:
    name: str
    dockerfile: str
    base_arg: str  # the build argument that names the base image
    requirements: str
    inputs: tuple[str, ...]  # files and directories (relative to the project root) the build reads


OPERATOR = ImageSpec(
    "imagefleet-operator", "docker/Dockerfile.operator", "PYTHON_IMAGE", "docker/requirements-operator.txt",
    ("docker/Dockerfile.operator", "docker/requirements-operator.txt", "pyproject.toml", "README.md", "operator"),
)
RUNTIME = ImageSpec(
    "imagefleet-runtime", "docker/Dockerfile.runtime", "CUDA_IMAGE", "docker/requirements-runtime.txt",
    ("docker/Dockerfile.runtime", "docker/requirements-runtime.txt", "pyproject.toml", "README.md", "operator",
     "runtime"),
)


@dataclass(frozen=True)
class Image:
    reference: str
    build_seconds: float | None  # None: found in storage, not built
    size_bytes: int


def buildah(*args: str) -> str:
    result = subprocess.run(["buildah", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise DevError(f"buildah {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result.stdout


def size_bytes(reference: str) -> int:
    """The image's size in storage (uncompressed layers)."""
    listed = json.loads(buildah("images", "--json", reference))
    return int(listed[0]["size"]) if isinstance(listed[0]["size"], int) else _parse_size(listed[0]["size"])


def _parse_size(text: str) -> int:
    number, unit = text.split()
    return int(float(number) * {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit])


def _found(reference: str) -> bool:
    return subprocess.run(["buildah", "inspect", "--type", "image", reference], capture_output=True).returncode == 0


@contextmanager
def _exclusive(name: str, progress: Progress) -> Iterator[None]:
    """Hold the machine's build lock of image `name` (waiting for another build of it to finish)."""
    path = cache_dir() / "images" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another build of {name} on this machine ({path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def base_image(progress: Progress = print) -> Image:
    """A Debian bookworm base with Python 3.11 (mmdebstrap), imported once into buildah's storage."""
    with _exclusive(BASE_REPOSITORY.rsplit("/", 1)[-1], progress):
        return _base_image(progress)


def _base_image(progress: Progress) -> Image:
    key = hashlib.sha256(" ".join((SUITE, *BASE_PACKAGES)).encode()).hexdigest()[:12]
    reference = f"{BASE_REPOSITORY}:{SUITE}-{key}"
    if _found(reference):
        return Image(reference, None, size_bytes(reference))
    progress(f"making a Debian {SUITE} base with mmdebstrap ({', '.join(BASE_PACKAGES)})")
    started = time.monotonic()
    work = cache_dir() / "images"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        rootfs = Path(scratch) / "rootfs.tar"
        result = subprocess.run(
            ["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs)],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise DevError(f"mmdebstrap failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
        container = buildah("from", "scratch").strip()
        try:
            buildah("add", container, str(rootfs), "/")
            buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--cmd", "python3", container)
            buildah("commit", "--quiet", container, reference)
        finally:
            subprocess.run(["buildah", "rm", container], capture_output=True)
    return Image(reference, time.monotonic() - started, size_bytes(reference))


def input_key(spec: ImageSpec, root: Path, base: str) -> str:
    """A hash of everything the build reads: the base's name and the content of every input file."""
    digest = hashlib.sha256(f"{spec.name}\0{base}\0".encode())
    for entry in spec.inputs:
        path = root / entry
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            relative = file.relative_to(root)
            if SKIPPED_PARTS.intersection(relative.parts) or file.suffix == ".pyc" or ".egg-info" in str(relative):
                continue
            digest.update(f"{relative}\0".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def wheelhouse(spec: ImageSpec, root: Path, progress: Progress = print) -> Path:
    """Every pinned wheel of `spec` (and the project's build requirements), downloaded once
    into a directory keyed by their hash, with the pip.conf that installs from it offline."""
    requirements = (root / spec.requirements).read_text()
    build_requires = tomllib.loads((root / "pyproject.toml").read_text())["build-system"]["requires"]
    key = hashlib.sha256("\n".join([requirements, *build_requires]).encode()).hexdigest()[:16]
    directory = cache_dir() / "wheels" / key
    config = directory / "pip.conf"
    if config.is_file():
        return directory
    progress(f"downloading the pinned wheels of {spec.requirements} into {directory} (once)")
    staging = directory.with_name(f".{key}.partial")
    staging.mkdir(parents=True, exist_ok=True)
    for args in (["--no-deps", "-r", str(root / spec.requirements)], build_requires):
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(staging), *args],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise DevError(f"a pinned requirement of {spec.requirements} does not resolve: {result.stderr.strip()[-2000:]}")
    (staging / "pip.conf").write_text(f"[global]\nno-index = true\nfind-links = {WHEELS_INSIDE}\n")
    staging.rename(directory)
    return directory


def build(spec: ImageSpec, root: Path, base: str, progress: Progress = print) -> Image:
    """The image of `spec` on `base`, built unless an image of the same inputs is in storage."""
    with _exclusive(spec.name, progress):
        return _build(spec, root, base, progress)


def _build(spec: ImageSpec, root: Path, base: str, progress: Progress) -> Image:
    reference = f"localhost/{spec.name}:{input_key(spec, root, base)}"
    if _found(reference):
        return Image(reference, None, size_bytes(reference))
    wheels = wheelhouse(spec, root, progress)
    log = cache_dir() / "images" / f"{spec.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    progress(f"building {reference} on {base} (log: {log})")
    started = time.monotonic()
    argv = [
        "buildah", "bud", "--isolation", "chroot", "--layers",
        "--file", str(root / spec.dockerfile),
        "--build-arg", f"{spec.base_arg}={base}",
        "--volume", f"{wheels}:{WHEELS_INSIDE}:ro",
        "--volume", f"{wheels / 'pip.conf'}:/etc/pip.conf:ro",
        "--tag", reference,
        str(root),
    ]
    with log.open("w") as out:
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise DevError(f"building {spec.name} failed ({result.returncode}); the end of {log}:\n{tail}")
    seconds = time.monotonic() - started
    _remove_older(spec, reference)
    return Image(reference, seconds, size_bytes(reference))


def _remove_older(spec: ImageSpec, keep: str) -> None:
    """Remove the earlier builds of `spec` (other tags of its name): storage keeps the latest."""
    prefix = f"localhost/{spec.name}:"
    older = [
        name
        for listed in json.loads(buildah("images", "--json"))
        for name in listed.get("names") or []
        if name.startswith(prefix) and name != keep
    ]
    if older:
        subprocess.run(["buildah", "rmi", *older], capture_output=True)
