"""A headless Chromium driven over the DevTools protocol through a pipe (`--remote-debugging-pipe`:
JSON messages ending in NUL, commands on the child's fd 3, replies and events on its fd 4), so the
report's browser test needs no Python package and no browser download: Debian's `chromium` is
enough. It records every request the page makes and every console message."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars"]  # fmt: skip
HOW_TO_GET = (
    "the report's browser test needs Chromium: `apt-get install -y chromium` (Debian/Ubuntu), "
    "or point R1V_CHROMIUM at a Chrome/Chromium binary"
)


def find_chromium() -> str | None:
    found = os.environ.get("R1V_CHROMIUM")
    if found:
        return found
    return next(
        (p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))), None
    )


class Browser:
    """One page in a headless Chromium; `requests` and `console` fill as the page loads."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_child, self._send = _high_pipe()
        self._recv, from_child = _high_pipe()
        fds = (to_child, from_child)

        def wire() -> None:  # in the child: the pipe ends where Chromium expects them
            os.dup2(fds[0], 3)
            os.dup2(fds[1], 4)

        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4, *fds), preexec_fn=wire,
        )  # fmt: skip
        os.close(to_child)
        os.close(from_child)
        self._buffer, self._next, self.events = b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def call(self, method: str, session: bool = False, timeout: float = 60, **params: Any) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._send, json.dumps(message).encode() + b"\0")
        reply = self._until(lambda m: m.get("id") == self._next, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def _until(self, done: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if done(message):
                    return message
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._recv], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._recv, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe (crashed?)")
            self._buffer += chunk

    def open(self, url: str, timeout: float = 60) -> None:
        self.call("Page.navigate", session=True, url=url)
        self._until(lambda m: m.get("method") == "Page.loadEventFired", timeout)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return result["result"].get("value")

    @property
    def requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"
        ]

    @property
    def console(self) -> list[str]:
        logs = [e["params"]["entry"]["text"] for e in self.events if e["method"] == "Log.entryAdded"]
        return logs + [
            str(e["params"].get("args")) for e in self.events if e["method"] == "Runtime.consoleAPICalled"
        ]

    def screenshot(self, path: Path, width: int = 1300, max_height: int = 12000) -> None:
        """The whole page, as tall as it is (up to max_height)."""
        height = min(max_height, int(self.evaluate("document.documentElement.scrollHeight")))
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip
        shot = self.call("Page.captureScreenshot", session=True, format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):  # it may be gone already
            self.call("Browser.close", timeout=10)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._send)
        os.close(self._recv)


def _high_pipe() -> tuple[int, int]:
    """A pipe whose ends are above fd 4, so wiring them onto 3 and 4 in the child clobbers neither."""
    read, write = os.pipe()
    high = fcntl.fcntl(read, fcntl.F_DUPFD, 10), fcntl.fcntl(write, fcntl.F_DUPFD, 10)
    os.close(read)
    os.close(write)
    return high
