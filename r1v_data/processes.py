"""How r1v starts its helper processes (the HTTP client, the grader, the verifier's workers)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import socket
import struct
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any

from r1v_data.errors import R1VError

# A helper's bootstrap: the parent's import path first (so it imports the parent's r1v_data), then
# `target(connection, *args)`. Nothing of the caller's main script runs in the helper. The path is
# read on its own, before the arguments, whose unpickling imports their classes' modules; and the
# interpreter is isolated (-I) until then: `python -c` would put the current folder first.
_BOOT = (
    "import importlib, pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
    "fd, target, args = pickle.load(sys.stdin.buffer); from multiprocessing.connection import Connection; "
    "module, _, name = target.partition(':'); getattr(importlib.import_module(module), name)(Connection(fd), *args)"
)


def start_helper(target: str, *args: Any) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start `python -c` running `target` ("module:function") with one end of a pipe and `args`
    (pickled); the process and the other end.

    A plain interpreter, not multiprocessing's spawn or forkserver: those first run the caller's
    main script again (a script without an `if __name__ == "__main__":` guard then starts its
    work over, and one that imports torch pays for it before the helper starts). Its own session,
    so a Ctrl-C at the terminal reaches only the driver, which then closes the pipe; a helper
    exits when its end of the pipe closes, also when the driver was SIGKILLed."""
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-c", _BOOT],
            stdin=subprocess.PIPE,
            pass_fds=(theirs.fileno(),),
            start_new_session=True,
        )
        try:
            with process.stdin:  # type: ignore[union-attr]
                pickle.dump(sys.path, process.stdin, protocol=5)
                pickle.dump((theirs.fileno(), target, args), process.stdin, protocol=5)
        except BrokenPipeError:
            raise R1VError(
                f"a helper process for {target} exited at start (status {process.wait()})"
            ) from None
    finally:
        theirs.close()
    return process, Connection(ours.detach())


def stop_helper(
    process: subprocess.Popen[bytes] | None, conn: Connection | None, timeout_s: float = 10
) -> None:
    """Ask a helper to stop (None down its pipe), wait for it, kill it if it does not."""
    if conn is not None:
        with contextlib.suppress(OSError, ValueError):
            conn.send(None)
        conn.close()
    if process is not None:
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def pipe_streams(conn: Connection) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A helper's end of its pipe as asyncio streams, for a helper whose work is an event loop:
    it reads what the driver sends and writes back without blocking the loop, and without a
    thread for either (threads of one process take turns on one GIL). `conn` is closed."""
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    conn.close()
    return await asyncio.open_connection(sock=sock)


# `Connection.send` frames a pickle with its length: 4 bytes, or -1 and then 8 for 2 GiB and more
_SHORT, _LONG = struct.Struct("!i"), struct.Struct("!Q")


async def read_message(reader: asyncio.StreamReader) -> Any:
    """The next object the driver sent with `Connection.send`; EOFError once it closed the pipe."""
    try:
        (size,) = _SHORT.unpack(await reader.readexactly(_SHORT.size))
        if size == -1:
            (size,) = _LONG.unpack(await reader.readexactly(_LONG.size))
        return pickle.loads(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        raise EOFError("the driver closed the pipe") from None


def write_message(writer: asyncio.StreamWriter, obj: Any) -> None:
    """Queue `obj` for the driver's `Connection.recv` (the transport sends it as the socket takes it)."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    size = _SHORT.pack(len(data)) if len(data) < 2**31 else _SHORT.pack(-1) + _LONG.pack(len(data))
    writer.writelines((size, data))
