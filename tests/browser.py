"""A real headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages
ended by NUL on descriptors 3 and 4; no websocket, no driver), for what --dump-dom cannot tell: how wide the laid-out
page is at a given viewport, and a screenshot of it."""

from __future__ import annotations

import base64
import fcntl
import os
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import pytest

from is_telemetry.runtime import stop_process

#: How every test runs Chromium: headless, without a sandbox (root in CI), and nothing it would fetch or sync.
HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        raise RuntimeError("Chromium is missing: apt-get install -y chromium")
    return path


class Browser:
    """One headless Chromium with one page. Use as a context manager."""

    def __init__(self, profile: Path, timeout_s: float = 60.0) -> None:
        self.profile, self.timeout_s = profile, timeout_s
        self.next_id = 0
        self.buffer = b""
        self.session = ""
        self.log_path = profile.parent / f"{profile.name}-chromium.log"  # what Chromium said, for a failure

    def __enter__(self) -> Browser:
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        # the child's ends above 9, so that putting them on 3 and 4 cannot overwrite one with the other
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome_r, from_chrome_w)]
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        to_chrome_r, from_chrome_w = high
        command = [
            chromium_path(),
            *HEADLESS,
            f"--user-data-dir={self.profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # the protocol is on descriptors 3 (commands) and 4 (answers): bash puts the pipes there (dash takes one digit)
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}', *command],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "wb"),
            start_new_session=True,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        try:
            self.call("Browser.close", session=False)
        except (OSError, RuntimeError, TimeoutError):
            pass
        stop_process(self.process, 10, kill_group=True)
        for fd in (self.to_chrome, self.from_chrome):
            os.close(fd)

    def call(self, method: str, session: bool = True, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer (events meanwhile are dropped)."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self.to_chrome, orjson.dumps(message) + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            while b"\0" not in self.buffer:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no answer to {method} within {self.timeout_s:g}s")
                chunk = os.read(self.from_chrome, 1 << 16)
                if not chunk:
                    log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
                    raise RuntimeError(f"Chromium closed the pipe (answering {method}):\n{log}")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            answer = orjson.loads(raw)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return dict(answer.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, width: int, height: int, ready: str = "document.body.dataset.state === 'ready'") -> None:
        """Load `url` in a viewport of width x height CSS pixels, until `ready` (a JS expression) is true."""
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + self.timeout_s
        while not self.evaluate(f"!!(document.body && ({ready}))"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} was not ready within {self.timeout_s:g}s")
            time.sleep(0.2)

    def screenshot(self, path: Path, full_height: bool = True) -> None:
        """A PNG of the page (its whole height by default)."""
        height = int(self.evaluate("document.documentElement.scrollHeight")) if full_height else None
        width = int(self.evaluate("window.innerWidth"))
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if height is not None:
            params["clip"] = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))


def readme_screenshot(url: str, out: Path, width: int = 1200, scale: float = 0.75, quality: int = 80) -> int:
    """docs/screenshot.webp: the top of the dashboard at `url` (the header, the cards and the first four charts),
    `width` CSS pixels wide, drawn at `scale`, as WebP. Its size in bytes."""
    import tempfile

    with tempfile.TemporaryDirectory() as profile, Browser(Path(profile) / "profile") as page:
        page.open(url, width, 900)
        bottom = page.evaluate("document.getElementById('panel-entities').getBoundingClientRect().bottom + scrollY")
        clip = {"x": 0, "y": 0, "width": width, "height": int(bottom) + 12, "scale": scale}
        shot = page.call(
            "Page.captureScreenshot", format="webp", quality=quality, captureBeyondViewport=True, clip=clip
        )
        out.write_bytes(base64.b64decode(shot["data"]))
    return out.stat().st_size


if __name__ == "__main__":  # python -m tests.browser http://127.0.0.1:8481/ docs/screenshot.webp (a stack running)
    import sys

    print(readme_screenshot(sys.argv[1], Path(sys.argv[2])), "bytes")


CHROMIUM_APT = "chromium"


def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        pytest.fail(
            f"Chromium is missing: install Debian's package with `apt-get install -y {CHROMIUM_APT}` "
            "(the browser test needs /usr/bin/chromium)",
            pytrace=False,
        )
    return path


def run_chromium(profile: Path, url: str, *mode: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        chromium(),
        *HEADLESS,
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        *mode,
        url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


class Dom(HTMLParser):
    """Every element of the dumped DOM with its attributes, text and parent."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, html: str) -> None:
        super().__init__()
        self.nodes: list[dict[str, Any]] = []
        self.stack: list[dict[str, Any]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = {
            "tag": tag,
            "attrs": {k: v or "" for k, v in attrs},
            "text": "",
            "parent": self.stack[-1] if self.stack else None,
        }
        self.nodes.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        for node in self.stack:
            node["text"] += data

    def find(self, **attrs: str) -> list[dict[str, Any]]:
        return [n for n in self.nodes if all(n["attrs"].get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def with_attr(self, name: str) -> list[dict[str, Any]]:
        return [n for n in self.nodes if name in n["attrs"]]
