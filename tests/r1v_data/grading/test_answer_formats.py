"""The answer-format corpus (tests/fixtures/answer_formats.jsonl): problems with their options and
reference answers, and responses written the ways models write them, each with the verdict it
must get. Ingested and imported through the real CLI, as a user would."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO, ingest_json, run_cli

from r1v_data.grading.traces import parse_completion
from r1v_data.store import Store
from r1v_data.text import parse_options

CORPUS = REPO / "tests" / "fixtures" / "answer_formats.jsonl"
SOURCES = {
    "answer_tag",
    "boxed",
    "answer_phrase",
    "answer_hashes",
    "answer_label",
    "choice_letter",
    "last_number",
}


def _cases() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text().splitlines()]


def test_the_corpus_covers_every_rule() -> None:
    cases = _cases()
    assert len(cases) >= 200 and len({c["id"] for c in cases}) == len(cases)
    groups = Counter(c["rule"] for c in cases)
    assert set(groups) >= SOURCES | {"numeric", "percent", "time", "expression", "yes_no_text"}
    assert set(groups) >= {"options_layout", "option_text", "multi_letter"}
    assert all(n >= 6 for n in groups.values()), groups
    assert all(0 < sum(not c["correct"] for c in cases if c["rule"] == g) < n for g, n in groups.items())
    found = {
        parse_completion(c["response"], options=parse_options(c.get("options"))).answer_source for c in cases
    }
    assert found >= SOURCES  # every extraction rule is the one that decides some case


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    store = tmp_path_factory.mktemp("formats") / "store"
    ingested = ingest_json(CORPUS, "--store", store, "--preset", "native")
    assert (ingested["added"], ingested["quarantined"]) == (len(_cases()), 0)
    proc = run_cli("import-traces", CORPUS, "--store", store, "--teacher", "corpus", "--json")
    return store, json.loads(proc.stdout)


def test_every_case_gets_its_expected_verdict_through_import_traces(imported: tuple[Path, dict]) -> None:
    store, result = imported
    n = len(_cases())
    assert (result["imported"], result["unmatched"]) == (n, 0)
    con = Store.open(store).connect()
    got = dict(
        con.sql("SELECT s.source_id, t.verdict FROM traces t JOIN samples s USING (sample_id)").fetchall()
    )
    wrong = [
        f"{c['id']} {c['rule']}: {c['response'][-60:]!r} ref {c['answer']!r} -> {got[c['id']]}"
        for c in _cases()
        if (got[c["id"]] == "correct") != c["correct"]
    ]
    assert not wrong, "\n".join(wrong)
    assert result["label_agreement"] == {"agree": n}  # the file's `correct` column, read as labels


def test_options_are_stored_as_ingest_reads_them(imported: tuple[Path, dict]) -> None:
    store, _ = imported
    con = Store.open(store).connect()
    rows = con.sql("SELECT source_id, options, answer, answer_type, question FROM samples").fetchall()
    by_id = {r[0]: r[1:] for r in rows}
    for case in _cases():
        options, answer, kind, question = by_id[case["id"]]
        assert options == parse_options(case.get("options"))
        if options:
            assert kind == "multiple_choice" and all(len(x) == 1 for x in answer.split(", ")), case["id"]
            assert not re.search(r"^\([A-Z]\) \(?[A-Z][.:)]", question, re.MULTILINE), (
                question
            )  # "(A) A: ..."
