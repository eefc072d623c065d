"""Study pages in a real browser: headless Debian chromium driven by Playwright's Python client.

The study folder of :mod:`study_data` (real recordings, a hostile respondent id, attribute name and value) is
rendered from its Parquet tables and opened from disk. Each page must load with no console error, no page error, no
dialog (nothing injected runs) and no request other than ``file://``; its charts must render, the segment selector
must switch the traces and the pair selector must update the comparison. Screenshots go to ``tmp_path`` and, when
``FER_SCREENSHOT_DIR`` is set, there too.

Needs ``/usr/bin/chromium`` (``CHROMIUM=/path`` selects another binary); without it these tests fail rather than skip.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from pages import RecordingPage, launch
from study_data import (
    EVIL_ATTRIBUTE,
    EVIL_RESPONDENT,
    EVIL_VALUE,
    STIMULI,
    study_folder,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STUDY_CHARTS = ("chart-valence", "chart-engagement", "chart-shares", "chart-segments", "chart-heatmap")
INDEX_CHARTS = ("chart-overlay",)


@pytest.fixture(scope="module")
def browser():
    with launch() as b:
        yield b


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    from fer_pipeline.report.study import render_studies

    info = study_folder(tmp_path_factory)
    render_studies(info["out"], info["cfg"])
    return info["out"] / "studies"


class Page(RecordingPage):
    """A recording page (:class:`pages.RecordingPage`) that waits for the charts."""

    def open(self, path: Path, charts) -> None:
        """Load ``path`` and wait until each of ``charts`` is drawn."""
        self.page.goto(path.resolve().as_uri(), wait_until="load")
        self.page.wait_for_function(
            "ids => ids.every(id => { const e = document.getElementById(id);"
            " return e && e.querySelector('.main-svg'); })", arg=list(charts), timeout=15_000)


def _trace_names(page, chart: str) -> list[str]:
    """Names of a chart's legend traces (the mean lines; the bands have no legend entry)."""
    return page.evaluate(f"document.getElementById('{chart}').data.filter(t => t.showlegend !== false)"
                         ".map(t => t.name)")


def test_stimulus_page_opens_clean_and_charts_render(browser, pages, tmp_path):
    pg = Page(browser)
    try:
        pg.open(pages / "ad_A.html", STUDY_CHARTS)
        page = pg.page
        assert page.locator("h1").inner_text() == "ad_A"
        for chart in STUDY_CHARTS:
            assert page.locator(f"#{chart} .main-svg").count() >= 1, chart
        data = json.loads(page.locator("#study-data").text_content())
        # the valence chart draws the table's means and its interval as a filled band
        traces = page.evaluate("document.getElementById('chart-valence').data.map(t => ({name: t.name, "
                               "fill: t.fill || null, n: t.y.length}))")
        assert any(t["fill"] == "tonexty" for t in traces)
        valence = page.evaluate("document.getElementById('chart-valence').data.find(t => t.name === 'Valence').y")
        assert valence == data["traces"]["valence"]["mean"]
        counts = page.evaluate("document.getElementById('chart-valence').data.find(t => t.name === 'Respondents').y")
        assert max(counts) == max(data["respondents"]) == 4
        # hostile text shows as text: no element was injected, the id reads as written
        assert page.locator('img[src="x"]').count() == 0
        assert page.locator("#respondents").get_by_text(EVIL_RESPONDENT, exact=True).count() == 1
        ticks = page.locator("#chart-heatmap .ytick text").all_text_contents()
        assert any(t.startswith("<img src=x") for t in ticks), ticks
        # every thumbnail loads (relative files beside the per-video reports)
        broken = page.evaluate("""async () => { const bad = [];
            for (const i of document.images) { i.loading = "eager";
              try { await i.decode(); } catch (e) { bad.push(i.getAttribute("src")); } }
            return bad; }""")
        assert broken == []
        assert page.locator("#key-moments img.thumb").count() >= 3
        # hover answers with the interval
        assert "[" in pg.hover_chart("chart-valence", (0.42, 0.45))
        pg.check_clean()
        page.mouse.move(0, 0)
        pg.shot(tmp_path / "study-ad_A.png")
    finally:
        pg.close()


def test_segment_selector_switches_traces(browser, pages):
    pg = Page(browser)
    try:
        pg.open(pages / "ad_A.html", STUDY_CHARTS)
        page = pg.page
        first = _trace_names(page, "chart-segments")
        assert sorted(first) == sorted(["control (2)", "&lt;script&gt;alert(1)&lt;/script&gt; (2)"])
        legend = page.locator("#chart-segments .legendtext").all_text_contents()
        assert f"{EVIL_VALUE} (2)" in legend  # shown as the text itself
        options = page.locator("#segment-attr option").all_text_contents()
        assert options[1].startswith(EVIL_ATTRIBUTE)
        page.select_option("#segment-attr", "1")
        page.wait_for_function("document.getElementById('chart-segments').data.some(t => t.name === 'a (2)')")
        assert sorted(_trace_names(page, "chart-segments")) == ["a (2)", "b (2)"]
        data = json.loads(page.locator("#study-data").text_content())
        want = next(v for v in data["segments"][1]["values"] if v["value"] == "a")["valence"]["mean"]
        got = page.evaluate("document.getElementById('chart-segments').data.find(t => t.name === 'a (2)').y")
        assert got == want
        page.select_option("#segment-metric", "attention")
        page.wait_for_function("document.getElementById('chart-segments').layout.yaxis.title.text === 'Attention'")
        got = page.evaluate("document.getElementById('chart-segments').data.find(t => t.name === 'a (2)').y")
        assert got == next(v for v in data["segments"][1]["values"] if v["value"] == "a")["attention"]["mean"]
        pg.check_clean()
    finally:
        pg.close()


def test_index_opens_clean_and_pair_selector_updates(browser, pages, tmp_path):
    pg = Page(browser)
    try:
        pg.open(pages / "index.html", INDEX_CHARTS)
        page = pg.page
        data = json.loads(page.locator("#studies-data").text_content())
        names = _trace_names(page, "chart-overlay")
        assert names == list(STIMULI)
        for s in STIMULI:
            link = page.locator(f'#stimuli a[href="{s}.html"]')
            assert link.count() == 1 and (pages / f"{s}.html").is_file()
        page.select_option("#overlay-metric", "attention")
        page.wait_for_function("document.getElementById('chart-overlay').layout.yaxis.title.text === 'Attention'")

        pair = data["pairs"][0]
        row = page.locator('#pair-result tr[data-figure="mean_valence"] td')
        d = pair["figures"]["mean_valence"]
        p_text = "< 0.001" if d["p"] < 0.001 else f"{d['p']:.3f}"

        def signed(v):
            r = round(v, 2)
            return "0.00" if r == 0 else ("+" if r > 0 else "\u2212") + f"{abs(r):.2f}"

        assert row.nth(3).inner_text() == signed(d["diff"]) and row.nth(4).inner_text() == p_text
        # B against A: the same test, the difference turned round
        page.select_option("#pair-a", STIMULI[1])
        page.select_option("#pair-b", STIMULI[0])
        assert row.nth(1).inner_text() == signed(d["b"]) and row.nth(2).inner_text() == signed(d["a"])
        assert row.nth(3).inner_text() == signed(-d["diff"]) and row.nth(4).inner_text() == p_text
        smiled = page.locator('#pair-result tr[data-figure="smiled"] td')
        assert smiled.nth(3).inner_text().endswith("pp")
        page.select_option("#pair-b", STIMULI[1])
        assert page.locator("#pair-note").inner_text() == "Pick two different stimuli."
        assert row.nth(4).inner_text() == "\u2014"
        # sorting by mean valence puts the lower stimulus first
        page.locator("#stimuli th", has_text="Mean valence").click()
        order = page.locator("#stimuli tbody tr").evaluate_all("rs => rs.map(r => r.dataset.stimulus)")
        low = STIMULI[0] if pair["figures"]["mean_valence"]["diff"] < 0 else STIMULI[1]
        assert order[0] == low
        pcts = page.locator("#norms td[data-percentile]").evaluate_all(
            "tds => tds.map(t => parseFloat(t.dataset.percentile))")
        assert pcts and all(0 <= x <= 100 for x in pcts)
        pg.check_clean()
        pg.shot(tmp_path / "studies-index.png")
    finally:
        pg.close()
