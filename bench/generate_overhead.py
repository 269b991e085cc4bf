"""Overhead of `generate` over calling the same backend directly, on the same requests, and what a
SIGKILL costs: how many requests a resumed run sends again, beside how many were in flight.

    python bench/generate_overhead.py [--n-per-problem 100] [--latency-ms 50] [--hf] [--no-kill]

openai: a local OpenAI-compatible server with a fixed latency (tests/servers/fake_openai.py, in a
child process); the same requests go (a) through a bare aiohttp script (`concurrency` workers
sharing one `ClientSession`, each posting a body with `json=` and reading the reply with `.json()`:
the anchors' raw client, and the baseline), (b) straight through `OpenAIBackend.generate` with its
client loop in a thread of the calling process (`client_process=False`: r1v's own HTTP client with
nothing around it) and (c) through `run_generate` (request ids, resume check, parsing,
verification, trace parts written to a store). hf (with --hf): a tiny random Llama through
`HFBackend`, (b) against (c). Prints the throughputs and the ratios; the target is >= 0.95 of (a).

kill: a real `r1v-data generate` subprocess against a fresh fake server is SIGKILLed half way
(when the server has received half the requests); the server's count of requests it was still
answering at that moment is "in flight at the kill"; the run is then resumed to the end, and the
server's count of requests received twice is "re-sent" (the target: no more than in flight).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the fake server and the tiny model builder

from servers.fake_openai import FakeOpenAIProcess  # noqa: E402
from tiny_models import build_tiny_llama  # noqa: E402

from r1v_data.backends import GenRequest, Sampling, make_backend  # noqa: E402
from r1v_data.backends.prompts import build_prompt  # noqa: E402
from r1v_data.config import GenerateConfig, IngestConfig, SamplingConfig  # noqa: E402
from r1v_data.stages.generate import run_generate  # noqa: E402
from r1v_data.stages.ingest import run_ingest  # noqa: E402
from r1v_data.store import Store  # noqa: E402


def sample_store(root: Path) -> Path:
    store = root / "store"
    run_ingest(IngestConfig(store=store, sources=["builtin:sample"]))
    return store


def direct_requests(samples: list[dict], backend, n: int, sampling: SamplingConfig) -> Iterator[GenRequest]:
    """What a script calling the backend itself would do: build each request as it is pulled."""
    base = Sampling(**sampling.model_dump(), n=n)
    for s in samples:
        prompt = build_prompt(s, supports_images=backend.supports_images)
        for i in range(n):
            yield GenRequest(
                f"{s['sample_id']}-{i}", prompt.messages, replace(base, seed=i), prompt.assistant_prefix
            )


def compare(
    name: str,
    spec: str,
    options: dict,
    n: int,
    sampling: SamplingConfig,
    work: Path,
    bare: dict | None = None,
) -> None:
    """`bare`: the options that make the backend a plain client for the direct run (for openai:,
    its loop in a thread of the calling process, as a script using aiohttp would run it)."""
    backend = make_backend(spec, **options)
    store = sample_store(work / name)
    con = Store.open(store).connect()
    samples = con.sql("SELECT * FROM samples ORDER BY sample_id").to_arrow_table().to_pylist()
    total = len(samples) * n
    direct = make_backend(spec, **options, **(bare or {}))
    script_s = None
    if spec.startswith("openai:"):
        bodies = [direct.body(r) for r in direct_requests(samples, direct, n, sampling)]
        start = time.perf_counter()
        assert aiohttp_script(direct.endpoints.all[0].chat_url, bodies, direct.concurrency) == total
        script_s = time.perf_counter() - start
    start = time.perf_counter()
    done = sum(1 for r in direct.generate(direct_requests(samples, direct, n, sampling)) if r.error is None)
    direct_s = time.perf_counter() - start
    direct.close()
    cfg = GenerateConfig(store=store, teacher=spec, n=n, sampling=sampling)
    marks: list[float] = []  # when the first result was in, and the last

    def progress(finished: int, of: int | None, *_: object, **__: object) -> None:
        if finished and (not marks or finished == of):
            marks.append(time.perf_counter())

    start = time.perf_counter()
    result = run_generate(cfg, progress=progress, backend=backend)
    via_s = time.perf_counter() - start
    backend.close()
    assert result.sent == total == done, (result.sent, total, done)
    direct, via = total / direct_s, total / via_s
    print(
        f"{name:8} generate's own time: {marks[0] - start:.2f} s to its first result (the store, its "
        f"queries, the client's start), {start + via_s - marks[-1]:.2f} s after its last (parts, catalog); "
        f"between them {(total - 1) / (marks[-1] - marks[0]):.1f} req/s"
    )
    line = f"{name:8} {total:6} requests   "
    if script_s is not None:
        script = total / script_s
        line += f"aiohttp script {script:7.1f} req/s   "
    line += f"r1v client alone {direct:7.1f} req/s   generate {via:7.1f} req/s   ratio to "
    if script_s is not None:
        line += f"the aiohttp script {via / script:.3f}, to "
    print(line + f"r1v's client alone {via / direct:.3f}")


def aiohttp_script(url: str, bodies: list[dict], concurrency: int) -> int:
    """The bare client: what a script posting these bodies with aiohttp does (`concurrency` workers,
    one session, `json=` and `.json()`); how many replies held a completion."""
    import aiohttp

    async def run() -> int:
        todo = iter(bodies)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

            async def worker() -> int:
                ok = 0
                for body in todo:
                    async with session.post(url, json=body) as resp:
                        ok += "choices" in await resp.json()
                return ok

            return sum(await asyncio.gather(*(worker() for _ in range(concurrency))))

    return asyncio.run(run())


def kill_and_resume(latency_s: float, concurrency: int, n: int, work: Path) -> None:
    store = sample_store(work / "kill")
    cli = [sys.executable, "-c", "from r1v_data.cli import main; main()", "generate", "--store", str(store)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with FakeOpenAIProcess(latency_s=latency_s) as srv:
        args = ["--teacher", f"openai:{srv.url}#fake-model", "--n", str(n),
                "--set", f"teacher_options.concurrency={concurrency}", "--json"]  # fmt: skip
        total = len(Store.open(store).sample_ids(None, None)) * n
        quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        proc = subprocess.Popen([*cli, *args], env=env, **quiet)
        while srv.stats()["total"] < total // 2 and proc.poll() is None:
            time.sleep(0.005)
        answering = srv.stats()["open"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        sent_before = srv.stats()["distinct"]
        durable = _trace_count(store, fold=True)  # what the killed run had acknowledged
        resumed = subprocess.run(
            [*cli, *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True
        )
        stats = srv.stats()
    result = json.loads(resumed.stdout[resumed.stdout.index("{") :])
    rows, distinct = _trace_count(store)
    print(
        f"kill     {total:6} requests   sent before the SIGKILL {sent_before}, acknowledged {durable[0]}, "
        f"in flight at the kill {sent_before - durable[0]} (the server still answering {answering}); "
        f"re-sent after resume {stats['resent']}   (resume skipped {result['skipped']}, sent "
        f"{result['sent']}; traces {rows}, distinct ids {distinct})"
    )


def _trace_count(store: Path, fold: bool = False) -> tuple[int, int]:
    """Traces and distinct request ids; with `fold`, after a writer's open folded the journals."""
    with Store.open(store, write=fold) as opened:
        return opened.query("SELECT count(*), count(DISTINCT request_id) FROM traces")[1][0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-per-problem", type=int, default=100)
    ap.add_argument("--latency-ms", type=float, default=50)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--hf", action="store_true", help="also compare a tiny model through hf:")
    ap.add_argument("--no-kill", action="store_true", help="skip the SIGKILL and resume measurement")
    args = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="r1v-bench-gen-") as tmp:
        work = Path(tmp)
        with FakeOpenAIProcess(latency_s=args.latency_ms / 1000) as srv:
            compare(
                "openai",
                f"openai:{srv.url}#fake-model",
                {"concurrency": args.concurrency},
                args.n_per_problem,
                SamplingConfig(),
                work,
                bare={"client_process": False},
            )
        if not args.no_kill:
            kill_and_resume(args.latency_ms / 1000, args.concurrency, args.n_per_problem, work)
        if args.hf:
            model = build_tiny_llama(work / "tiny")
            compare(
                "hf",
                f"hf:{model}",
                {"batch_size": 16},
                4,
                SamplingConfig(max_tokens=32, temperature=1.0),
                work,
            )


if __name__ == "__main__":
    main()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
