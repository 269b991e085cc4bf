"""An aiohttp server on its own event loop in a background thread, for the test servers."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from typing import Any

from aiohttp import web


class ThreadedServer:
    """Subclasses give `name` and `make_runner()`; use as a context manager or start()/stop()."""

    name = "test server"
    port: int
    tls: ssl.SSLContext | None = None  # serve https with this context

    def make_runner(self) -> web.AppRunner:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Any:
        loop = asyncio.new_event_loop()
        self._loop: asyncio.AbstractEventLoop | None = loop
        self._thread: threading.Thread | None = threading.Thread(
            target=loop.run_forever, name=self.name, daemon=True
        )
        self._thread.start()
        self._runner: web.AppRunner | None = None

        async def boot() -> int:
            self._runner = runner = self.make_runner()
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024, ssl_context=self.tls)
            await site.start()
            return runner.addresses[0][1]

        try:
            self.port = asyncio.run_coroutine_threadsafe(boot(), loop).result(timeout=10)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {exc!r}") from exc
        return self

    def stop(self) -> None:
        loop, thread = getattr(self, "_loop", None), getattr(self, "_thread", None)
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if self._runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()
