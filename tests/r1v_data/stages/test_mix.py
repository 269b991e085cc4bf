"""`r1v-data mix` through the CLI: MATH-Vision problems with imported model outputs, filtered,
written as sharded Parquet that `datasets` loads offline with the images decoded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ingest_json, mathv_with_outputs, run_cli


@pytest.fixture(scope="module")
def filtered(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Path:
    return mathv_with_outputs(tmp_path_factory.mktemp("mix") / "store", shared, "--min-score", "3")


def test_shards_load_with_datasets_and_images_decode(filtered: Path, tmp_path: Path) -> None:
    import datasets
    from PIL import Image

    out = tmp_path / "out"
    result = json.loads(
        run_cli("mix", "--store", filtered, "--out", out, "--set", "shard_bytes=400000", "--json").stdout
    )
    stats = json.loads(run_cli("stats", "--store", filtered, "--json").stdout)
    assert result["rows"]["sft"] == stats["kept"] > 0
    assert result["shards"]["sft"] > 1  # 400 kB shards
    shards = sorted((out / "sft" / "data").glob("train-*.parquet"))
    assert [p.name for p in shards] == [
        f"train-{i:05d}-of-{len(shards):05d}.parquet" for i in range(len(shards))
    ]
    sft = datasets.load_dataset("parquet", data_files=[str(p) for p in shards], split="train")
    assert len(sft) == result["rows"]["sft"]
    for row in sft.select(range(10)):
        user, assistant = row["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        assert sum(p["type"] == "image" for p in user["content"]) == len(row["images"]) >= 1
        assert all(isinstance(im, Image.Image) and im.size[0] > 0 for im in row["images"])
    default = datasets.load_dataset(str(out), split="train")  # the card's default config: sft
    assert len(default) == len(sft)
    rl = datasets.load_dataset(str(out), "rl", split="train")
    assert len(rl) == result["rows"]["rl"] and all(r["solution"] for r in rl.select(range(5)))
    pref = datasets.load_dataset(str(out), "preference", split="train")
    assert len(pref) == result["rows"]["preference"] > 0
    assert all(p["chosen_score"] > p["rejected_score"] for p in pref)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: other\n") and "config_name: rl" in card
    import yaml

    meta = yaml.safe_load(card.split("---\n")[1])
    assert {i["config_name"]: i["splits"][0]["num_examples"] for i in meta["dataset_info"]} == result["rows"]
    teachers = json.loads(
        run_cli("sql", "SELECT DISTINCT teacher FROM traces", "--store", filtered, "--json").stdout
    )
    assert all(f"`{t['teacher']}`" in card for t in teachers)  # provenance: every teacher named
    assert "| min_score | `3` |" in card and "## Length of the kept traces" in card
    assert f"| {stats['kept']:,} |" in card  # the kept traces counted in the length table
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["filter_run"] == result["filter_run"] and manifest["counts"]["rows"] == result["rows"]


def test_refuses_to_overwrite_and_needs_a_filter_run(filtered: Path, tmp_path: Path, shared: Path) -> None:
    out = tmp_path / "out"
    first = json.loads(run_cli("mix", "--store", filtered, "--out", out, "--kind", "rl", "--json").stdout)
    again = run_cli("mix", "--store", filtered, "--out", out, check=False)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    replaced = json.loads(
        run_cli("mix", "--store", filtered, "--out", out, "--kind", "rl", "--overwrite", "--json").stdout
    )
    assert replaced["rows"] == first["rows"] == {"rl": first["rows"]["rl"]}
    bare = tmp_path / "bare"
    ingest_json("builtin:sample", "--store", bare)
    proc = run_cli("mix", "--store", bare, "--out", tmp_path / "o2", check=False)
    assert proc.returncode == 1 and "no successful filter run" in proc.stderr


def test_recipe_weights_and_row_targets_are_seeded(filtered: Path, tmp_path: Path) -> None:
    import datasets

    def mix(seed: int, name: str) -> tuple[dict, list[str]]:
        recipe = tmp_path / f"{name}.yaml"
        recipe.write_text(
            f"seed: {seed}\ncomponents:\n"
            "  - {name: gemini, where: \"teacher = 'gemini-pro-vision'\", weight: 2.5}\n"
            "  - {name: others, where: \"teacher <> 'gemini-pro-vision'\", rows: 10}\n"
        )
        out = tmp_path / name
        r = json.loads(
            run_cli(
                "mix", "--store", filtered, "--out", out, "--kind", "sft", "--recipe", recipe, "--json"
            ).stdout
        )
        ids = datasets.load_dataset(str(out), split="train")["id"]
        return r, ids

    r, ids = mix(1, "a")
    gemini, others = r["mixture"]
    assert (others["rows"], others["component"]) == (10, "others")
    assert 2 * gemini["available"] <= gemini["rows"] <= 3 * gemini["available"] and gemini["tokens"] > 0
    assert r["rows"]["sft"] == len(ids) == gemini["rows"] + 10
    assert len(set(ids)) == len(ids) and sum("#" in i for i in ids) >= gemini["available"]  # repeats renamed
    assert mix(1, "b")[1] == ids  # same recipe, same seed: the same rows
    assert set(mix(2, "c")[1]) != set(ids)  # another seed: another sample of the others
    bad = tmp_path / "bad.yaml"
    bad.write_text("components:\n  - {name: x, weight: 1, rows: 3}\n")
    proc = run_cli("mix", "--store", filtered, "--out", tmp_path / "d", "--recipe", bad, check=False)
    assert (
        proc.returncode == 1
        and "give one of weight, rows or tokens" in proc.stderr
        and "pydantic" not in proc.stderr
    )


def test_llamafactory_export_has_one_image_token_per_image(filtered: Path, tmp_path: Path) -> None:
    from PIL import Image

    out, dest = tmp_path / "out", tmp_path / "lf"
    mixed = json.loads(run_cli("mix", "--store", filtered, "--out", out, "--kind", "sft", "--json").stdout)
    result = json.loads(run_cli("export", out, "--dest", dest, "--json").stdout)
    assert result["rows"] == mixed["rows"]["sft"] and result["images"] > 0
    info = json.loads((dest / "dataset_info.json").read_text())
    assert info["r1v_sft"]["formatting"] == "sharegpt" and (dest / info["r1v_sft"]["file_name"]).is_file()
    rows = [json.loads(line) for line in (dest / "r1v_sft.jsonl").read_text().splitlines()]
    assert len(rows) == result["rows"]
    for row in rows:
        user, assistant = row["messages"]
        assert user["content"].count("<image>") == len(row["images"]) >= 1  # LLaMA-Factory checks this
        assert "<image1>" not in user["content"] and assistant["role"] == "assistant"
        for path in row["images"]:
            with Image.open(dest / path) as im:
                assert im.size[0] > 0
    proc = run_cli("export", tmp_path / "nothing", "--dest", tmp_path / "x", check=False)
    assert proc.returncode == 1 and "run `r1v-data mix` with --kind sft first" in proc.stderr


def test_easyr1_and_verl_exports_load_and_reward_with_r1vs_verifier(filtered: Path, tmp_path: Path) -> None:
    import importlib.util

    import datasets

    out = tmp_path / "out"
    mixed = json.loads(run_cli("mix", "--store", filtered, "--out", out, "--kind", "rl", "--json").stdout)
    easy = json.loads(
        run_cli("export", out, "--dest", tmp_path / "easy", "--format", "easyr1", "--json").stdout
    )
    verl = json.loads(
        run_cli("export", out, "--dest", tmp_path / "verl", "--format", "verl", "--json").stdout
    )
    assert easy["rows"] == verl["rows"] == mixed["rows"]["rl"] > 0 and easy["images"] == verl["images"] > 0
    # EasyR1 loads a folder by its first file's type: the data folder holds only Parquet
    rows = datasets.load_dataset("parquet", data_dir=str(tmp_path / "easy" / "data"), split="train")
    assert rows.column_names == ["problem", "answer", "images"]
    for r in rows:
        assert r["problem"].count("<image>") == len(r["images"]) >= 1 and "<image1>" not in r["problem"]
        assert all(im.size[0] > 0 for im in r["images"])
    vrows = datasets.load_dataset("parquet", data_dir=str(tmp_path / "verl" / "data"), split="train")
    assert [r["reward_model"]["ground_truth"] for r in vrows] == rows["answer"]
    assert all(r["prompt"][0]["content"].count("<image>") == len(r["images"]) for r in vrows)
    # the shipped reward module scores the store's kept traces as the store's verdicts say
    spec = importlib.util.spec_from_file_location("r1v_reward", tmp_path / "verl" / "r1v_reward.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    truth = {r["extra_info"]["sample_id"]: (r["reward_model"]["ground_truth"], r) for r in vrows}
    traces = json.loads(run_cli("sql", "SELECT sample_id, text, verdict FROM traces WHERE verdict IN "
                                "('correct', 'wrong') ORDER BY request_id LIMIT 60", "--store", filtered,
                                "--json").stdout)  # fmt: skip
    scored = [(t, truth[t["sample_id"]]) for t in traces if t["sample_id"] in truth]
    assert {t["verdict"] for t, _ in scored} == {"correct", "wrong"}
    for t, (answer, row) in scored:
        score = module.compute_score(row["data_source"], t["text"], answer, row["extra_info"])
        assert score == (1.0 if t["verdict"] == "correct" else 0.0), t
    # EasyR1 hands its reward only the response and the answer: free-form rows (a choice's option
    # text needs the options, which verl's extra_info carries)
    free = [(t, a) for t, (a, r) in scored if not r["extra_info"]["options"]]
    assert free
    batch = module.compute_score_batch([{"response": t["text"], "ground_truth": a} for t, a in free])
    assert [b["accuracy"] for b in batch] == [1.0 if t["verdict"] == "correct" else 0.0 for t, _ in free]


def test_recipe_token_budget_and_stratified_targets(filtered: Path, tmp_path: Path) -> None:
    import datasets

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "components:\n"
        "  - {name: budget, where: \"teacher = 'qwen-vl-max'\", tokens: 20000}\n"
        "  - {name: levels, where: \"teacher <> 'qwen-vl-max'\", rows: 60, stratify: difficulty}\n"
    )
    r = json.loads(
        run_cli(
            "mix", "--store", filtered, "--out", tmp_path / "o", "--kind", "sft", "--recipe", recipe, "--json"
        ).stdout
    )
    budget, levels = r["mixture"]
    assert 20000 <= budget["tokens"] < 20000 + 2000 and levels["rows"] == 60
    rows = datasets.load_dataset(str(tmp_path / "o"), split="train").to_pandas()
    assert len(rows) == r["rows"]["sft"] == budget["rows"] + 60
    # the 60 split across difficulty levels as the selected rows of those teachers are
    from r1v_data.store import Store

    sql = (
        "SELECT t.request_id, s.difficulty FROM decisions d JOIN traces t USING (request_id) JOIN samples s "
        "ON s.sample_id = t.sample_id WHERE d.kept AND t.teacher <> 'qwen-vl-max' AND d.run_id = ?"
    )
    teachers = [
        {"request_id": a, "difficulty": b}
        for a, b in Store.open(filtered).query(sql, params=[r["filter_run"]])[1]
    ]
    assert len(teachers) == levels["available"]
    available = {}
    for t in teachers:
        available[t["difficulty"]] = available.get(t["difficulty"], 0) + 1
    ids = {t["request_id"]: t["difficulty"] for t in teachers}
    got = rows[rows["request_id"].isin(ids)]["request_id"].map(ids).value_counts().to_dict()
    for level, n in available.items():
        assert abs(got.get(level, 0) - 60 * n / len(teachers)) < 1  # largest remainder: within one row
    # two columns: the strata are (difficulty, subject) pairs, each within one row of its share
    both = tmp_path / "both.yaml"
    both.write_text("components:\n  - {name: strata, rows: 100, stratify: [difficulty, subject]}\n")
    r2 = json.loads(run_cli("mix", "--store", filtered, "--out", tmp_path / "o2", "--kind", "sft",
                            "--recipe", both, "--json").stdout)  # fmt: skip
    _, kept = Store.open(filtered).query(
        "SELECT t.request_id, s.difficulty, s.subject FROM decisions d JOIN traces t USING (request_id) "
        "JOIN samples s ON s.sample_id = t.sample_id WHERE d.kept AND d.run_id = ?",
        params=[r2["filter_run"]],
    )
    pair = {i: (d, sub) for i, d, sub in kept}
    mixed = datasets.load_dataset(str(tmp_path / "o2"), split="train").to_pandas()
    assert len(mixed) == 100 and len(set(pair.values())) > 5
    got2 = mixed["request_id"].str.split("#").str[0].map(pair).value_counts().to_dict()
    for key in set(pair.values()):
        share = 100 * sum(v == key for v in pair.values()) / len(pair)
        assert abs(got2.get(key, 0) - share) < 1, key
    bad = tmp_path / "bad.yaml"
    bad.write_text("components:\n  - {name: x, weight: 2, stratify: difficulty}\n")
    proc = run_cli("mix", "--store", filtered, "--out", tmp_path / "b", "--recipe", bad, check=False)
    assert proc.returncode == 1 and "stratify needs a rows or tokens target" in proc.stderr


def test_preflight_against_a_models_chat_template(filtered: Path, tmp_path: Path) -> None:
    import shutil

    from tiny_models import build_tiny_llama

    out = tmp_path / "out"
    mixed = json.loads(run_cli("mix", "--store", filtered, "--out", out, "--kind", "sft", "--json").stdout)
    model = build_tiny_llama(tmp_path / "m")
    ok = json.loads(run_cli("preflight", out, "--model", model, "--json").stdout)
    assert ok["rows"] == mixed["rows"]["sft"] and ok["failed"] == {} and ok["max_tokens_seen"] > 256
    limit = ok["max_tokens_seen"] - 1  # the longest row no longer fits
    short = run_cli("preflight", out, "--model", model, "--max-length", limit, "--json", check=False)
    report = json.loads(short.stdout)
    assert short.returncode == 1 and 0 < report["failed"]["too long"] < report["rows"]
    # a template that drops image parts: every row would train without its images
    blind = tmp_path / "blind"
    shutil.copytree(model, blind)
    config = json.loads((blind / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{% for m in messages %}{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}"
        "{% endif %}{% endfor %}{% endfor %}"
    )
    (blind / "tokenizer_config.json").write_text(json.dumps(config))
    (blind / "chat_template.jinja").unlink(missing_ok=True)
    dropped = run_cli("preflight", out, "--model", blind, "--json", check=False)
    assert dropped.returncode == 1 and json.loads(dropped.stdout)["failed"] == {
        "image tokens": mixed["rows"]["sft"]
    }
    plain = build_tiny_llama(tmp_path / "plain", chat=False)
    proc = run_cli("preflight", out, "--model", plain, check=False)
    assert proc.returncode == 1 and "no chat template" in proc.stderr


def test_the_same_store_mixes_into_the_same_shards(filtered: Path, tmp_path: Path) -> None:
    """Preference pairs came in the order of DuckDB's threads: every mix of one store wrote other
    shards (other rows in each, another number of them). Small shards make the order show."""
    import pyarrow.parquet as pq

    from r1v_data.config import MixConfig
    from r1v_data.stages.mix import run_mix

    def shards(name: str) -> list[tuple[str, object]]:
        cfg = MixConfig(
            store=filtered, out=tmp_path / name, kinds=["preference"], shard_bytes=1 << 17, report=False
        )
        run_mix(cfg)
        paths = sorted((tmp_path / name / "preference" / "data").glob("train-*.parquet"))
        return [(p.name, pq.read_table(p)) for p in paths]

    first = shards("a")
    assert len(first) > 2
    assert shards("b") == first
