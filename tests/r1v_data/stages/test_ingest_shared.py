"""Every set in ../shared/data through the real `r1v-data ingest`, with real counts."""

from __future__ import annotations

import io
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ingest_json, run_cli, stats_json
from PIL import Image

from r1v_data.store import Store


def _rows(store: Path, sql: str) -> list[tuple]:
    con = Store.open(store).connect()
    try:
        return con.sql(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def mathv_store(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("mathv") / "store"
    first = ingest_json(shared / "mathv_testmini" / "testmini.jsonl", "--store", store)
    assert (first["added"], first["quarantined"]) == (304, 0)
    assert first["sources"][0]["preset"] == "mathvision"  # auto-detected
    return store


def test_mathvision_ingests_every_problem_with_decodable_images(mathv_store: Path, shared: Path) -> None:
    stats = stats_json(mathv_store)
    assert (stats["samples"], stats["quarantined"], stats["images"]) == (304, 0, 304)
    assert stats["by_difficulty"] == {"1": 53, "2": 82, "3": 56, "4": 45, "5": 68}
    assert len(stats["by_subject"]) == 16
    assert stats["by_answer_type"]["multiple_choice"] == 190
    rows = _rows(mathv_store, "SELECT images, source_id FROM samples")
    for images, source_id in rows:
        (image,) = images
        with Image.open(io.BytesIO(image["bytes"])) as im:
            im.load()
            assert im.size == (image["width"], image["height"])
        # stored bytes are the file, byte for byte
        assert image["bytes"] == (shared / "mathv_testmini" / "images" / f"{source_id}.jpg").read_bytes()


def test_reingesting_adds_nothing(mathv_store: Path, shared: Path) -> None:
    again = ingest_json(shared / "mathv_testmini" / "testmini.jsonl", "--store", mathv_store)
    assert (again["added"], again["new_provenance"], again["unchanged"]) == (0, 0, 304)
    stats = stats_json(mathv_store)
    assert (stats["samples"], stats["provenance"]) == (304, 304)


def test_multiple_choice_rendered_and_kept(mathv_store: Path) -> None:
    (question, options, answer) = _rows(
        mathv_store, "SELECT question, options, answer FROM samples WHERE source_id = '6'"
    )[0]
    assert options == ["A", "B", "C", "D", "E"] and answer == "D"
    assert question.endswith("\n\nChoices:\n(A)\n(B)\n(C)\n(D)\n(E)")
    assert "<image1>" in question


def test_same_problem_from_two_sources_is_stored_once(shared: Path, tmp_path: Path) -> None:
    """A Parquet copy and a saved `datasets` copy (images embedded as bytes) of MATH-Vision
    hash to the same samples: nothing is added, each copy adds its provenance."""
    import datasets

    rows = [json.loads(line) for line in (shared / "mathv_testmini" / "testmini.jsonl").open()]
    for row in rows:
        row["image"] = {
            "bytes": (shared / "mathv_testmini" / row["image"]).read_bytes(),
            "path": None,
        }
    pq.write_table(pa.Table.from_pylist(rows[:50]), tmp_path / "mathv_copy.parquet")
    datasets.Dataset.from_list(rows[50:80]).cast_column("image", datasets.Image()).save_to_disk(
        tmp_path / "saved"
    )

    store = tmp_path / "store"
    ingest_json(shared / "mathv_testmini" / "testmini.jsonl", "--store", store)
    parquet = ingest_json(tmp_path / "mathv_copy.parquet", "--store", store)
    saved = ingest_json(tmp_path / "saved", "--store", store, "--name", "mathv_saved")
    assert (parquet["added"], parquet["new_provenance"]) == (0, 50)
    assert (saved["added"], saved["new_provenance"]) == (0, 30)
    stats = stats_json(store)
    assert stats["samples"] == 304
    assert stats["by_source"] == {"testmini": 304, "mathv_copy": 50, "mathv_saved": 30}
    sources = _rows(
        store,
        "SELECT list(p.source ORDER BY p.source) FROM provenance p JOIN samples s "
        f"USING (sample_id) WHERE s.source_id = '{rows[60]['id']}' GROUP BY sample_id",
    )
    assert sources == [(["mathv_saved", "testmini"],)]


def test_text_math_sets(shared: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    files = [
        shared / "text_math" / f"{n}_test.jsonl" for n in ("math500", "gsm8k", "aime24", "aime25", "amc23")
    ]
    result = ingest_json(*files, "--store", store)
    got = {s["name"]: (s["preset"], s["added"], sum(s["quarantined"].values())) for s in result["sources"]}
    assert got == {
        "math500_test": ("math500", 500, 0),
        "gsm8k_test": ("gsm8k", 1319, 0),
        "aime24_test": ("competition_math", 30, 0),
        "aime25_test": ("competition_math", 30, 0),
        "amc23_test": ("competition_math", 40, 0),
    }
    answers = dict(
        _rows(
            store,
            "SELECT source, list(answer ORDER BY answer)[1] FROM samples "
            "WHERE source IN ('gsm8k_test', 'amc23_test') GROUP BY source",
        )
    )
    assert "####" not in answers["gsm8k_test"]
    (n_float,) = _rows(
        store, "SELECT count(*) FROM samples WHERE source = 'amc23_test' AND answer LIKE '%.0'"
    )[0]
    assert n_float == 0  # 27.0 is stored as 27
    (gsm_solution,) = _rows(
        store,
        "SELECT solution FROM samples WHERE source = 'gsm8k_test' AND question LIKE 'Janet%ducks%'",
    )[0]
    assert gsm_solution.startswith("Janet sells 16 - 3 - 4")
    assert stats_json(store)["by_difficulty"]["5"] == 134  # MATH-500 level 5


def test_mmmu_multi_image_and_placeholders(shared: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = ingest_json(shared / "mmmu_pro_tool_samples" / "data_subset.jsonl", "--store", store)
    assert (result["added"], result["quarantined"], result["sources"][0]["preset"]) == (
        18,
        0,
        "mmmu",
    )
    stats = stats_json(store)
    assert stats["by_image_count"] == {"1": 17, "5": 1}
    assert stats["images"] == 22
    questions = [q for (q,) in _rows(store, "SELECT question FROM samples")]
    assert not any("<image 1>" in q for q in questions)
    assert sum("<image1>" in q for q in questions) >= 10
    assert stats["by_answer_type"] == {"multiple_choice": 18}


def test_superclevr_layouts(shared: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    folder = shared / "superclevr_samples"
    result = ingest_json(
        folder / "counting_r1v_style.jsonl",
        folder / "superCLEVR_questions_5.json",
        "--store",
        store,
    )
    by_name = {s["name"]: s for s in result["sources"]}
    assert by_name["counting_r1v_style"]["added"] == 6
    questions = by_name["superCLEVR_questions_5"]
    assert questions["preset"] == "superclevr" and questions["read"] == 238
    assert questions["added"] + questions["new_provenance"] == 238 and not questions["quarantined"]
    assert stats_json(store)["by_answer_type"]["boolean"] > 0


def test_r1v_prompts_without_images_are_quarantined_not_crashed(shared: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    logs = shared / "traces" / "r1v_eval_logs"
    proc = run_cli(
        "ingest",
        logs / "geoqa_test_prompts.jsonl",
        logs / "superclevr_test200_counting_problems.jsonl",
        "--store",
        store,
    )
    assert "image not found: 954" in proc.stdout
    stats = stats_json(store)
    assert (stats["samples"], stats["quarantined"]) == (0, 954)
    assert stats["quarantine_reasons"] == {"image not found": 954}
    (location, raw) = _rows(store, "SELECT location, raw FROM quarantine ORDER BY location LIMIT 1")[0]
    assert location.startswith("geoqa_test_prompts.jsonl:") and "Geo170K" in raw


def test_catalog_views_work_from_duckdb_directly(mathv_store: Path) -> None:
    con = duckdb.connect(str(mathv_store / "r1v.duckdb"), read_only=True)
    con.execute(f"SET file_search_path = '{mathv_store}'")
    assert con.sql("SELECT count(*) FROM samples").fetchall() == [(304,)]
    statuses = {s for (s,) in con.sql("SELECT status FROM runs").fetchall()}
    assert statuses == {"ok"}
    manifest = json.loads(con.sql("SELECT manifest FROM manifests LIMIT 1").fetchall()[0][0])
    assert manifest["inputs"][0]["fingerprint"]["sha256"]
    assert manifest["config"]["max_pixels"] == 40_000_000
