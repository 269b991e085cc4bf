"""`r1v-data report` without a browser: hostile text stays text, missing data is said plainly,
the pipeline table reads a workdir's steps, and the charts are built from aggregates."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from conftest import ingest_json, run_cli

HOSTILE_Q = 'What is 1+1? </script><script>alert("q")</script><img src=x onerror=alert(1)>'
HOSTILE_T = '<think></pre></details><iframe src="http://evil.test/"></iframe></think> \\boxed{2}'
HOSTILE_TEACHER = '<b onmouseover="alert(2)">t</b>'


def _report(*args: object) -> tuple[dict, str]:
    result = json.loads(run_cli("report", *args, "--json").stdout)
    return result, Path(result["out"]).read_text()


def test_hostile_questions_traces_and_teachers_cannot_inject_markup(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text(
        json.dumps({"id": "x1", "question": HOSTILE_Q, "answer": "2", "subject": "<i>s</i>"}) + "\n"
    )
    store = tmp_path / "store"
    ingest_json(src, "--store", store, "--preset", "native")
    outputs = tmp_path / "out.jsonl"
    outputs.write_text(json.dumps({"id": "x1", "model": HOSTILE_TEACHER, "response": HOSTILE_T}) + "\n")
    run_cli("import-traces", outputs, "--store", store)
    run_cli("filter", "--store", store, "--keep-wrong")
    _, html = _report("--store", store, "--out", tmp_path / "r.html")
    assert html.count("<script>") == 1  # the page's own filter script, nothing else
    for bad in ("<img src=x", "<iframe", 'onmouseover="', "<i>s</i>", "</script><script>alert"):
        assert bad not in html, bad
    assert "&lt;iframe src=&quot;http://evil.test/&quot;&gt;" in html  # shown as text
    assert "&lt;/script&gt;&lt;script&gt;alert(&quot;q&quot;)" in html
    assert "default-src 'none'" in html  # and the page may fetch nothing anyway


def test_a_store_with_no_traces_says_what_is_missing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    result, html = _report("--store", store, "--out", tmp_path / "r.html", "--examples", "3")
    assert result["filter_run"] is None and result["bytes"] == len(html.encode())
    sections = re.findall(r'<section id="(\w+)"', html)
    assert sections == ["funnel", "lengths", "verdicts", "scores", "dedup", "mixture", "teachers", "gallery"]
    for said in ("never filtered", "No traces yet", "No sample is scored", "No requests yet", "No rewards"):
        assert said in html, said
    assert "<svg" in html.split('id="funnel"')[1].split("</section>")[0]  # the funnel still drew


def test_dedup_pairs_are_shown_side_by_side_with_their_images(tmp_path: Path, shared: Path) -> None:
    image = sorted((shared / "mathv_testmini" / "images").iterdir())[0]
    shutil.copy(image, tmp_path / f"a{image.suffix}")
    q = "In the figure the big triangle is split into four smaller triangles of equal area; how many are shaded"
    rows = [
        {"id": i, "question": q + end, "answer": "2", "images": ["a" + image.suffix]}
        for i, end in (("a", "?"), ("b", " now?"))
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "o.jsonl").write_text(
        "".join(json.dumps({"id": i, "model": "m", "response": "\\boxed{2}"}) + "\n" for i in "ab")
    )
    store = tmp_path / "store"
    ingest_json(tmp_path / "d.jsonl", "--store", store, "--preset", "native")
    run_cli("import-traces", tmp_path / "o.jsonl", "--store", store)
    run_cli("filter", "--store", store)
    _, html = _report("--store", store, "--out", tmp_path / "r.html")
    dedup = html.split('id="dedup"')[1].split("</section>")[0]
    pairs = re.findall(r'<div class="pair">.*?</div></div>', dedup)
    assert len(pairs) == 1 and "duplicate of" in pairs[0] and "near: estimated Jaccard" in pairs[0]
    assert pairs[0].count('src="data:image/') == 2  # the dropped sample and the one kept, each with its image
    assert pairs[0].count(q) == 2  # both questions, side by side


def test_prices_give_costs_and_a_bad_price_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ingest_json("builtin:sample", "--store", store)
    proc = run_cli(
        "report", "--store", store, "--price", "builtin", "--out", tmp_path / "r.html", check=False
    )
    assert proc.returncode == 1 and "TEACHER=IN,OUT" in proc.stderr
    proc = run_cli("report", "--store", store, "--out", tmp_path / "missing" / "r.html", check=False)
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    proc = run_cli("report", "--store", store, "--run", "nosuch", "--out", tmp_path / "r.html", check=False)
    assert proc.returncode == 1 and "no filter run" in proc.stderr


def test_pipeline_workdir_gives_the_iterations_table(tmp_path: Path) -> None:
    steps = tmp_path / "work" / "steps"
    steps.mkdir(parents=True)
    for t, (tau, kept, errors, rows, correct) in enumerate([(2, 900, 0, 900, 40), (3, 700, 55, 700, 52)], 1):
        records = {
            "filter": {"tau": tau, "kept": kept, "error_set": errors},
            "mix": {"rows": {"sft": rows}},
            "evaluate": {"verdicts": {"correct": correct, "wrong": 100 - correct}},
        }
        for i, (name, result) in enumerate(records.items()):
            record = {"step": name, "t": t, "status": "ok", "result": result}
            (steps / f"{t}{i}-{name}-{t}.json").write_text(json.dumps(record))
    (steps / "99-broken.json").write_text("{not json")
    _, html = _report("--pipeline", tmp_path / "work", "--out", tmp_path / "p.html")
    table = html.split('id="pipeline"')[1]
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows]
    assert cells == [
        ["1", "2", "900", "900", "0", "100", "40.0%"],
        ["2", "3", "700", "700", "55", "100", "52.0%"],
    ]
    proc = run_cli("report", "--pipeline", tmp_path, "--out", tmp_path / "q.html", check=False)
    assert proc.returncode == 1 and "no steps/ folder" in proc.stderr


def test_histogram_and_bars_escape_labels_and_stay_small() -> None:
    from r1v_data.outputs.report import svg

    chart = svg.bars([("<b>x</b>", 3), ("y", 0)], "t")
    assert "<b>" not in chart and "&lt;b&gt;" in chart
    hist = svg.histogram({"a": [1] * 20, "b": list(range(20))}, [float(i) for i in range(21)], "h")
    assert hist.count("<polyline") == 2 and len(hist) < 4000
