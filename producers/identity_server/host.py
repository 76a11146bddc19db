"""This host as an Identity Server describes itself: the message's `os` (Go's GOOS/GOARCH names) and the
User-Agent `TheThingsStack/<version> (<os>/<arch>)`."""

from __future__ import annotations

import platform
import sys

from core import __version__
from core.schema import OSTelemetry

_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv8l": "arm64",
    "i386": "386",
    "i486": "386",
    "i586": "386",
    "i686": "386",
    "x86": "386",
    "armv6l": "arm",
    "armv7l": "arm",
    "arm": "arm",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64": "mips64",
    "loongarch64": "loong64",
}


def goos() -> str:
    """GOOS-like name of this OS: linux, darwin, windows, freebsd, ..."""
    name = platform.system().lower()
    if name.startswith(("cygwin", "msys", "mingw")):
        return "windows"
    return name or sys.platform


def goarch() -> str:
    """GOARCH-like name of this machine: amd64, arm64, 386, arm, ..."""
    machine = platform.machine().lower()
    return _GOARCH.get(machine, machine)


def os_telemetry() -> OSTelemetry:
    """The message's `os` object. binary_version is this package's version; golang_version is "" (no Go
    runtime here; TTS's own senders put `go1.x.y` there, so an empty value also tells our producer apart)."""
    return OSTelemetry(operating_system=goos(), arch=goarch(), binary_version=__version__, golang_version="")


def user_agent() -> str:
    """`TheThingsStack/<version> (<os>/<arch>)` as TTS's sender spells it."""
    return f"TheThingsStack/{__version__} ({goos()}/{goarch()})"
