"""How r1v starts its helper processes (the HTTP client, the grader, the verifier's workers)."""

from __future__ import annotations

import multiprocessing as mp


def start_context() -> mp.context.BaseContext:
    """A multiprocessing context that is safe from a process with threads.

    Not "fork": helpers start inside `generate`, whose process has threads (HTTP clients, progress
    bars, torch); forking a threaded process can deadlock the child on a lock some other thread
    held, and forked children inherit every open descriptor (CUDA, sockets, the other children's
    pipes, so a child would not see EOF when the parent dies). A forkserver child starts clean
    and cheaply; spawn where forkserver does not exist (Windows)."""
    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")
