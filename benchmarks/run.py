#!/usr/bin/env python
"""Speed benchmark: our pipeline vs the decode floor vs the `fer` package, on generated real-clip recordings.

For each input (built once from shared/data by benchmarks/inputs.py and cached in benchmarks/_inputs/), each in a
fresh subprocess so that peak RSS is per run:

  ours         fer_pipeline.pipeline.analyze_video(path, out, PipelineConfig(), models) + report.render_all(out),
               default config (sample_fps 5, PyAV, CenterFace, ByteTrack, the shipped emotion model). Wall time is
               the whole process (interpreter start, imports and model load included), like the peer's.
  decode-only  fer_pipeline.decode.iter_batches(path, cfg) with sample_fps=5, batch_size=16, backend=pyav|decord and the
               pipeline's default decode settings (PyAV: chunks decoded in parallel, one thread per core): the
               physical floor of the same sampling; timed around the loop only.
  fer          the `fer` package in benchmarks/.fer-venv (bash benchmarks/setup_fer_peer.sh):
               Video(path).analyze(FER(mtcnn=True), frequency=round(fps/5), display=False, save_video=False),
               whole process, with a timeout (reported as such). By default not run on 720p-10min (see --fer-10min).

Targets checked (PASS/FAIL): 720p single viewer >= 10x real time; 1080p several faces >= 3x real time; >= 10x faster
than fer on every input both ran; peak RSS of 720p-10min within 10% of 720p-1min.

Results go to benchmarks/_results/bench-<time>.json (and --json OUT). Figures are meaningless while other work loads
the CPU: the script measures how busy the machine was just before each run and prints it.
See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import inputs as bench_inputs  # benchmarks/inputs.py, beside this file

RESULTS_DIR = HERE / "_results"
FER_VENV = HERE / ".fer-venv"
ALL_INPUTS = list(bench_inputs.SPECS)
FER_DEFAULT_INPUTS = {"720p-1min", "1080p-group"}
SAMPLE_FPS = 5.0

TARGET_720P_XRT = 10.0
TARGET_1080P_XRT = 3.0
TARGET_SPEEDUP = 10.0
TARGET_RSS_GROWTH = 0.10


# ---------------------------------------------------------------------------------------------------------------------
# processes and load
# ---------------------------------------------------------------------------------------------------------------------

def _cpu_ticks() -> list[int]:
    """The all-CPU line of ``/proc/stat``: clock ticks in user, nice, system, idle, iowait, irq, softirq, steal, ...

    Raises:
        OSError: ``/proc/stat`` cannot be read (not Linux).
    """
    with open("/proc/stat") as fh:
        return [int(x) for x in fh.readline().split()[1:]]


def _cpu_times() -> tuple[int, int]:
    vals = _cpu_ticks()
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals[:8]), idle


def _steal_ticks() -> int:
    """Clock ticks all CPUs of this virtual machine have waited for the hypervisor (``/proc/stat`` steal); -1 when
    unknown."""
    try:
        vals = _cpu_ticks()
    except OSError:
        return -1
    return vals[7] if len(vals) > 7 else -1


def machine_busy(seconds: float = 1.0) -> dict:
    """Share of all cores busy over ``seconds`` (this script is idle meanwhile), and the 1-minute load average."""
    try:
        t1, i1 = _cpu_times()
        time.sleep(seconds)
        t2, i2 = _cpu_times()
        busy = 1.0 - (i2 - i1) / max(1, t2 - t1)
    except OSError:
        busy = float("nan")
    return {"busy_pct": round(100 * busy, 1), "loadavg_1m": round(os.getloadavg()[0], 2)}


def run_child(cmd: list[str], timeout_s: float, cwd: Path | None = None, env: dict | None = None) -> dict:
    """Run ``cmd`` to completion (or kill its process group after ``timeout_s``) and measure it from outside.

    Returns:
        ``rc``, ``wall_s`` (spawn to exit), ``maxrss_mb`` and ``cpu_s`` of that process (``wait4``; threads
        included, and the CPU of the children it waited for, such as the pipeline's decode process; ``maxrss_mb``
        is that process's own peak, so ``_child.py`` reports the decode process's peak separately), ``timed_out``, ``stdout_tail``/``stderr_tail`` and ``json``: the last stdout
        line parsed as JSON (None when it is not).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        steal0 = _steal_ticks()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd, env=env, start_new_session=True)
        state = {"done": False, "timed_out": False}
        lock = threading.Lock()

        def kill() -> None:
            with lock:
                if not state["done"]:
                    state["timed_out"] = True
                    os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        try:
            _, status, ru = os.wait4(proc.pid, 0)
            with lock:
                state["done"] = True
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        steal1 = _steal_ticks()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    parsed = None
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    if lines:
        try:
            parsed = json.loads(lines[-1])
        except json.JSONDecodeError:
            parsed = None
    return {"rc": proc.returncode, "wall_s": round(wall, 3), "maxrss_mb": round(ru.ru_maxrss / 1024.0, 1),
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 3), "timed_out": state["timed_out"],
            # CPU time the hypervisor gave to other machines while this ran, as a share of all cores' time: on a
            # shared virtual machine a few % already slow a run down; figures with high steal are not comparable
            "steal_pct": (round(100.0 * (steal1 - steal0) / os.sysconf("SC_CLK_TCK") / (wall * (os.cpu_count() or 1)),
                                1) if steal0 >= 0 and steal1 >= 0 and wall > 0 else None),
            "stdout_tail": stdout[-2000:], "stderr_tail": stderr[-3000:], "json": parsed}


def _status(r: dict) -> str:
    return "ok" if r["rc"] == 0 else f"FAILED rc={r['rc']}"


def _median_run(runs: list[dict]) -> dict:
    """The run with the median wall time (runs that failed sort last)."""
    ok = sorted((r for r in runs if r["rc"] == 0), key=lambda r: r["wall_s"])
    if not ok:
        return runs[-1]
    return ok[(len(ok) - 1) // 2]


# ---------------------------------------------------------------------------------------------------------------------
# the three measurements
# ---------------------------------------------------------------------------------------------------------------------

def measure_ours(video: Path, name: str, repeat: int, timeout_s: float, keep: bool, model: Path | None,
                 log, overrides: dict | None = None) -> dict:
    env = {**os.environ}
    env.pop("FER_BENCH_MODEL", None)
    env.pop("FER_BENCH_OVERRIDES", None)
    if model is not None:
        env["FER_BENCH_MODEL"] = str(model)
    if overrides:
        env["FER_BENCH_OVERRIDES"] = json.dumps(overrides)
    label = "ours" if not overrides else "ours [" + ",".join(f"{k}={v}" for k, v in overrides.items()) + "]"
    runs = []
    for i in range(repeat):
        out_dir = RESULTS_DIR / "work" / f"{name}-ours-{'v-' if overrides else ''}{i}"
        shutil.rmtree(out_dir, ignore_errors=True)
        load = machine_busy()
        r = run_child([sys.executable, str(HERE / "_child.py"), "ours", str(video), str(out_dir)], timeout_s,
                      env=env)
        r["load_before"] = load
        runs.append(r)
        j = r["json"] or {}
        log(f"  {label:8s} #{i + 1}: {_status(r)} wall {r['wall_s']:.1f} s, "
            f"analyze {j.get('analyze_s', float('nan')):.1f} s, peak RSS {r['maxrss_mb']:.0f} MB"
            f"{' + decode process %.0f MB' % j['decoder_peak_rss_mb'] if j.get('decoder_peak_rss_mb') else ''} "
            f"(machine {load['busy_pct']:.0f}% busy before, steal {r['steal_pct']}% during)")
        if r["rc"] != 0:
            log("    " + r["stderr_tail"].strip().replace("\n", "\n    ")[-1500:])
        if not keep:
            shutil.rmtree(out_dir, ignore_errors=True)
    return {"median": _median_run(runs), "runs": runs}


def measure_decode(video: Path, backend: str, repeat: int, timeout_s: float, log) -> dict:
    runs = []
    for i in range(repeat):
        load = machine_busy(0.5)
        r = run_child([sys.executable, str(HERE / "_child.py"), "decode", str(video), backend], timeout_s)
        r["load_before"] = load
        runs.append(r)
        j = r["json"] or {}
        log(f"  decode {backend:6s} #{i + 1}: {_status(r)} "
            f"loop {j.get('decode_s', float('nan')):.1f} s, {j.get('frames', 0)} frames, "
            f"peak RSS {r['maxrss_mb']:.0f} MB")
        if r["rc"] != 0:
            log("    " + r["stderr_tail"].strip()[-800:])
    best = sorted((r for r in runs if r["rc"] == 0), key=lambda r: r["json"]["decode_s"])
    return {"median": best[(len(best) - 1) // 2] if best else runs[-1], "runs": runs}


def measure_fer(video: Path, name: str, fps: float, repeat: int, timeout_s: float, fer_python: Path,
                save_frames: bool, log) -> dict:
    frequency = max(1, round(fps / SAMPLE_FPS))
    runs = []
    for i in range(repeat):
        work = RESULTS_DIR / "work" / f"{name}-fer-{i}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        cmd = [str(fer_python), str(HERE / "_fer_peer.py"), str(video), "--frequency", str(frequency),
               "--outdir", str(work)]
        if not save_frames:
            cmd.append("--no-save-frames")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        load = machine_busy()
        r = run_child(cmd, timeout_s, cwd=work, env=env)
        r["load_before"] = load
        runs.append(r)
        j = r["json"] or {}
        status = "TIMEOUT" if r["timed_out"] else ("ok" if r["rc"] == 0 else f"FAILED rc={r['rc']}")
        log(f"  fer      #{i + 1}: {status} wall {r['wall_s']:.1f} s (analyze {j.get('analyze_s', float('nan')):.1f}"
            f" s, every {frequency}th frame, {j.get('faces', '?')} faces), peak RSS {r['maxrss_mb']:.0f} MB")
        if r["rc"] != 0 and not r["timed_out"]:
            log("    " + r["stderr_tail"].strip()[-1500:])
        shutil.rmtree(work, ignore_errors=True)
        if r["timed_out"]:
            break  # a second try would time out too
    med = _median_run(runs)
    return {"median": med, "runs": runs, "frequency": frequency, "timeout_s": timeout_s, "save_frames": save_frames}


# ---------------------------------------------------------------------------------------------------------------------
# summary, table, targets
# ---------------------------------------------------------------------------------------------------------------------

def summarize(name: str, meta: dict, ours: dict | None, dec: dict, fer: dict | None, variant: dict | None = None
              ) -> dict:
    label = name if not variant else name + " [" + ",".join(f"{k}={v}" for k, v in variant.items()) + "]"
    s: dict = {"input": label, "base_input": name, "variant": variant or None, "video_s": meta["duration_s"],
               "fps": meta["fps"], "size": f"{meta['width']}x{meta['height']}"}
    if ours is not None:
        m = ours["median"]
        j = m["json"] or {}
        res = j.get("result") or {}
        ok = m["rc"] == 0 and res.get("status") == "ok"
        s["ours_ok"] = ok
        if ok:
            wall = m["wall_s"]
            st = dict(res["stage_s"])
            inner = j["analyze_s"] + j["report_s"]
            accounted = sum(st[k] for k in ("detect", "track", "classify", "aggregate", "write"))
            s.update({
                "ours_wall_s": wall, "ours_xrt": s["video_s"] / wall,
                "ours_inproc_s": inner, "ours_inproc_xrt": s["video_s"] / inner,
                "startup_s": j["import_s"] + j["load_models_s"], "import_s": j["import_s"],
                "load_models_s": j["load_models_s"], "analyze_s": j["analyze_s"], "report_s": j["report_s"],
                "frames_sampled": res["frames_sampled"], "faces_detected": res["faces_detected"],
                "tracks": res["tracks"],
                "frames_per_s": res["frames_sampled"] / wall, "faces_per_s": res["faces_detected"] / wall,
                # the pipeline's process plus its decode process (peaks added: the shared batch slots count twice)
                "ours_rss_mb": m["maxrss_mb"] + (j.get("decoder_peak_rss_mb") or 0.0),
                "ours_cpu_s": m["cpu_s"], "ours_cores": m["cpu_s"] / wall,
                "stage_s": {**st, "decode_wait": j["decode_wait_s"], "thumbnails": j["thumbnails_s"],
                            "hash": j["hash_s"], "report": j["report_s"],
                            "other": j["analyze_s"] - accounted - j["decode_wait_s"] - j["thumbnails_s"]
                            - j["hash_s"]},
                "emotion_model": res.get("emotion_model"), "detector": res.get("detector"),
            })
    for b, d in dec.items():
        m = d["median"]
        if m["rc"] == 0:
            s[f"decode_{b}_s"] = m["json"]["decode_s"]
            s[f"decode_{b}_xrt"] = s["video_s"] / m["json"]["decode_s"]
            s[f"decode_{b}_rss_mb"] = m["maxrss_mb"]
            s[f"decode_{b}_frames"] = m["json"]["frames"]
    if s.get("ours_ok") and "decode_pyav_s" in s:
        s["ours_over_decode"] = s["analyze_s"] / s["decode_pyav_s"]
    if fer is not None:
        m = fer["median"]
        j = m["json"] or {}
        s["fer_frequency"] = fer["frequency"]
        s["fer_status"] = "timeout" if m["timed_out"] else ("ok" if m["rc"] == 0 else f"failed rc={m['rc']}")
        s["fer_wall_s"] = m["wall_s"]
        s["fer_rss_mb"] = m["maxrss_mb"]
        s["fer_faces"] = j.get("faces")
        s["fer_frames_analyzed"] = j.get("frames_analyzed")
        s["fer_setup_s"] = j.get("setup_s")
        s["fer_analyze_s"] = j.get("analyze_s")
        if s.get("ours_ok"):
            s["speedup_vs_fer"] = m["wall_s"] / s["ours_wall_s"]  # a lower bound when fer timed out
    return s


def _f(x, fmt="{:.1f}", none="-") -> str:
    return none if x is None else fmt.format(x)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"
            for r in rows]
    return "\n".join([line, sep, *body])


def render_tables(summary: list[dict]) -> str:
    h1 = ["input", "video s", "ours wall s", "x real time", "frames/s", "faces/s", "decode-only x RT pyav / decord",
          "ours / decode-only", "fer wall s", "speed-up vs fer", "peak RSS MB ours / fer"]
    r1 = []
    for s in summary:
        fer = "-"
        if "fer_wall_s" in s:
            fer = _f(s["fer_wall_s"]) + ("" if s["fer_status"] == "ok" else f" ({s['fer_status']})")
        sp = "-"
        if "speedup_vs_fer" in s:
            sp = (">" if s["fer_status"] == "timeout" else "") + _f(s["speedup_vs_fer"], "{:.1f}x")
            if s["fer_status"] not in ("ok", "timeout"):
                sp = "-"
        r1.append([s["input"], _f(s["video_s"]), _f(s.get("ours_wall_s")), _f(s.get("ours_xrt"), "{:.1f}x"),
                   _f(s.get("frames_per_s")), _f(s.get("faces_per_s")),
                   f"{_f(s.get('decode_pyav_xrt'), '{:.0f}x')} / {_f(s.get('decode_decord_xrt'), '{:.0f}x')}",
                   _f(s.get("ours_over_decode"), "{:.1f}"), fer, sp,
                   f"{_f(s.get('ours_rss_mb'), '{:.0f}')} / {_f(s.get('fer_rss_mb'), '{:.0f}')}"])
    stages = ["decode", "decode_wait", "detect", "track", "classify", "thumbnails", "aggregate", "write", "hash",
              "other", "report"]
    h2 = ["input", "startup s", *[f"{k} s" for k in stages], "analyze s", "CPU s", "CPU cores busy"]
    r2 = []
    for s in summary:
        if not s.get("ours_ok"):
            continue
        st = s["stage_s"]
        r2.append([s["input"], _f(s["startup_s"], "{:.2f}"), *[_f(st.get(k), "{:.2f}") for k in stages],
                   _f(s["analyze_s"], "{:.2f}"), _f(s.get("ours_cpu_s"), "{:.1f}"), _f(s["ours_cores"], "{:.2f}")])
    return _table(h1, r1) + "\n\nours, seconds per stage (median run):\n\n" + (_table(h2, r2) if r2 else "(none)")


def check_targets(summary: list[dict]) -> list[dict]:
    by = {s["input"]: s for s in summary if not s.get("variant")}  # targets: default configuration only
    checks = []

    def add(name: str, verdict: str, detail: str) -> None:
        checks.append({"target": name, "verdict": verdict, "detail": detail})

    x720 = [(n, s["ours_xrt"]) for n, s in by.items() if n.startswith("720p") and s.get("ours_ok")]
    if x720:
        worst = min(x720, key=lambda t: t[1])
        add(f"720p single viewer >= {TARGET_720P_XRT:g}x real time",
            "PASS" if worst[1] >= TARGET_720P_XRT else "FAIL",
            ", ".join(f"{n}: {x:.1f}x" for n, x in x720) + " (whole process)")
    else:
        add(f"720p single viewer >= {TARGET_720P_XRT:g}x real time", "n/a", "no 720p input measured")

    g = by.get("1080p-group")
    if g and g.get("ours_ok"):
        add(f"1080p several faces >= {TARGET_1080P_XRT:g}x real time",
            "PASS" if g["ours_xrt"] >= TARGET_1080P_XRT else "FAIL",
            f"1080p-group: {g['ours_xrt']:.1f}x ({g['tracks']} tracks, {g['faces_detected']} faces; whole process)")
    else:
        add(f"1080p several faces >= {TARGET_1080P_XRT:g}x real time", "n/a", "1080p-group not measured")

    sp = [(n, s) for n, s in by.items() if "speedup_vs_fer" in s and s["fer_status"] in ("ok", "timeout")]
    if sp:
        parts, verdicts = [], []
        for n, s in sp:
            x = s["speedup_vs_fer"]
            if s["fer_status"] == "ok":
                verdicts.append("PASS" if x >= TARGET_SPEEDUP else "FAIL")
                parts.append(f"{n}: {x:.1f}x")
            else:  # fer timed out: x is a lower bound
                verdicts.append("PASS" if x >= TARGET_SPEEDUP else "n/a")
                parts.append(f"{n}: > {x:.1f}x (fer timed out)")
        verdict = "FAIL" if "FAIL" in verdicts else ("PASS" if "PASS" in verdicts else "n/a")
        add(f">= {TARGET_SPEEDUP:g}x faster than fer", verdict, ", ".join(parts) + " (whole process each)")
    else:
        add(f">= {TARGET_SPEEDUP:g}x faster than fer", "n/a", "fer not run (--skip-fer, or no successful run)")

    a, b = by.get("720p-1min"), by.get("720p-10min")
    if a and b and a.get("ours_ok") and b.get("ours_ok"):
        growth = b["ours_rss_mb"] / a["ours_rss_mb"] - 1.0
        add(f"peak RSS 10 min within {TARGET_RSS_GROWTH:.0%} of 1 min",
            "PASS" if growth <= TARGET_RSS_GROWTH else "FAIL",
            f"{b['ours_rss_mb']:.0f} MB vs {a['ours_rss_mb']:.0f} MB ({growth:+.1%})")
    else:
        add(f"peak RSS 10 min within {TARGET_RSS_GROWTH:.0%} of 1 min", "n/a", "needs 720p-1min and 720p-10min")
    return checks


# ---------------------------------------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _git_head() -> str | None:
    """Commit of the work tree, read from .git (no git process)."""
    try:
        head = (REPO / ".git" / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            p = REPO / ".git" / ref
            if p.is_file():
                return p.read_text().strip()
            packed = REPO / ".git" / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
            return None
        return head
    except OSError:
        return None


def _versions(fer_python: Path | None) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("fer-pipeline", "onnxruntime", "av", "decord", "numpy", "opencv-python", "trackers", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    if fer_python is not None and fer_python.exists():
        try:
            out["peer"] = subprocess.run(
                [str(fer_python), "-c", ("from importlib.metadata import version as v;"
                 "print(' '.join(p + '=' + v(p) for p in ('fer','tensorflow-cpu','torch','facenet-pytorch',"
                 "'opencv-contrib-python')))")], capture_output=True, text=True, timeout=60,
                check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out["peer"] = None
    return out


# ---------------------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", nargs="+", default=ALL_INPUTS, choices=ALL_INPUTS, metavar="NAME",
                    help=f"inputs to measure (default: all): {', '.join(ALL_INPUTS)}")
    ap.add_argument("--skip-fer", action="store_true", help="do not run the fer peer")
    ap.add_argument("--fer-10min", action="store_true",
                    help="also run fer on 720p-10min (can take longer than the video; off by default)")
    ap.add_argument("--fer-timeout", type=float, default=1800.0, metavar="S",
                    help="kill a fer run after S seconds and report a timeout (default: %(default)s)")
    ap.add_argument("--fer-no-save-frames", action="store_true",
                    help="run fer with save_frames=False (its default, used here otherwise, writes an annotated JPEG "
                         "per analysed frame and zips them)")
    ap.add_argument("--fer-python", type=Path, default=FER_VENV / "bin" / "python",
                    help="python of the peer venv (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="runs per measurement; the median (by wall time) is reported (default: %(default)s; fer is "
                         "run min(N, 2) times)")
    ap.add_argument("--skip-decode", action="store_true", help="skip the decode-only floor")
    ap.add_argument("--timeout", type=float, default=3600.0, metavar="S",
                    help="timeout of each of our own runs (default: %(default)s)")
    ap.add_argument("--data", type=Path, default=bench_inputs.DEFAULT_DATA,
                    help="shared data folder with videos/ and images/ (default: %(default)s)")
    ap.add_argument("--model", type=Path, default=None,
                    help="emotion model (.onnx with its card) instead of the config default models/emotion-*.onnx")
    ap.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                    help="also measure ours with these PipelineConfig overrides (e.g. decode.backend=pyav), as extra "
                         "rows that the targets ignore; repeatable")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the results JSON here")
    ap.add_argument("--keep-output", action="store_true",
                    help="keep our pipeline's output folders under benchmarks/_results/work/")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    from fer_pipeline.config import PipelineConfig
    from fer_pipeline.decode import probe

    variants = []
    for v in args.variant:
        try:
            variants.append(dict(kv.split("=", 1) for kv in v.split(",")))
            PipelineConfig.load(overrides=variants[-1])
        except ValueError as e:  # malformed KEY=VALUE or a pydantic validation error
            ap.error(f"--variant {v!r}: {e}")
    cfg = PipelineConfig.load(overrides={"classify.model": args.model.resolve()}) if args.model else PipelineConfig()
    if not Path(cfg.classify.model).is_file():
        log(f"error: the emotion model {cfg.classify.model} does not exist (train and export it first: make train, "
            f"or pass --model)")
        return 2
    fer_python = None if args.skip_fer else args.fer_python
    if fer_python is not None and not fer_python.exists():
        log(f"warning: {fer_python} not found: the fer peer is skipped (bash benchmarks/setup_fer_peer.sh)")
        fer_python = None

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    log(f"fer-pipeline speed benchmark, {started}, {os.cpu_count()} CPUs ({_cpu_model()})")
    idle = machine_busy(2.0)
    log(f"machine before the runs: {idle['busy_pct']:.0f}% of the CPUs busy, load average {idle['loadavg_1m']}")
    if idle["busy_pct"] > 15:
        log("WARNING: other work is using the CPU; the figures below will be slower than on an idle machine")

    videos = {name: bench_inputs.ensure_input(name, args.data, log=log) for name in args.inputs}
    summary, raw = [], {}
    for name in args.inputs:
        path = videos[name]
        m = probe(path)
        meta = {"duration_s": m.duration_s, "fps": m.fps, "width": m.width, "height": m.height, "path": str(path)}
        log(f"\n{name}: {path.name} ({m.width}x{m.height}, {m.fps:.3f} fps, {m.duration_s:.1f} s)")
        ours = measure_ours(path, name, args.repeat, args.timeout, args.keep_output,
                            args.model.resolve() if args.model else None, log)
        dec = {} if args.skip_decode else {b: measure_decode(path, b, args.repeat, args.timeout, log)
                                           for b in ("pyav", "decord")}
        fer = None
        if fer_python is not None and (name in FER_DEFAULT_INPUTS or (name == "720p-10min" and args.fer_10min)):
            fer = measure_fer(path, name, m.fps, min(args.repeat, 2), args.fer_timeout, fer_python,
                              not args.fer_no_save_frames, log)
        elif fer_python is not None:
            log("  fer      skipped on this input (pass --fer-10min to include it)")
        summary.append(summarize(name, meta, ours, dec, fer))
        raw[name] = {"meta": meta, "ours": ours, "decode": dec, "fer": fer}
        for ov in variants:
            vo = measure_ours(path, name, args.repeat, args.timeout, args.keep_output,
                              args.model.resolve() if args.model else None, log, ov)
            row = summarize(name, meta, vo, dec, None, ov)
            summary.append(row)
            raw[row["input"]] = {"meta": meta, "ours": vo, "variant": ov}

    tables = render_tables(summary)
    checks = check_targets(summary)
    loads = [r["load_before"]["busy_pct"] for v in raw.values() for k in ("ours", "fer")
             if v.get(k) for r in v[k]["runs"]]
    log("\n" + tables + "\n")
    log("targets:")
    for c in checks:
        log(f"  {c['verdict']:4s}  {c['target']}: {c['detail']}")
    steals = [r["steal_pct"] for v in raw.values() for k in ("ours", "fer", "decode")
              if isinstance(v.get(k), dict) for r in v[k].get("runs", []) if r.get("steal_pct") is not None]
    if loads:
        log(f"\nload: CPUs {min(loads):.0f}-{max(loads):.0f}% busy in the second before each run "
            f"(0% = idle machine); {os.cpu_count()} CPUs")
    if steals:
        log(f"steal (CPU time the hypervisor gave to other machines during a run, % of all cores): "
            f"{min(steals):.1f}-{max(steals):.1f}%")

    doc = {
        "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "cpu_model": _cpu_model(), "platform": platform.platform(),
                    "python": platform.python_version(), "idle_before": idle},
        "git_head": _git_head(), "versions": _versions(fer_python),
        "emotion_model": str(cfg.classify.model), "inputs_version": bench_inputs.INPUTS_VERSION, "sample_fps": SAMPLE_FPS,
        "summary": summary, "targets": checks, "table": tables, "raw": raw,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    text = json.dumps(doc, indent=2, default=str)
    out.write_text(text)
    log(f"\nresults: {out}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
        log(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
