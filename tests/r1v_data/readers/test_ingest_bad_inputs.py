"""Bad input never crashes ingest and never disappears: each bad row is quarantined with its
reason and location; only an unreadable source fails the command, before anything is written."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web
from conftest import BIN, ingest_json, run_cli, stats_json
from PIL import Image
from servers.threaded import ThreadedServer

from r1v_data.store import Store


def _png(path: Path, size: tuple[int, int] = (64, 48), colour: str = "red", mode: str = "RGB") -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode == "RGB" else 0).save(path)
    return path.read_bytes()


@pytest.fixture
def bad_source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    images = src / "images"
    _png(images / "good1.png")
    Image.new("RGB", (40, 30), "blue").save(images / "good2.jpg")
    full = _png(images / "whole.png", (200, 200), "green")
    (images / "truncated.png").write_bytes(full[: len(full) // 2])
    (images / "notimage.png").write_text("this is not an image\n")
    _png(images / "bomb.png", (9000, 9000), mode="1")  # 81 MP, a few KB on disk
    secret = tmp_path / "outside" / "secret.png"
    _png(secret)
    os.symlink(secret, images / "link.png")

    def row(question: object, image: object, answer: str = "1") -> bytes:
        return json.dumps({"question": question, "image": image, "answer": answer}).encode()

    lines = [
        row("How many red squares?", "images/good1.png"),  # 1 good
        row("Compare the two pictures.", ["images/good1.png", "images/good2.jpg"]),  # 2 good, 2 images
        b'{"question": "broken json", ',  # 3
        b"[1, 2, 3]",  # 4 not an object
        b'{"question": "caf\xe9 au lait?", "image": "images/good1.png", "answer": "1"}',  # 5 latin-1
        json.dumps({"image": "images/good1.png", "answer": "1"}).encode(),  # 6 no question
        row("   ", "images/good1.png"),  # 7 blank question
        row("Where is it?", "images/nope.png"),  # 8 missing file
        row("Truncated?", "images/truncated.png"),  # 9
        row("Not an image?", "images/notimage.png"),  # 10
        row("Escape?", "../outside/secret.png"),  # 11 ../
        row("Absolute?", str(secret)),  # 12 absolute elsewhere
        row("Symlink?", "images/link.png"),  # 13 link leaves the folder
        row("Remote?", "https://example.com/cat.png"),  # 14
        row("Bomb?", "images/bomb.png"),  # 15 over the pixel limit
        row("How many red squares?", "images/good1.png"),  # 16 duplicate of 1
        json.dumps(
            {"question": "Options?", "image": "images/good1.png", "answer": "A", "options": 5}
        ).encode(),  # 17 invalid options
    ]
    (src / "data.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return src / "data.jsonl"


EXPECTED = {
    "data.jsonl:3": "unparseable record",
    "data.jsonl:4": "unparseable record",
    "data.jsonl:5": "invalid utf-8",
    "data.jsonl:6": "missing question",
    "data.jsonl:7": "missing question",
    "data.jsonl:8": "image not found",
    "data.jsonl:9": "truncated or corrupt image",
    "data.jsonl:10": "not an image",
    "data.jsonl:11": "image outside source folder",
    "data.jsonl:12": "image outside source folder",
    "data.jsonl:13": "image outside source folder",
    "data.jsonl:14": "remote image not allowed",
    "data.jsonl:15": "image over pixel limit",
}


def test_every_bad_row_is_quarantined_with_reason_and_location(bad_source: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    # --require-question: rows 6 and 7 (an image, no question) are quarantined as before
    flags = ("--preset", "vqa", "--map", "options=options", "--require-question")
    proc = run_cli("ingest", bad_source, "--store", store, *flags)
    assert proc.returncode == 0
    assert "quarantined by reason:" in proc.stdout and "image outside source folder: 3" in proc.stdout
    con = Store.open(store).connect()
    quarantined = dict(con.sql("SELECT location, reason FROM quarantine").fetchall())
    assert quarantined == {**EXPECTED, "data.jsonl:17": "invalid options"}
    (raw,) = con.sql("SELECT raw FROM quarantine WHERE location = 'data.jsonl:5'").fetchall()[0]
    assert "caf" in raw  # the offending text is kept for inspection
    samples = con.sql("SELECT question, len(images) FROM samples ORDER BY question").fetchall()
    assert samples == [("Compare the two pictures.", 2), ("How many red squares?", 1)]
    locations = con.sql("SELECT location FROM provenance ORDER BY location").fetchall()
    assert locations == [("data.jsonl:1",), ("data.jsonl:16",), ("data.jsonl:2",)]
    # nothing from outside the folder reached the store
    secret = (tmp_path / "outside" / "secret.png").read_bytes()
    assert all(
        im["bytes"] != secret or im["path"].startswith("images/good1")
        for (ims,) in con.sql("SELECT images FROM samples").fetchall()
        for im in ims
    )

    again = ingest_json(bad_source, "--store", store, *flags)
    assert (again["added"], again["unchanged"], again["quarantined"]) == (0, 3, 14)
    assert stats_json(store)["quarantined"] == 14  # re-ingesting records no second copy


def test_remote_images_can_be_allowed_and_fail_cleanly(bad_source: Path, tmp_path: Path) -> None:
    result = ingest_json(
        bad_source,
        "--store",
        tmp_path / "s",
        "--preset",
        "vqa",
        "--allow-remote-images",
        "--set",
        "max_pixels=100000000",
    )
    reasons = result["quarantine_reasons"]
    assert reasons["image fetch failed"] == 1  # no network here: a clean per-row failure
    assert "remote image not allowed" not in reasons
    assert "image over pixel limit" not in reasons  # limit raised by --set


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda d: d / "missing.jsonl", "does not exist"),
        (
            lambda d: (d / "x.parquet").write_bytes(b"garbage, not parquet") and d / "x.parquet",
            "not a readable Parquet",
        ),
        (lambda d: (d / "x.csv").write_text("a,b\n") and d / "x.csv", "unsupported file type"),
        (lambda d: (d / "x.json").write_bytes(b'{"a": 1}\xff\xfe') and d / "x.json", "not UTF-8"),
    ],
)
def test_unreadable_source_fails_in_one_line_before_writing(tmp_path: Path, make, needle: str) -> None:
    source = make(tmp_path)
    store = tmp_path / "store"
    proc = run_cli("ingest", source, "--store", store, check=False)
    assert proc.returncode == 1
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    assert not store.exists()


def test_unknown_layout_asks_for_a_preset(tmp_path: Path) -> None:
    (tmp_path / "odd.jsonl").write_text('{"prompt": "x", "label": 1}\n')
    proc = run_cli("ingest", tmp_path / "odd.jsonl", "--store", tmp_path / "s", check=False)
    assert proc.returncode == 1 and "--preset" in proc.stderr and "Traceback" not in proc.stderr
    ok = ingest_json(
        tmp_path / "odd.jsonl",
        "--store",
        tmp_path / "s",
        "--map",
        "question=prompt",
        "--map",
        "answer=label",
    )
    assert ok["added"] == 1


def test_second_writer_is_refused_and_a_dead_writer_is_taken_over(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store, "--limit", "2")
    with Store.open(store, write=True):  # this test process holds the store
        proc = run_cli("ingest", "builtin:sample", "--store", store, check=False)
    assert proc.returncode == 1 and f"pid {os.getpid()}" in proc.stderr and "being written" in proc.stderr
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # a writer that died leaves its details in the lock file, but not the lock itself
    (store / ".lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    assert ingest_json("builtin:sample", "--store", store)["added"] == 36
    assert (store / ".lock").read_text() == ""  # released


def test_sigkill_mid_ingest_then_resume_stores_each_sample_once(tmp_path: Path) -> None:
    src = tmp_path / "big"
    rows = []
    for i in range(1500):
        _png(src / "img" / f"{i}.png", (96, 96), colour=(i % 256, (i // 256) * 40, 128))
        rows.append(
            json.dumps(
                {
                    "question": f"Problem {i}: what colour?",
                    "image": f"img/{i}.png",
                    "answer": str(i),
                }
            )
        )
    (src / "rows.jsonl").write_text("\n".join(rows) + "\n")
    store = tmp_path / "store"
    proc = subprocess.Popen(
        [
            str(BIN / "r1v-data"),
            "ingest",
            str(src / "rows.jsonl"),
            "--store",
            str(store),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list((store / "samples").glob("part-2*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    partial = Store.open(store).connect().sql("SELECT count(*) FROM samples").fetchall()[0][0]
    assert 0 < partial < 1500, "kill landed before the first part or after the end"
    assert json.loads((store / ".lock").read_text())["pid"] == proc.pid  # its details are left ...
    resumed = ingest_json(src / "rows.jsonl", "--store", store)  # ... but not its lock
    assert resumed["added"] == 1500 - partial
    con = Store.open(store).connect()
    assert con.sql("SELECT count(*), count(DISTINCT sample_id) FROM samples").fetchall() == [(1500, 1500)]
    assert not list(store.rglob("*.tmp"))
    statuses = sorted(s for (s,) in con.sql("SELECT status FROM runs").fetchall())
    assert statuses == ["interrupted", "ok"]


def test_image_folder_with_metadata_and_offline_hub(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    _png(folder / "a.png")
    _png(folder / "sub" / "b.png", colour="blue")
    (folder / "metadata.jsonl").write_text(
        json.dumps({"file_name": "a.png", "question": "Colour?", "answer": "red"})
        + "\n"
        + json.dumps({"file_name": "sub/b.png", "question": "Colour?", "answer": "blue"})
        + "\n"
    )
    result = ingest_json(folder, "--store", tmp_path / "s")
    assert (result["added"], result["sources"][0]["preset"], result["sources"][0]["name"]) == (
        2,
        "imagefolder",
        "folder",
    )
    proc = run_cli("ingest", "hf:no-such-org/no-such-set", "--store", tmp_path / "s", check=False)
    assert (
        proc.returncode == 1 and "cannot load Hub dataset" in proc.stderr and "Traceback" not in proc.stderr
    )


class DrippingImageServer(ThreadedServer):
    """Serves one PNG a byte every 0.2 s: every read returns in time, the whole never does."""

    name = "dripping image server"

    def __init__(self, image: bytes):
        self.image, self.port = image, 0

    def make_runner(self) -> web.AppRunner:
        async def drip(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "image/png"})
            await resp.prepare(request)
            for byte in self.image:
                await resp.write(bytes([byte]))
                await asyncio.sleep(0.2)
            return resp

        app = web.Application()
        app.router.add_get("/slow.png", drip)
        return web.AppRunner(app)


def test_a_remote_image_that_drips_is_cut_off_at_the_time_limit(shared: Path, tmp_path: Path) -> None:
    image = next((shared / "mathv_testmini" / "images").iterdir()).read_bytes()
    with DrippingImageServer(image) as srv:
        rows = tmp_path / "remote.jsonl"
        url = f"http://127.0.0.1:{srv.port}/slow.png"
        rows.write_text(json.dumps({"question": "What is shown?", "answer": "1", "image": url}) + "\n")
        result = ingest_json(rows, "--store", tmp_path / "s", "--preset", "vqa", "--allow-remote-images",
                             "--set", "image_timeout_s=1")  # fmt: skip
    assert result["quarantine_reasons"] == {"image fetch failed": 1}
    detail = Store.open(tmp_path / "s").query("SELECT detail FROM quarantine")[1][0][0]
    assert "time limit of 1 s" in detail
