"""The report of a real store, in a real browser: MATH-Vision testmini with three models' outputs
imported, scored, filtered and mixed; `mix` writes report.html, headless Chromium opens it, every
section's plot draws, the gallery's images decode and its filters work, and the page makes no
network request. The screenshot is saved beside the test's files.

Needs Chromium (`apt-get install -y chromium`; `.ci/run` installs it): the test fails in CI (the
CI variable set) when it is missing, and is skipped elsewhere with that instruction. Point
R1V_CHROMIUM at another Chrome/Chromium binary to use that one."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import mathv_with_outputs, run_cli
from headless import HOW_TO_GET, Browser, find_chromium

SECTIONS = ["funnel", "lengths", "verdicts", "scores", "dedup", "mixture", "teachers", "gallery"]

# per section: how many charts drew (an <svg> laid out with a visible mark in it), and the
# thumbnails that decoded
_DRAWN = """(() => {
  const out = {};
  for (const s of document.querySelectorAll('section')) {
    const charts = [...s.querySelectorAll('svg')].filter(svg => {
      const box = svg.getBoundingClientRect();
      const marks = [...svg.querySelectorAll('rect, polyline, path, text')]
        .filter(m => { const b = m.getBBox(); return b.width > 0 && b.height > 0; });
      return box.width > 0 && box.height > 0 && marks.length > 0;
    }).length;
    const canvases = [...s.querySelectorAll('canvas')].filter(c => c.width > 0 && c.height > 0).length;
    const images = [...s.querySelectorAll('img')];
    out[s.id] = {charts: charts + canvases, images: images.length,
                 decoded: images.filter(i => i.complete && i.naturalWidth > 0).length,
                 none: s.querySelectorAll('.none').length};
  }
  return out;
})()"""

_FILTER = """(() => {
  const pick = document.getElementById('f-verdict');
  pick.value = 'correct'; r1vFilter();
  const shown = [...document.querySelectorAll('.ex')].filter(e => e.style.display !== 'none');
  const ok = shown.every(e => e.dataset.verdict === 'correct');
  pick.value = ''; r1vFilter();
  return {shown: shown.length, ok: ok, all: document.querySelectorAll('.ex').length};
})()"""


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> dict:
    root = tmp_path_factory.mktemp("report")
    store = mathv_with_outputs(root / "store", shared)
    run_cli("score", "--store", store)
    run_cli("filter", "--store", store)
    result = json.loads(run_cli("mix", "--store", store, "--out", root / "mix", "--json").stdout)
    return {"store": store, "out": root / "mix", "result": result}


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is missing in CI: {HOW_TO_GET}")
        pytest.skip(HOW_TO_GET)
    return binary


def test_the_real_report_draws_every_section_offline(mixed: dict, chromium: str, tmp_path: Path) -> None:
    report = mixed["out"] / "report.html"
    assert (
        mixed["result"]["report"] == str(report) and report.stat().st_size == mixed["result"]["report_bytes"]
    )
    assert report.stat().st_size < 2_000_000  # 24 thumbnails and aggregated plots: a few hundred kB
    browser = Browser(chromium, tmp_path / "profile")
    try:
        browser.open(report.as_uri())
        drawn = browser.evaluate(_DRAWN)
        filtered = browser.evaluate(_FILTER)
        browser.screenshot(tmp_path / "report.png")
        requests, console = browser.requests, browser.console
    finally:
        browser.close()
    if os.environ.get("R1V_REPORT_SCREENSHOT"):  # how docs/report.png is made
        shutil.copy(tmp_path / "report.png", os.environ["R1V_REPORT_SCREENSHOT"])
    assert list(drawn) == SECTIONS
    for key in SECTIONS[:-1]:  # every section with data drew its plots
        assert drawn[key]["charts"] >= 1, (key, drawn[key])
    assert drawn["lengths"]["charts"] == 4 and drawn["verdicts"]["charts"] == 4  # every grouping had data
    assert drawn["scores"]["charts"] == 4  # S_v/S_t/S_I, the properties, DRLC's penalty, the reward
    gallery = drawn["gallery"]
    assert gallery["images"] >= 24 and gallery["decoded"] == gallery["images"]  # MATH-Vision's figures
    assert filtered["all"] == 24 and 0 < filtered["shown"] < 24 and filtered["ok"]
    # the only URL ever requested is the page itself (thumbnails are data: URIs), and nothing
    # was refused by the page's Content-Security-Policy either
    assert [u for u in requests if not u.startswith("data:")] == [report.as_uri()]
    assert not [line for line in console if "Content Security Policy" in line or "Refused" in line], console
    assert (tmp_path / "report.png").stat().st_size > 50_000  # a real screenshot, not a blank page


def test_the_card_links_the_report_and_no_report_leaves_it_out(mixed: dict, tmp_path: Path) -> None:
    card = (mixed["out"] / "README.md").read_text()
    assert "[report.html](report.html)" in card
    out = tmp_path / "again"
    run_cli("mix", "--store", mixed["store"], "--out", out, "--kind", "rl")
    assert (out / "report.html").is_file()
    # an earlier mix with its report is replaced whole (report.html is mix's own file)
    again = run_cli(
        "mix", "--store", mixed["store"], "--out", out, "--kind", "rl", "--overwrite", "--no-report", "--json"
    )
    assert json.loads(again.stdout)["report"] is None and not (out / "report.html").exists()
    assert "report.html" not in (out / "README.md").read_text()
