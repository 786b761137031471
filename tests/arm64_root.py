"""A Debian arm64 root run under qemu-user emulation: the Raspberry Pi's architecture on this machine.

The root is built in cached layers under ``~/.cache/maskwatch/arm64/`` (``$MASKWATCH_ARM64_CACHE``), each
named by a key of what it is made from, built in a temporary folder and renamed into place, so an
interrupted build never leaves a half layer (leftovers are removed by the next build):

- ``root-<key>``: ``debootstrap`` of Debian bookworm arm64 (key: release, mirror, packages);
- ``wheels-<key>``: the aarch64 wheels of ``maskwatch[edge]``'s dependencies, downloaded on the host with
  ``pip download --platform`` (key: the wheel's ``Requires-Dist``, the root's Python and glibc);
- ``venv-<key>``: ``/opt/venv`` in the root with those wheels installed offline (key: both keys above).

A :class:`Session` stacks the layers read-only under a throwaway overlay in a private mount namespace
(``unshare --mount``): whatever a test installs or writes stays out of the cache, and the kernel drops
every mount when the command ends, also when it is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

RELEASE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
#: What the root holds beyond ``minbase``: Python for the venv, and what deploy/pi/install.sh installs
#: (there it is only checked then, so the install test need not unpack it under emulation each time).
#: systemd gives install.sh its ``systemctl`` and the tests ``systemd-analyze``.
PACKAGES = ("python3", "python3-venv", "python3-pip", "libgl1", "libglib2.0-0", "openssl", "ca-certificates", "systemd")
BINFMT_NAME = "qemu-aarch64"
BINFMT_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")
#: Host tools and the Debian packages that provide them.
HOST_TOOLS = {
    "debootstrap": "debootstrap",
    "qemu-aarch64-static": "qemu-user-static",
    "unshare": "util-linux",
    "chroot": "coreutils",
}
VENV = "/opt/venv"
#: The CPU qemu emulates (``QEMU_CPU``, read by qemu at each exec): the Raspberry Pi 4's core. qemu's default
#: ``max`` CPU has extensions no Pi has, and under qemu-user 7.2 the int8 kernels LiteRT picks for it return one
#: constant output whatever the input (measured: the committed int8 classifier said 0.996 no mask for a face, a
#: gray and a noise image); with ``cortex-a72`` or the Pi 5's ``cortex-a76`` both models give the x86 numbers.
CPU = "cortex-a72"


def cache_dir() -> Path:
    """Where the layers are kept: ``$MASKWATCH_ARM64_CACHE`` or ``~/.cache/maskwatch/arm64``."""
    configured = os.environ.get("MASKWATCH_ARM64_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "maskwatch" / "arm64"


def emulation_problem() -> str | None:
    """Why arm64 programs cannot be run here (root, tools, binfmt), or ``None`` when they can.

    As root, registers ``qemu-aarch64`` with binfmt_misc from qemu-user-static's ``binfmt.d`` file when it is
    missing (mounting binfmt_misc first when needed); the ``F`` flag there makes it work inside a chroot.
    """
    if sys.platform != "linux":
        return f"arm64 emulation needs Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return "the arm64 tests need root (debootstrap, chroot, mounts); run 'sudo bash tests/run'"
    missing = sorted({package for tool, package in HOST_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        return f"missing host packages for arm64 emulation: {' '.join(missing)} (apt-get install {' '.join(missing)})"
    if not (BINFMT_MISC / "register").exists():
        mounted = subprocess.run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_MISC)], capture_output=True, text=True, check=False
        )
        if mounted.returncode != 0:
            return f"binfmt_misc is not mounted and cannot be: {mounted.stderr.strip()}"
    entry = BINFMT_MISC / BINFMT_NAME
    if not entry.exists():
        if not BINFMT_CONF.is_file():
            return f"{BINFMT_CONF} is missing (package qemu-user-static)"
        rule = next(line for line in BINFMT_CONF.read_text().splitlines() if line.startswith(":"))
        try:
            (BINFMT_MISC / "register").write_text(rule)
        except OSError as exc:
            return f"cannot register {BINFMT_NAME} with binfmt_misc: {exc}"
    state = entry.read_text()
    if not state.startswith("enabled"):
        return f"binfmt {BINFMT_NAME} is registered but disabled ({entry})"
    if "F" not in state.split("flags:", 1)[-1].split("\n", 1)[0]:
        return f"binfmt {BINFMT_NAME} lacks the F flag, so qemu cannot run inside a chroot ({entry})"
    return None


def digest(*parts: object) -> str:
    """A short key for a cache layer, from everything the layer is built from."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the cache's lock (builds of other test sessions wait)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def remove_tree(path: Path) -> None:
    """Delete a folder without ever crossing into another file system (a mount left by a killed build)."""
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def build_layer(final: Path, build: Callable[[Path], None]) -> Path:
    """Return ``final``, building it first with ``build(tmp)`` in a temporary sibling folder renamed into place."""
    if final.is_dir():
        return final
    with locked(final.parent):
        if final.is_dir():
            return final
        for leftover in final.parent.glob(".tmp-*"):
            remove_tree(leftover)
        tmp = final.parent / f".tmp-{final.name}"
        tmp.mkdir()
        build(tmp)
        tmp.rename(final)
    return final


def in_namespace(
    script: str, args: Sequence[str] = (), *, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a shell ``script`` in a private mount namespace: its mounts vanish when it ends."""
    command = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-euc", script, "sh", *args]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )


def checked(result: subprocess.CompletedProcess[str], what: str) -> subprocess.CompletedProcess[str]:
    """``result`` when it succeeded; else an error with the command's output."""
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed with exit code {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def base_root_path() -> Path:
    """Where the cached debootstrap root is (or will be)."""
    return cache_dir() / f"root-{digest(RELEASE, MIRROR, PACKAGES)}"


def mirror_problem(timeout: float = 30) -> str | None:
    """Why the root cannot be built here (the Debian mirror out of reach), or ``None`` (also when it is cached)."""
    if base_root_path().is_dir():
        return None
    release = f"{MIRROR}/dists/{RELEASE}/Release"
    try:
        with urllib.request.urlopen(release, timeout=timeout) as response:
            response.read(1)
    except OSError as exc:
        return f"the arm64 root is not cached and the Debian mirror is out of reach ({release}: {exc})"
    return None


def base_root() -> Path:
    """The cached debootstrap root (cold: a few minutes, the packages fetched from the Debian mirror)."""
    packages = ",".join(PACKAGES)

    def build(tmp: Path) -> None:
        script = 'debootstrap --arch=arm64 --variant=minbase --include="$1" "$2" "$3" "$4"'
        checked(in_namespace(script, [packages, RELEASE, str(tmp), MIRROR], timeout=3600), "debootstrap")
        for cached in (tmp / "var" / "cache" / "apt" / "archives").glob("*.deb"):
            cached.unlink()

    return build_layer(base_root_path(), build)


def root_python(root: Path) -> str:
    """The root's Python version, e.g. ``3.11`` (bookworm's ``python3``)."""
    target = os.readlink(root / "usr" / "bin" / "python3")
    match = re.fullmatch(r"python(\d+\.\d+)", target)
    if match is None:
        raise RuntimeError(f"unexpected python3 link in the root: {target}")
    return match.group(1)


def root_glibc(root: Path) -> tuple[int, int]:
    """The root's glibc version, from dpkg's record of package ``libc6``."""
    status = (root / "var" / "lib" / "dpkg" / "status").read_text()
    match = re.search(r"^Package: libc6\n(?:.+\n)*?Version: (\d+)\.(\d+)", status, re.MULTILINE)
    if match is None:
        raise RuntimeError("libc6 is not recorded in the root's dpkg status")
    return int(match.group(1)), int(match.group(2))


def requires_dist(wheel: Path, extra: str) -> list[str]:
    """The ``Requires-Dist`` entries of a wheel's metadata that apply with ``extra`` (and without extras)."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    entries = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
    return sorted(e for e in entries if "extra ==" not in e or e.endswith(f'extra == "{extra}"'))


def build_wheel(repo: Path, out: Path) -> Path:
    """Build the maskwatch wheel from the checkout ``repo`` into ``out``; return its path."""
    with tempfile.TemporaryDirectory(prefix="maskwatch-wheel-") as tmp:
        source = Path(tmp) / "src"
        shutil.copytree(
            repo,
            source,
            ignore=shutil.ignore_patterns(
                ".git",
                ".venv",
                "__pycache__",
                "*.egg-info",
                "build",
                "dist",
                "runs",
                ".cache",
                ".pytest_cache",
                ".ruff_cache",
                "node_modules",
            ),
        )
        checked(
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--no-deps",
                    "-q",
                    "--disable-pip-version-check",
                    "-w",
                    str(out),
                    str(source),
                ],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            ),
            "pip wheel",
        )
    return next(out.glob("maskwatch-*.whl"))


def aarch64_wheels(requirements: Sequence[str], root: Path, key: object) -> Path:
    """The cached aarch64 wheels of ``requirements`` (and their dependencies) for the root's Python and glibc.

    :param requirements: pip requirements; a local wheel itself is not kept, only what it needs.
    :param key: what the downloaded set depends on besides the root (e.g. a wheel's ``Requires-Dist``).
    """
    python = root_python(root)
    major, minor = root_glibc(root)
    platforms = [f"manylinux_{major}_{m}_aarch64" for m in range(17, minor + 1)] + ["manylinux2014_aarch64"]

    def build(tmp: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--python-version",
            python,
            "--implementation",
            "cp",
            *[arg for platform in platforms for arg in ("--platform", platform)],
            "-d",
            str(tmp),
            *requirements,
        ]
        checked(
            subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False), "pip download (aarch64)"
        )
        for requirement in requirements:
            (tmp / Path(requirement.split("[", 1)[0]).name).unlink(missing_ok=True)

    return build_layer(cache_dir() / f"wheels-{digest(key, python, platforms)}", build)


class Session:
    """A throwaway writable root over the cached layers; each :meth:`run` chroots into it under emulation.

    :param lowers: cached layers, top first (e.g. the venv layer, then the base root).
    :param work: an empty folder of this session (the overlay's upper and work folders go there).
    """

    def __init__(self, lowers: Sequence[Path], work: Path) -> None:
        self.lowers = list(lowers)
        self.upper = work / "upper"
        self.scratch = work / "overlay-work"
        self.merged = work / "merged"
        for folder in (self.upper, self.scratch, self.merged):
            folder.mkdir(parents=True, exist_ok=True)

    def run(
        self,
        command: Sequence[str],
        *,
        binds: Mapping[Path, str] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 900,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` (a path inside the root first) as root in the chroot.

        :param binds: host folders -> paths in the root, mounted read-only.
        :param env: the whole environment of the command (a minimal one with PATH by default).
        :param timeout: seconds before the command is killed.
        """
        lines = [
            f"mount -t overlay overlay -o lowerdir={':'.join(map(str, self.lowers))},"
            f"upperdir={self.upper},workdir={self.scratch} {self.merged}",
            f"mount -t proc proc {self.merged}/proc",
            f"mount -t sysfs sysfs {self.merged}/sys",
            f"mount --rbind /dev {self.merged}/dev",
            f"mount -t tmpfs tmpfs {self.merged}/run",
            f"cp /etc/resolv.conf {self.merged}/etc/resolv.conf",
        ]
        for source, target in (binds or {}).items():
            if not source.is_dir():
                raise NotADirectoryError(f"only folders are mounted into the root, not {source}")
            inside = shlex.quote(f"{self.merged}{target}")
            lines += [
                f"mkdir -p {inside}",
                f"mount --bind {shlex.quote(str(source))} {inside}",
                f"mount -o remount,bind,ro {inside}",
            ]
        lines.append(f'exec chroot {self.merged} "$@"')
        environment = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": "/root",
            "QEMU_CPU": CPU,
            **(env or {}),
        }
        return in_namespace(
            "\n".join(lines), ["env", "-i", *[f"{k}={v}" for k, v in environment.items()], *command], timeout=timeout
        )


def venv_layer(root: Path, wheels: Path) -> Path:
    """The cached layer holding ``/opt/venv``: a venv of the root's python3 with every wheel in ``wheels``."""

    def build(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(prefix=".tmp-work-", dir=tmp.parent) as work:
            session = Session([root], Path(work))
            script = (
                f"python3 -m venv {VENV} && {VENV}/bin/pip install -q --no-index --no-cache-dir "
                f"--disable-pip-version-check /wheels/*.whl"
            )
            checked(session.run(["sh", "-c", script], binds={wheels: "/wheels"}, timeout=3600), "venv (arm64)")
            # Only the venv is the layer; the rest of the upper folder is pip's and Python's scratch.
            (tmp / "opt").mkdir()
            (session.upper / "opt" / "venv").rename(tmp / "opt" / "venv")

    return build_layer(cache_dir() / f"venv-{digest(root.name, wheels.name)}", build)
