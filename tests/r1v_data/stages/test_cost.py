"""Prices and cost: the run summary charges tokens at the configured price (halved through a batch
API), `stats` adds runs up, an unpriced teacher shows tokens only, and `--dry-run` estimates a run
without sending or writing anything."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import run_cli
from servers.fake_batch import FakeBatchAPI

from r1v_data.config import GenerateConfig, PriceConfig, ReportConfig
from r1v_data.outputs.report.page import _cell
from r1v_data.stages.generate import run_generate
from r1v_data.stages.generate_estimate import estimate_generate
from r1v_data.stages.report import run_report
from r1v_data.stages.stats import store_stats
from r1v_data.store import Store

FAST = {"poll_interval_s": 0.01}
PRICE = PriceConfig(input_per_mtok=2.0, output_per_mtok=8.0)


@pytest.fixture
def store(sample_store: Path) -> Path:
    return sample_store


def test_cost_is_charged_at_the_batch_price_and_added_up_by_stats(store: Path) -> None:
    with FakeBatchAPI() as srv:
        priced = run_generate(GenerateConfig(store=store, teacher=f"openai-batch:{srv.url}#gpt-fake", limit=5,
                                             teacher_options=FAST, prices={"gpt-fake": PRICE}))  # fmt: skip
        unpriced = run_generate(GenerateConfig(store=store, teacher=f"openai-batch:{srv.url}#gpt-other", limit=3,
                                               teacher_options=FAST))  # fmt: skip
    expected = (priced.prompt_tokens * 2.0 + priced.completion_tokens * 8.0) / 1e6 * 0.5
    assert priced.prompt_tokens > 0 and priced.cost["usd"] == pytest.approx(expected)
    assert (
        unpriced.cost["usd"] is None
        and unpriced.cost["by_teacher"]["openai:gpt-other"]["completion_tokens"] > 0
    )
    cost = store_stats(Store.open(store))["cost"]
    assert cost["by_teacher"]["openai:gpt-fake"]["usd"] == pytest.approx(expected)
    assert cost["by_teacher"]["openai:gpt-other"]["usd"] is None and cost["usd"] is None  # never a guess
    page = run_report(
        ReportConfig(store=store, out=store.parent / "report.html")
    )  # the report shows the spend
    usage = Path(page.out).read_text().partition('id="teachers"')[2].partition("</section>")[0]
    priced_row = re.search(r"<tr><td>openai:gpt-fake</td>(.*?)</tr>", usage).group(1)
    unpriced_row = re.search(r"<tr><td>openai:gpt-other</td>(.*?)</tr>", usage).group(1)
    assert priced_row.endswith(_cell(round(expected, 2), True)) and unpriced_row.endswith("<td></td>")
    assert "No price configured" not in usage


def test_dry_run_counts_what_a_run_would_send(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("prices:\n  gpt-fake: {input_per_mtok: 2.0, output_per_mtok: 8.0}\n")
    monkeypatch.setenv("R1V_PRICES", str(prices))
    with FakeBatchAPI() as srv:
        spec = f"openai-batch:{srv.url}#gpt-fake"
        cfg = GenerateConfig(store=store, teacher=spec, limit=6, n=2, teacher_options=FAST,
                             sampling={"max_tokens": 300})  # fmt: skip
        before = estimate_generate(cfg)
        assert srv.batches == []  # nothing sent
        (line,) = before["lines"]
        assert (line["requests"], line["completion_tokens"], line["skipped"]) == (12, 12 * 300, 0)
        assert line["usd"] == pytest.approx((line["prompt_tokens"] * 2.0 + 3600 * 8.0) / 1e6 * 0.5)
        run_generate(cfg.model_copy(update={"limit": 3}))
        after = estimate_generate(cfg)
    assert after["lines"][0]["requests"] == 6 and after["lines"][0]["skipped"] == 6
    assert Store.open(store).query("SELECT count(*) FROM traces")[1][0][0] == 6  # the dry runs wrote nothing


def test_cli_dry_run_prints_requests_tokens_and_cost(store: Path) -> None:
    out = run_cli("generate", "--store", store, "--teacher", "openai-batch:http://127.0.0.1:9/v1#gpt-fake",
                  "--limit", "4", "--reviser", "anthropic-batch:claude-fake", "--dry-run", "--json",
                  "--set", "prices.gpt-fake.input_per_mtok=1", "--set", "prices.gpt-fake.output_per_mtok=4")  # fmt: skip
    estimate = json.loads(out.stdout)
    assert [line["what"] for line in estimate["lines"]] == ["round 1", "revise (at most)"]
    assert estimate["lines"][0]["usd"] > 0 and estimate["lines"][1]["usd"] is None
    assert estimate["total"]["usd"] is None and estimate["total"]["requests"] == 8
    score = json.loads(run_cli("score", "--store", store, "--judge", "anthropic-batch:claude-fake", "--limit", "4",
                               "--dry-run", "--json").stdout)  # fmt: skip
    assert [line["requests"] for line in score["lines"]] == [4, 4]
