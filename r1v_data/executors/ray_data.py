"""`--executor ray`: a stage's model work on Ray Data, over an actor pool of r1v's own backends.

The driver (the process holding the store's lock) builds the requests and their ids exactly as on
one machine, skips the finished ones, and cuts the rest into blocks of `block_size`. Each block is
one row of a Ray Dataset; `map_batches` hands the rows to a fixed pool of `BlockWorker` actors
(`actors` of them, each reserving `num_cpus` / `num_gpus`), each holding one backend. An actor
writes a block's rows as that block's own part (`store.block_parts`: atomic, named by run and
block) and returns what finished; the driver counts, reports progress and, at the end, registers
the parts in the catalog, which only it writes.

Faults: Ray Data's actor pools restart a dead actor and retry its task (max_restarts and
max_task_retries are -1 by default), so a killed worker, actor or node costs the blocks it was
running; a retried block replaces its own part, so no request gets two rows. If the driver itself
dies, the next run skips every request whose part reached disk.

Why not `ray.data.llm`'s processors: a request id hashes the prompt r1v renders, and a trace row
holds r1v's parse and verdict; the vLLM processor renders with its own chat-template stage and
the HTTP processor has no r1v retry/give-up rules. Per-request sampling (DRLC's penalty) and
images would fit, but identity would not; r1v's backends in actors keep both the same on one
machine and on a cluster.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from r1v_data.config import ExecutorConfig
from r1v_data.errors import MissingExtraError, R1VError
from r1v_data.executors.base import Done, Work
from r1v_data.store import PartWriter


class RayExecutor:
    name = "ray"

    def __init__(self, cfg: ExecutorConfig):
        self.ray, self.cfg = import_ray(), cfg
        connect(self.ray, cfg.address)
        self.next_block = 0  # block numbers are unique over the run: they name its parts

    def map(self, work: Work, items: Iterable[Any], writer: PartWriter) -> Iterator[Done]:
        it = iter(items)
        while window := list(islice(it, self.cfg.window)):
            yield from self._window(work, window, writer)

    def close(self) -> None:
        pass  # the cluster outlives a run; a local one started here ends with this process

    def _window(self, work: Work, items: list[Any], writer: PartWriter) -> Iterator[Done]:
        from r1v_data.executors.ray_worker import BlockWorker

        size = self.cfg.block_size
        blocks = [items[i : i + size] for i in range(0, len(items), size)]
        rows = [{"block": self.next_block + i, "payload": pickle.dumps(b)} for i, b in enumerate(blocks)]
        self.next_block += len(blocks)
        ds = self.ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            BlockWorker,
            fn_constructor_kwargs={"spec": work.spec, "options": work.options, "fn": work.fn,
                                   "root": str(writer.store.root), "table": work.table, "run_id": writer.run_id},
            batch_size=1,
            batch_format="numpy",
            compute=self.ray.data.ActorPoolStrategy(size=min(self.cfg.actors, len(blocks))),
            num_cpus=self.cfg.num_cpus,
            num_gpus=gpus_per_actor(self.cfg, work, self.ray.cluster_resources().get("GPU", 0)),
        )  # fmt: skip
        try:
            for row in ds.iter_rows():
                yield from pickle.loads(row["dones"])
        except Exception as exc:  # Ray wraps a worker's error: show r1v's own line where there is one
            raise _r1v_cause(exc) or R1VError(f"the Ray executor failed: {_first_line(exc)}") from exc


def import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingExtraError("ray", "ray") from None
    return ray


def gpus_per_actor(cfg: ExecutorConfig, work: Work, cluster_gpus: float) -> float:
    """What one actor reserves: as configured, else a vllm: engine's tensor x pipeline parallel
    GPUs (one engine per GPU, or per parallel group) on a cluster that has GPUs, else none (vLLM's
    CPU build: an actor waiting for a GPU that no node has would wait forever)."""
    if cfg.num_gpus is not None:
        return cfg.num_gpus
    if not (work.spec or "").startswith("vllm:") or not cluster_gpus:
        return 0
    tp = int(work.options.get("tensor_parallel_size", 1))
    return float(tp * int(work.options.get("pipeline_parallel_size", 1)))


def connect(ray: Any, address: str | None) -> None:
    """Join `address`, or the cluster this process already runs, or start a local one. Ray and
    Ray Data print nothing of their own into r1v's output (errors still reach the stage)."""
    if not ray.is_initialized():
        # a local cluster's workers import the same r1v as this process (a source checkout too)
        env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
        ray.init(address=address, log_to_driver=False, logging_level="ERROR", include_dashboard=False,
                 runtime_env={"env_vars": env} if env else None)  # fmt: skip
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def _r1v_cause(exc: BaseException) -> R1VError | None:
    """The R1VError (a backend that cannot work, a bad option) behind Ray's wrappers, if any."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, R1VError):
            return e
        stack += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1][:300] if text else type(exc).__name__
