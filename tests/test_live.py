"""Live mode on real streams: a shared clip sent over UDP (MPEG-TS, x264 zerolatency) on the loopback at real pace,
and the same clip played as a file. Checks what a user relies on: every second with a face is in the tables, the
latency is measured, the session ends by itself on idle, SIGINT mid-stream leaves complete tables and a report, a
source that does not exist fails at once, a slow consumer drops frames instead of growing memory, and the live
rows agree with a batch run of the same recording (the same stages)."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, VIDEOS
from fer_pipeline.stream.send import UdpSender, free_udp_port

CLIP = VIDEOS / "WolfgangLanger_Pexels.mp4"  # 19.7 s, one woman in every frame
CLI = [sys.executable, "-m", "fer_pipeline"]


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    from fer_pipeline.store import read_table

    return {t: read_table(out, t) for t in ("faces", "timeline", "audience", "videos")}


@pytest.fixture(scope="module")
def udp_session(tmp_path_factory):
    """`fer-pipeline live udp://...` on 8 s of the clip streamed at real pace; ends on its own (idle timeout)."""
    out = tmp_path_factory.mktemp("live-udp") / "out"
    port = free_udp_port()
    sender = UdpSender(CLIP, port, seconds=8.0, delay_s=4.0)  # starts after --idle-timeout: the open waits longer
    proc = subprocess.Popen([*CLI, "live", f"udp://127.0.0.1:{port}", "--out", str(out), "--idle-timeout", "3",
                             "--flush-s", "3"], cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    sender.start()
    try:
        text, _ = proc.communicate(timeout=240)
    finally:
        sender.stop()
        proc.kill()
    assert sender.error is None, sender.error
    return {"out": out, "rc": proc.returncode, "text": text, "sent": sender.sent}


def test_udp_stream_ends_by_itself_with_tables_report_and_index(udp_session):
    out, text = udp_session["out"], udp_session["text"]
    assert udp_session["rc"] == 0, text
    assert "ended (idle)" in text
    t = _tables(out)
    v = t["videos"]
    assert len(v) == 1 and v["status"].iloc[0] == "ok"
    vid = v["video_id"].iloc[0]
    assert vid.startswith("live-udp-127-0-0-1-")
    # the stream's 8 s are in the tables: every second has its audience row and, the woman being in every frame, a
    # viewer (the first second may miss the frames sent before the decoder found a key frame)
    au = t["audience"].sort_values("second")
    assert au["second"].tolist() == list(range(len(au)))
    assert 7 <= len(au) <= 9
    with_face = au.loc[au["viewers"] > 0, "second"].tolist()
    assert set(range(1, 8)) <= set(with_face)
    assert v["viewers"].iloc[0] == 1 and t["faces"]["viewer_id"].nunique() == 1
    # several flushes: several part files, all readable, no row twice
    parts = sorted((out / "faces" / f"video_id={vid}").glob("*.parquet"))
    assert len(parts) >= 2
    assert not t["faces"].duplicated(["frame_index", "track_id"]).any()
    assert not t["timeline"].duplicated(["track_id", "second"]).any()
    probs = t["faces"][[c for c in t["faces"].columns if c.startswith("p_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    # latency measured: arrival -> probabilities, a fraction of a second on this CPU
    p50, p95 = v["latency_p50_s"].iloc[0], v["latency_p95_s"].iloc[0]
    assert 0 < p50 <= p95 < 5
    assert v["frames_dropped"].iloc[0] >= 0 and v["gap_s"].iloc[0] == 0
    # report and index like a batch run's
    reports = list((out / "reports").glob("live-udp-*.html"))
    assert len(reports) == 1
    assert vid in (out / "index.html").read_text()
    assert (out / "live.html").is_file()


def test_udp_live_page_data_says_the_session_ended(udp_session):
    js = (udp_session["out"] / "live-data.js").read_text()
    data = json.loads(js[js.index("{"):js.rindex("}") + 1])
    assert "ended" in json.dumps(data)


def test_source_that_does_not_exist_fails_at_once(tmp_path):
    out = tmp_path / "out"
    t0 = time.monotonic()
    r = subprocess.run([*CLI, "live", str(tmp_path / "nope.mp4"), "--out", str(out)], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "source not found" in lines[0] and "nope.mp4" in lines[0]
    assert "Traceback" not in r.stderr
    assert not out.exists()
    r = subprocess.run([*CLI, "live", "7", "--out", str(out)], cwd=REPO, env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "camera 7 not found" in r.stderr
    assert time.monotonic() - t0 < 120  # bounded by the timeout above; the point is that neither waits for data


def test_stream_that_never_starts_fails_after_the_open_timeout(tmp_path):
    out = tmp_path / "out"
    port = free_udp_port()
    r = subprocess.run([*CLI, "live", f"udp://127.0.0.1:{port}", "--out", str(out), "--open-timeout", "1.5"],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "nothing received in 1.5 s" in r.stderr and "Traceback" not in r.stderr
    assert not (out / "videos").exists()


def test_sigint_mid_stream_leaves_complete_tables_and_a_report(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([*CLI, "live", str(CLIP), "--realtime", "--out", str(out), "--flush-s", "2"],
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        videos = out / "videos"
        while time.monotonic() < deadline and not list(videos.glob("*/part-0.parquet")):
            time.sleep(0.2)  # the first window written: the session is running
        assert list(videos.glob("*/part-0.parquet")), "no window written"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        text, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, text
    assert "ended (stopped)" in text and "Traceback" not in text
    t = _tables(out)
    v = t["videos"].iloc[0]
    assert v["status"] == "ok" and 2 < v["duration_s"] < 19
    # complete: the audience covers every second up to the stop, and the faces agree with the videos row
    au = t["audience"].sort_values("second")
    assert au["second"].tolist() == list(range(len(au)))
    assert len(au) == math.floor(v["duration_s"] - 1e-9) + 1
    assert len(t["faces"]) == v["faces_detected"]
    assert list((out / "reports").glob("live-*.html"))


def test_iterator_api_yields_each_second_and_writes_nothing_without_out(tmp_path, monkeypatch):
    import fer_pipeline

    monkeypatch.chdir(tmp_path)
    rows = list(fer_pipeline.live(str(VIDEOS / "single_face.mp4")))  # 2.4 s file, as fast as it decodes
    assert [r["second"] for r in rows] == [0, 1, 2]
    labels = [k[2:] for k in rows[0] if k.startswith("p_")]
    for r in rows:
        assert isinstance(r["viewers"], int)
        if r["viewers"]:
            assert math.isclose(sum(r[f"p_{lab}"] for lab in labels), 1.0, abs_tol=1e-4)
            assert -1 <= r["valence"] <= 1
    assert rows[0]["viewers"] == 1
    assert list(tmp_path.iterdir()) == []


def test_slow_consumer_drops_frames_instead_of_growing_memory():
    from fer_pipeline.stream.source import LiveSource

    src = LiveSource(str(CLIP), 10.0, realtime=True, queue_frames=4).start()
    try:
        seen = []
        for _ in range(20):  # 2 s without taking anything: the queue stays at its bound, the oldest are dropped
            time.sleep(0.1)
            seen.append(src.queued())
        assert max(seen) == 4
        assert src.frames_dropped >= 10  # about 20 sampled in 2 s at 10 Hz, 4 kept
        got = src.get(16, 1.0)
        assert 1 <= len(got) <= 4
        ts = [s.timestamp_s for s in got]
        assert ts == sorted(ts) and ts[-1] > 1.5  # the newest frames, not the first ones
    finally:
        src.close()


def test_live_rows_agree_with_a_batch_run_of_the_same_recording(tmp_path):
    """The same stages: a file read by the live path (every sample, nothing dropped) and by `analyze` give the same
    faces, tracks, viewers and per-second figures. The detector runs on every whole frame in both
    (``detect.adaptive_input`` off): with it on, a batch run detects most frames of a batch on crops around the
    previous faces, while a live session's batches are one or two frames, each detected whole."""
    import fer_pipeline

    batch = fer_pipeline.analyze(CLIP, detect__adaptive_input=False)
    run = fer_pipeline.live(str(CLIP), out=tmp_path / "live", reports=False, page=False,
                            detect__adaptive_input=False)
    run.run()
    live = fer_pipeline.read_results(tmp_path / "live")
    assert run.result["ended"] == "eof" and run.result["frames_dropped"] == 0
    assert live.videos["viewers"].iloc[0] == batch.videos["viewers"].iloc[0] == 1
    assert live.videos["tracks"].iloc[0] == batch.videos["tracks"].iloc[0]
    cols = ["frame_index", "timestamp_s", "track_id", "viewer_id", "x1", "y1", "x2", "y2", "p_happy", "p_sad"]
    pd.testing.assert_frame_equal(live.faces[cols].reset_index(drop=True), batch.faces[cols].reset_index(drop=True),
                                  check_exact=False, atol=1e-3)
    a = batch.audience.set_index("second")
    b = live.audience.set_index("second")
    assert a.index.equals(b.index)
    np.testing.assert_allclose(b["valence"], a["valence"], atol=1e-4)
    np.testing.assert_array_equal(b["viewers"], a["viewers"])


def _ts_bytes(clip: Path, seconds: float) -> bytes:
    """The first ``seconds`` of ``clip`` as MPEG-TS bytes (x264 zerolatency, a key frame every second)."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(str(clip)) as inp, av.open(buf, "w", format="mpegts") as out:
        st = inp.streams.video[0]
        enc = out.add_stream("libx264", rate=24)
        enc.width, enc.height, enc.pix_fmt = st.codec_context.width, st.codec_context.height, "yuv420p"
        enc.options = {"tune": "zerolatency", "preset": "ultrafast", "g": "24"}
        for i, f in enumerate(inp.decode(st)):
            if f.time >= seconds:
                break
            frame = av.VideoFrame.from_ndarray(f.to_ndarray(format="rgb24"), format="rgb24")
            frame.pts = i
            for p in enc.encode(frame):
                out.mux(p)
        for p in enc.encode():
            out.mux(p)
    return buf.getvalue()


def test_dropped_connection_is_reopened_and_the_gap_recorded(tmp_path):
    """A TCP peer that hangs up after 4 s and comes back 3 s later: the session reconnects (--reconnect), records
    the gap in videos.gap_s, and goes on with the faces after it; a second of the gap has no viewer."""
    import socket
    import threading

    data = _ts_bytes(CLIP, 8.0)
    cut = len(data) // 2 // 188 * 188  # a transport-stream packet boundary
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(2)
    port = srv.getsockname()[1]

    def serve() -> None:
        for part, pause in ((data[:cut], 0.0), (data[cut:], 3.0)):
            conn, _ = srv.accept()
            time.sleep(pause)
            step = 1316
            for i in range(0, len(part), step):  # at about the stream's pace: 8 s for all of it
                conn.sendall(part[i:i + step])
                time.sleep(8.0 * step / len(data))
            conn.close()
        srv.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    out = tmp_path / "out"
    r = subprocess.run([*CLI, "live", f"tcp://127.0.0.1:{port}", "--out", str(out), "--reconnect", "2",
                        "--idle-timeout", "6", "--flush-s", "3", "--no-report"], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    t = _tables(out)
    v = t["videos"].iloc[0]
    assert v["status"] == "ok"
    assert v["gap_s"] > 2.0  # at least one whole second without frames
    au = t["audience"].sort_values("second")
    assert au["second"].tolist() == list(range(len(au)))
    seen = au.loc[au["viewers"] > 0, "second"].to_numpy()
    jumps = np.diff(seen)
    assert jumps.max() >= 2  # a second without frames between the two connections
    assert seen.min() <= 2 and seen.max() >= 7  # faces before and after the gap


def test_stream_end_covers_every_second_its_last_sample_reaches():
    """A stream stopped with its last 5 Hz sample at 7.84 s covers 7.84-8.04 s: the final window and the final
    provisional rows run to second 8, as a batch run's ``audience`` covers ``0 .. ceil(duration_s) - 1``."""
    from fer_pipeline.aggregate import audience, timeline
    from fer_pipeline.config import PipelineConfig
    from fer_pipeline.reid.online import OnlineViewers
    from fer_pipeline.stream.rolling import Rolling
    from fer_pipeline.track import build_tracker
    from fer_pipeline.types import Faces

    cfg = PipelineConfig()
    labels = ("angry", "happy", "neutral")
    rolling = Rolling(build_tracker(cfg.track), labels, cfg, OnlineViewers(None))
    last = 7.84
    for ts in np.arange(0.04, last + 1e-9, 1.0 / cfg.decode.sample_fps):
        rolling.add(Faces.empty(len(labels)), float(ts))
    assert rolling.duration_s == pytest.approx(last + 1.0 / cfg.decode.sample_fps)
    provisional = pd.concat(rolling.provisional(final=True))
    window = rolling.settle(final=True)
    batch = audience(timeline(pd.DataFrame(columns=["timestamp_s"]), labels), labels, rolling.duration_s)
    expected = list(range(math.ceil(rolling.duration_s)))
    assert batch["second"].tolist() == expected == list(range(9))
    assert window.audience["second"].tolist() == expected and (window.audience["viewers"] == 0).all()
    assert provisional["second"].tolist() == expected
