"""The live page of a live session (:mod:`fer_pipeline.report.live`): ``OUT/live.html`` and ``OUT/live-data.js``.

Without a browser: what :meth:`LivePage.start`, :meth:`~LivePage.update` and :meth:`~LivePage.finish` write (the data
file is JavaScript whose JSON parses, NaN is ``null``, hostile text stays data), that only the last ``window_s``
seconds are kept, and that a failed write leaves the previous data file whole. In headless Debian chromium (the
shared helpers of ``pages.py``; one browser for the module): the page opened from ``file://`` and from a local http
server shows the newest second as the rows give it, follows new seconds, keeps its data when a reload fails, and
shows the end with the report's link; a hostile source, video id and label show as text and nothing injected runs.

The rows are built with the ``audience`` columns of :func:`fer_pipeline.aggregate.audience` for the labels of the
default model (``models/emotion-fer2013-vgg.json``).
"""
from __future__ import annotations

import functools
import json
import math
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from pages import RecordingPage, launch

from fer_pipeline.aggregate import expressiveness, valence
from fer_pipeline.report.html import fmt_pct, fmt_signed
from fer_pipeline.report.live import DATA_PREFIX, LivePage

LABELS = tuple(json.loads((REPO / "models" / "emotion-fer2013-vgg.json").read_text())["labels"])
EVIL_SOURCE = "udp://x/<script>alert(1)</script>"
EVIL_ID = "live-<img src=x onerror=alert(2)>"
EVIL_LABEL = "</script><img src=x onerror=alert(3)>"

def audience_row(second: int, viewers: int, labels=LABELS, seed: int | None = None,
                 attention: float | None = 0.75) -> pd.DataFrame:
    """One provisional ``audience`` row (columns and order of :func:`fer_pipeline.aggregate.audience`): random
    probabilities and shares for ``viewers > 0``, NaN figures for a second without viewers."""
    rng = np.random.default_rng(second if seed is None else seed)
    p = rng.dirichlet(np.ones(len(labels))) if viewers else np.full(len(labels), np.nan)
    share = rng.dirichlet(np.ones(len(labels))) if viewers else np.full(len(labels), np.nan)
    row = {"second": second, "viewers": viewers}
    row.update({f"p_{x}": v for x, v in zip(labels, p)})
    row.update({f"share_{x}": v for x, v in zip(labels, share)})
    row["valence"] = float(valence(p[None, :], labels)[0])
    row["expressiveness"] = float(expressiveness(p[None, :], labels)[0])
    row["attention"] = attention if viewers and attention is not None else np.nan
    return pd.DataFrame([row])


def status(second: int, **kw) -> dict:
    """A session status as :class:`fer_pipeline.stream.session.LiveStatus` gives it, plus ``state``."""
    st = {"video_id": "ignored", "source": "ignored", "state": "live", "stream_s": second + 1.0,
          "samples": 5 * (second + 1), "frames_dropped": 3, "latency_p50_s": 0.123, "latency_p95_s": 0.2506,
          "viewers_now": 2, "settled_until": max(0, second - 3)}
    st.update(kw)
    return st


def read_data(out) -> dict:
    """``OUT/live-data.js`` as the page's script sees it: ``window.FER_LIVE = <JSON>;``."""
    text = (out / "live-data.js").read_text(encoding="utf-8")
    assert text.startswith(DATA_PREFIX) and text.endswith(";\n"), text[:80]
    return json.loads(text[len(DATA_PREFIX):-2])


# ---------------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------------


def test_start_writes_the_page_and_a_first_data_file(tmp_path):
    out = tmp_path / "OUT"
    page = LivePage(out, "live-cam-20261202t101500z", "rtsp://10.0.0.5/stream", LABELS)
    html_path = page.start()
    assert html_path == out / "live.html" and html_path.is_file()
    html = html_path.read_text(encoding="utf-8")
    # offline: no network reference of any kind, nothing loaded but the data script the page adds itself
    assert "://" not in html and "@import" not in html and "url(" not in html and "plotly" not in html.lower()
    assert re.findall(r'<[a-z][^<>]*?\s(?:href|src)\s*=\s*"([^"]*)"', html) == []
    assert "live-cam-20261202t101500z" in html and "rtsp" not in html  # the source comes with the data, as text
    data = read_data(out)
    assert data["state"] == "live" and data["ended"] is None and data["rows"] == []
    assert data["labels"] == list(LABELS) and len(data["colors"]) == len(LABELS)
    assert data["source"] == "rtsp://10.0.0.5/stream" and data["report_href"] is None
    assert data["status"]["latency_p50_s"] is None  # unknown before the first update
    assert data["columns"] == ["second", "viewers", "valence", "attention", "expressiveness", "shares", "p"]


def test_update_keeps_only_the_last_window_seconds(tmp_path):
    page = LivePage(tmp_path, "v", "0", LABELS, window_s=10)
    page.start()
    for s in range(25):
        page.update([audience_row(s, 2)], status(s))
    assert page.seconds == list(range(15, 25))
    data = read_data(tmp_path)
    assert [r[0] for r in data["rows"]] == list(range(15, 25))
    want = audience_row(24, 2).iloc[0]
    newest = data["rows"][-1]
    assert newest[1] == 2
    assert newest[2] == pytest.approx(want["valence"], abs=1e-4)
    assert newest[3] == pytest.approx(0.75) and newest[4] == pytest.approx(want["expressiveness"], abs=1e-4)
    assert newest[5] == pytest.approx([want[f"share_{x}"] for x in LABELS], abs=1e-4)
    assert newest[6] == pytest.approx([want[f"p_{x}"] for x in LABELS], abs=1e-4)
    # a jump in stream time drops every second more than window_s before the newest, not just the oldest one
    page.update(pd.concat([audience_row(31, 1), audience_row(40, 1)], ignore_index=True), status(40))
    assert page.seconds == [31, 40]
    # the newest second again replaces it; an older one is ignored
    page.update([audience_row(40, 4), audience_row(35, 9)], status(40))
    assert page.seconds == [31, 40] and read_data(tmp_path)["rows"][-1][1] == 4
    # a status-only update keeps the rows
    page.update([], status(41, frames_dropped=7))
    data = read_data(tmp_path)
    assert [r[0] for r in data["rows"]] == [31, 40] and data["status"]["frames_dropped"] == 7


def test_nan_is_null_and_missing_status_is_unknown(tmp_path):
    page = LivePage(tmp_path, "v", "0", LABELS, window_s=60)
    page.start()
    page.update([audience_row(0, 3, attention=None), audience_row(1, 0)],
                {"state": "live", "latency_p50_s": float("nan"), "frames_dropped": "?", "stream_s": np.float32(2.0),
                 "samples": np.int64(10)})
    data = read_data(tmp_path)
    first, empty = data["rows"]
    assert first[1] == 3 and first[3] is None and first[2] is not None  # no head pose: attention unknown
    assert empty[1] == 0 and empty[2:5] == [None, None, None]
    assert empty[5] == [None] * len(LABELS) and empty[6] == [None] * len(LABELS)
    st = data["status"]
    assert st["latency_p50_s"] is None and st["frames_dropped"] is None and st["latency_p95_s"] is None
    assert st["stream_s"] == 2.0 and st["samples"] == 10 and st["error"] is None
    # columns the page does not use may hold text
    extra = audience_row(2, 1).assign(video_id="v", emotion="happy")
    page.update(extra, {})
    assert read_data(tmp_path)["rows"][-1][:2] == [2, 1]
    # a row without the columns a second needs is refused, not guessed
    with pytest.raises(ValueError, match="second"):
        page.update([pd.DataFrame({"viewers": [1]})], {})


def test_hostile_text_stays_data_in_the_data_file(tmp_path):
    labels = (*LABELS, EVIL_LABEL)
    page = LivePage(tmp_path, EVIL_ID, EVIL_SOURCE, labels)
    page.start()
    page.update([audience_row(0, 1, labels=labels)], status(0, error="bad </script><!-- packet"))
    text = (tmp_path / "live-data.js").read_text(encoding="utf-8")
    assert "<" not in text and ">" not in text  # nothing in it can close a script or open a comment
    data = read_data(tmp_path)
    assert data["source"] == EVIL_SOURCE and data["video_id"] == EVIL_ID and data["labels"][-1] == EVIL_LABEL
    assert data["status"]["error"] == "bad </script><!-- packet"
    html = (tmp_path / "live.html").read_text(encoding="utf-8")
    assert "<img" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html


def test_a_failed_write_keeps_the_previous_data_file(tmp_path, monkeypatch):
    from fer_pipeline.report import live

    page = LivePage(tmp_path, "v", "0", LABELS)
    page.start()
    page.update([audience_row(0, 1)], status(0))
    before = (tmp_path / "live-data.js").read_bytes()

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(live.os, "replace", fail)
    with pytest.raises(OSError):
        page.update([audience_row(1, 1)], status(1))
    monkeypatch.undo()
    assert (tmp_path / "live-data.js").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live-data.js", "live.html"]  # no temp file left


def test_finish_writes_the_end_and_the_report_link(tmp_path):
    page = LivePage(tmp_path, "v", "0", LABELS)
    page.start()
    page.update([audience_row(0, 1)], status(0))
    page.finish(status(0, state="live", ended="eof"), "reports/live-v.html")
    data = read_data(tmp_path)
    assert data["state"] == "ended" and data["ended"] == "eof" and data["report_href"] == "reports/live-v.html"
    assert [r[0] for r in data["rows"]] == [0]
    for bad in ("https://example.org/r.html", "/abs/r.html", "javascript:alert(1)"):
        with pytest.raises(ValueError):
            page.finish(status(0), bad)
    page.finish({"ended": None}, None)
    data = read_data(tmp_path)
    assert data["state"] == "ended" and data["ended"] is None and data["report_href"] is None


def test_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError):
        LivePage(tmp_path, "v", "0", LABELS, window_s=0)
    with pytest.raises(ValueError):
        LivePage(tmp_path, "v", "0", LABELS, refresh_s=0)
    with pytest.raises(ValueError):
        LivePage(tmp_path, "v", "0", [])


# ---------------------------------------------------------------------------------------------------------------------
# In the browser
# ---------------------------------------------------------------------------------------------------------------------

POLL_MS = 10_000  # generous: the page reloads its data every refresh_s (1 s by default)


@pytest.fixture(scope="module")
def browser():
    with launch() as b:
        yield b


def _wait_text(page, selector: str, text: str) -> None:
    page.wait_for_function("([sel, want]) => { const e = document.querySelector(sel);"
                           " return e && e.textContent === want; }", arg=[selector, text], timeout=POLL_MS)


def _text(page, selector: str) -> str:
    return page.locator(selector).text_content()


@pytest.mark.browser
@pytest.mark.slow
def test_page_from_file_follows_the_session_to_its_end(browser, tmp_path):
    out = tmp_path / "OUT"
    page = LivePage(out, EVIL_ID, EVIL_SOURCE, LABELS, window_s=120)  # refresh_s: the default, 1 s
    page.start()
    rows = [audience_row(s, 0 if 20 <= s < 25 else (1 + s % 3)) for s in range(60)]
    page.update(rows, status(59))
    pg = RecordingPage(browser)
    try:
        pg.page.goto((out / "live.html").as_uri(), wait_until="load")
        p = pg.page
        newest = rows[-1].iloc[0]
        _wait_text(p, "#now-second", "in second 59 (0:59)")
        assert _text(p, "#now-viewers") == str(int(newest["viewers"]))
        assert _text(p, "#now-valence") == fmt_signed(newest["valence"])
        assert _text(p, "#now-attention") == fmt_pct(newest["attention"])
        assert _text(p, "#now-expressiveness") == fmt_pct(newest["expressiveness"])
        dominant = max(LABELS, key=lambda x: newest[f"p_{x}"])
        assert _text(p, "#now-emotion") == dominant
        # the header: the session's figures
        assert _text(p, "#state") == "LIVE"
        assert _text(p, "#latency") == "latency p50 123 ms · p95 251 ms"
        assert _text(p, "#dropped") == "3 frames dropped"
        assert _text(p, "#settled") == "written to tables up to second 56"
        assert _text(p, "#stream-time") == "stream time 1:00"
        # charts: the seconds without viewers are a gap (two runs of the line) and a grey band; every label's
        # shares are drawn, with a legend entry each
        assert p.locator("#chart-valence path").count() == 1
        assert p.eval_on_selector("#chart-valence path", "e => (e.getAttribute('d').match(/M/g) || []).length") == 2
        assert p.locator("#chart-valence rect.empty").count() == 1
        assert p.locator("#chart-attention path").count() == 1 and p.locator("#chart-viewers path").count() == 2
        assert p.locator("#chart-shares path[data-label]").count() == len(LABELS)
        assert p.locator("#legend .chip").all_text_contents() == list(LABELS)
        # hostile source and id: shown as the text itself, nothing injected
        assert _text(p, "h1") == EVIL_SOURCE and _text(p, "#video-id") == EVIL_ID
        assert p.locator("img").count() == 0
        assert p.evaluate("[...document.scripts].filter(s => !s.src).length") == 2  # the page's own: config, code
        assert p.evaluate("[...document.scripts].filter(s => s.src).every(s => /live-data[.]js[?]n=\\d+$/.test(s.src))")
        # hovering a chart reads the second under the mouse (plot area: 46 px from the left, 12 px from the right;
        # the x axis spans the window, 120 s from second 0)
        box = p.locator("#chart-valence").bounding_box()
        x = box["x"] + 46 + (30.5 / 120) * (box["width"] - 58)
        p.mouse.move(x, box["y"] + box["height"] / 2)
        r30 = rows[30].iloc[0]
        assert _text(p, "#readout-valence") == f"0:30 (second 30) · valence {fmt_signed(r30['valence'])} · 1 viewer"
        assert p.locator("#chart-valence line.guide").count() == 1
        p.mouse.move(0, 0)
        assert _text(p, "#readout-valence") == ""
        pg.shot(tmp_path / "live-page.png")

        # a new second: the page shows it at its next reload
        new = audience_row(60, 7, seed=1234)
        page.update([new], status(60, latency_p95_s=float("nan")))
        _wait_text(p, "#now-second", "in second 60 (1:00)")
        assert _text(p, "#now-viewers") == "7"
        assert _text(p, "#now-valence") == fmt_signed(new.iloc[0]["valence"])
        assert _text(p, "#latency") == "latency p50 123 ms · p95 —"

        # the end: state, reason and the report's link, shown prominently
        (out / "reports").mkdir()
        (out / "reports" / "live-x.html").write_text("<!DOCTYPE html><title>report</title>")
        page.finish(status(60, state="ended", ended="eof"), "reports/live-x.html")
        _wait_text(p, "#state", "ENDED")
        assert p.locator("#ended-note").is_visible() and "end of stream" in _text(p, "#ended-note")
        link = p.locator("#report-link")
        assert link.is_visible() and link.get_attribute("href") == "reports/live-x.html"
        assert p.evaluate("document.getElementById('report-link').href") == (out / "reports" / "live-x.html").as_uri()
        assert _text(p, "#now-viewers") == "7"  # the data stays
        pg.shot(tmp_path / "live-page-ended.png")
        pg.check_clean()
    finally:
        pg.close()


@pytest.mark.browser
@pytest.mark.slow
def test_page_keeps_its_data_when_a_reload_fails(browser, tmp_path):
    page = LivePage(tmp_path, "v", "0", LABELS, refresh_s=0.25)
    page.start()
    page.update([audience_row(s, 2) for s in range(5)], status(4))
    pg = RecordingPage(browser)
    try:
        pg.page.goto((tmp_path / "live.html").as_uri(), wait_until="load")
        p = pg.page
        _wait_text(p, "#now-second", "in second 4 (0:04)")
        shown = _text(p, "#now-valence")
        (tmp_path / "live-data.js").unlink()  # as if caught between two versions
        failed = p.evaluate("window.FER_LIVE_PAGE.failures")
        p.wait_for_function("n => window.FER_LIVE_PAGE.failures >= n + 2", arg=failed, timeout=POLL_MS)
        assert _text(p, "#now-second") == "in second 4 (0:04)" and _text(p, "#now-valence") == shown
        assert p.locator("#chart-valence path").count() == 1
        page.update([audience_row(5, 6)], status(5))  # the file is back: the page takes it up again
        _wait_text(p, "#now-second", "in second 5 (0:05)")
        assert _text(p, "#now-viewers") == "6"
        # the only errors are the failed loads of the missing file; nothing else, and nothing but file://
        assert pg.errors and all("live-data.js" in e or "ERR_FILE_NOT_FOUND" in e for e in pg.errors), pg.errors
        pg.errors.clear()
        pg.check_clean()
    finally:
        pg.close()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.mark.browser
@pytest.mark.slow
def test_page_served_over_http_with_a_hostile_label(browser, tmp_path):
    labels = (*LABELS, EVIL_LABEL)
    page = LivePage(tmp_path, "v", EVIL_SOURCE, labels, refresh_s=0.5)
    page.start()
    page.update([audience_row(s, 3, labels=labels) for s in range(10)], status(9))
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    origin = f"http://127.0.0.1:{server.server_address[1]}/"
    pg = RecordingPage(browser)
    try:
        p = pg.page
        p.goto(origin + "live.html", wait_until="load")
        _wait_text(p, "#now-second", "in second 9 (0:09)")
        assert p.locator("#legend .chip").all_text_contents() == list(labels)
        assert p.locator("img").count() == 0
        page.update([audience_row(10, 5, labels=labels)], status(10))
        _wait_text(p, "#now-viewers", "5")
        assert _text(p, "#now-second") == "in second 10 (0:10)"
        assert pg.errors == [] and pg.dialogs == [], (pg.errors, pg.requests)
        assert pg.requests and all(u.startswith(origin) for u in pg.requests), pg.requests
    finally:
        pg.close()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_rows_helper_matches_the_audience_columns():
    """The rows above have the columns the session gives (:func:`fer_pipeline.aggregate.audience`)."""
    from fer_pipeline.aggregate import audience

    real = audience(pd.DataFrame(columns=["track_id", "second", *[f"p_{x}" for x in LABELS], "emotion",
                                          "valence", "expressiveness", "attention"]), LABELS, 1)
    assert list(audience_row(0, 1).columns) == list(real.columns)
    assert math.isnan(audience_row(0, 0).iloc[0]["valence"])
