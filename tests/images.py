"""Local images for the image, example and compose tests: no registry pulls, built once.

- :func:`ensure_base` — ``waypost-test/python:bookworm``: a Debian bookworm rootfs with python3
  (``debootstrap --variant=minbase`` + ``docker import``), built only when missing (~40 s once per
  machine). Stands in for ``python:3.12-slim``.
- :func:`ensure_redis` — ``waypost-test/redis:bookworm``: that base plus the host's Debian
  ``redis-server`` binary and the libraries it links, run like the official ``redis:7`` image
  (port 6379 exposed, protected mode off). Built only when missing.
- :func:`ensure_waypost` — ``waypost-test/waypost:<hash>``: the top-level Dockerfile built from the
  base with wheels made on the host (``pip wheel``) in a temporary copy of the sources; the tag is
  a hash of what goes into the image, so an unchanged tree reuses the image
  (``WAYPOST_TEST_IMAGE=NAME`` tests a given image instead).

Each image carries the label ``waypost.test.image=<kind>``. Builds take a file lock, so
concurrent test sessions build each image once. Every function caches its result per process.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.tooling import missing, require_docker, require_tool

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "waypost-test/python:bookworm"
REDIS_IMAGE = "waypost-test/redis:bookworm"
WAYPOST_REPO = "waypost-test/waypost"
KIND_LABEL = "waypost.test.image"
LOCK_PATH = "/tmp/waypost-test-images.lock"
DEBIAN_MIRROR = os.environ.get("WAYPOST_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the image is built from: the package sources and the files the Dockerfile reads.
IMAGE_SOURCES = ("Dockerfile", "pyproject.toml", "README.md", "waypost", "ambassador", "dns", "registrator")
# glibc's own libraries must come from the base image (they have to match its loader).
GLIBC_CORE = ("libc.so", "libm.so", "ld-linux", "libpthread.so", "libdl.so", "librt.so", "linux-vdso")


def docker(*args: str, timeout: float = 600, input_bytes: bytes | None = None) -> str:
    """Run the docker CLI; raise RuntimeError with its output when it fails."""
    proc = subprocess.run(["docker", *args], input=input_bytes, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).decode(errors="replace")[-3000:]
        raise RuntimeError(f"docker {' '.join(args[:3])} … failed ({proc.returncode}):\n{out}")
    return proc.stdout.decode(errors="replace")


def image_exists(name: str) -> bool:
    """Whether the local engine has image `name`."""
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One image build at a time across processes on this machine."""
    with open(LOCK_PATH, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _log(message: str) -> None:
    print(f"[tests.images] {message}", file=sys.stderr, flush=True)


@functools.cache
def ensure_base() -> str:
    """The python base image, built with debootstrap when the engine lacks it; returns its name."""
    require_docker()
    if image_exists(BASE_IMAGE):
        return BASE_IMAGE
    require_tool("debootstrap")
    with build_lock():
        if image_exists(BASE_IMAGE):
            return BASE_IMAGE
        if os.geteuid() != 0:
            missing("building the base image needs root (debootstrap)", "run once as root: python3 -m tests.images")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="waypost-rootfs-") as tmp:
            rootfs = os.path.join(tmp, "rootfs")
            _log(f"building {BASE_IMAGE} with debootstrap from {DEBIAN_MIRROR} (one time, ~40 s)")
            proc = subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,python3-pip",
                 "bookworm", rootfs, DEBIAN_MIRROR], capture_output=True, timeout=900)
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).decode(errors="replace")[-3000:]
                raise RuntimeError(f"debootstrap failed ({proc.returncode}); mirror {DEBIAN_MIRROR} "
                                   f"(set WAYPOST_TEST_DEBIAN_MIRROR to use another):\n{tail}")
            for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
                shutil.rmtree(os.path.join(rootfs, cache), ignore_errors=True)
            tar = subprocess.run(["tar", "-C", rootfs, "-c", "."], capture_output=True, check=True).stdout
            docker("import", "--change", f"LABEL {KIND_LABEL}=python-base",
                   "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "--change", 'CMD ["python3"]', "-", BASE_IMAGE, input_bytes=tar)
        _log(f"built {BASE_IMAGE} in {time.monotonic() - started:.0f} s")
    return BASE_IMAGE


def _linked_libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split("=>")
        if len(parts) == 2 and parts[1].strip().startswith("/"):
            path = parts[1].split()[0]
            if not any(Path(path).name.startswith(core) for core in GLIBC_CORE):
                libs.append(path)
    return libs


@functools.cache
def ensure_redis() -> str:
    """A redis image made from the base and the host's redis-server; returns its name."""
    base = ensure_base()
    if image_exists(REDIS_IMAGE):
        return REDIS_IMAGE
    server = require_tool("redis-server")
    with build_lock():
        if image_exists(REDIS_IMAGE):
            return REDIS_IMAGE
        with tempfile.TemporaryDirectory(prefix="waypost-redis-") as ctx:
            os.mkdir(os.path.join(ctx, "lib"))
            shutil.copy2(os.path.realpath(server), os.path.join(ctx, "redis-server"))
            for lib in _linked_libraries(server):
                shutil.copy2(os.path.realpath(lib), os.path.join(ctx, "lib", Path(lib).name))
            Path(ctx, "Dockerfile").write_text(
                f"FROM {base}\n"
                "COPY redis-server /usr/local/bin/redis-server\n"
                "COPY lib/ /usr/local/lib/redis/\n"
                "ENV LD_LIBRARY_PATH=/usr/local/lib/redis\n"
                "WORKDIR /data\n"
                "EXPOSE 6379\n"
                f"LABEL {KIND_LABEL}=redis\n"
                # like the official image without a config file: reachable from other containers
                'CMD ["redis-server", "--protected-mode", "no"]\n')
            docker("build", "-q", "-t", REDIS_IMAGE, ctx)
        try:
            docker("run", "--rm", REDIS_IMAGE, "redis-server", "--version", timeout=60)
        except RuntimeError as exc:
            docker("rmi", REDIS_IMAGE)
            raise RuntimeError(f"the host's redis-server does not run on {base} (different Debian release?): "
                               f"{exc}") from None
    return REDIS_IMAGE


def _source_files() -> list[Path]:
    files: list[Path] = []
    for name in IMAGE_SOURCES:
        path = ROOT / name
        if path.is_dir():
            files.extend(p for p in sorted(path.rglob("*"))
                         if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
        elif path.exists():
            files.append(path)
    return files


def waypost_tag() -> str:
    """``waypost-test/waypost:<hash of the image's inputs and the base image id>``."""
    digest = hashlib.sha256(docker("image", "inspect", "-f", "{{.Id}}", ensure_base()).encode())
    for path in _source_files():
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{WAYPOST_REPO}:{digest.hexdigest()[:12]}"


@functools.cache
def ensure_waypost() -> str:
    """Build the top-level Dockerfile offline (host-built wheels); returns the image name.

    ``WAYPOST_TEST_IMAGE=NAME`` skips the build and tests that image instead (e.g. a release).
    """
    if os.environ.get("WAYPOST_TEST_IMAGE"):
        return os.environ["WAYPOST_TEST_IMAGE"]
    base = ensure_base()
    tag = waypost_tag()
    if image_exists(tag):
        return tag
    with build_lock():
        if image_exists(tag):
            return tag
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="waypost-image-") as ctx:
            for path in _source_files():
                target = Path(ctx) / path.relative_to(ROOT)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
            proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", ctx, "setuptools", "wheel",
                                   "-w", os.path.join(ctx, "wheelhouse")], capture_output=True, timeout=600)
            if proc.returncode != 0:
                raise RuntimeError("pip wheel failed:\n" + (proc.stdout + proc.stderr).decode(errors="replace")[-3000:])
            for junk in ("build", "waypost.egg-info"):
                shutil.rmtree(os.path.join(ctx, junk), ignore_errors=True)
            docker("build", "-q", "-t", tag, "--label", f"{KIND_LABEL}=waypost", "--build-arg", f"BASE_IMAGE={base}",
                   "--build-arg", "PIP_NO_INDEX=1", ctx)
        _prune_old_waypost_images(keep=tag)
        _log(f"built {tag} in {time.monotonic() - started:.0f} s")
    return tag


def _prune_old_waypost_images(keep: str, older_than: float = 3600) -> None:
    """Remove earlier builds (other source hashes) more than an hour old, and dangling build stages."""
    out = docker("image", "ls", "--filter", f"label={KIND_LABEL}=waypost", "--format",
                 "{{.Repository}}:{{.Tag}} {{.ID}}")
    for line in out.splitlines():
        name, _, image_id = line.partition(" ")
        if name == keep or not name.startswith(WAYPOST_REPO + ":"):
            continue
        created = docker("image", "inspect", "-f", "{{.Created}}", image_id).strip()
        age = time.time() - _parse_docker_time(created)
        if age > older_than:
            subprocess.run(["docker", "rmi", name], capture_output=True)
    # The classic builder leaves the Dockerfile's build stage behind as a dangling image.
    dangling = docker("image", "ls", "-q", "--filter", "dangling=true").split()
    for image_id in dangling:
        cmd = subprocess.run(["docker", "image", "inspect", "-f", "{{json .ContainerConfig.Cmd}}", image_id],
                             capture_output=True, text=True).stdout
        if "/opt/waypost/bin/pip install" in cmd:
            subprocess.run(["docker", "rmi", image_id], capture_output=True)


def _parse_docker_time(text: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(text[:19] + "+00:00").timestamp()
    except ValueError:
        return time.time()


def image_size(name: str) -> int:
    """Size of image `name` in bytes."""
    return int(docker("image", "inspect", "-f", "{{.Size}}", name).strip())


if __name__ == "__main__":  # `python3 -m tests.images`: build everything ahead of a test run
    for build in (ensure_base, ensure_redis, ensure_waypost):
        print(build())
