"""Soak test of the CLI's crash safety: `fer-pipeline analyze` killed at random moments, then resumed.

Builds a mixed input folder (the good clips of shared/data/videos plus bad files made on the spot: a text file named
notes.mp4, an empty empty.mp4, WolfgangLanger_Pexels.mp4 cut to its first 70% of bytes, and a remux of
single_face.mp4 with a 90-degree display rotation), analyses it once cleanly into REF, then for each round:

1. starts `fer-pipeline analyze INPUT --out OUT --no-report --force` into one shared OUT (`--force` so that every
   round really re-analyses and re-commits over earlier results instead of skipping them; `--no-force` drops it),
   waits a random delay and sends SIGKILL to the CLI or SIGINT to its process group (chosen at random);
2. checks that it stopped within 60 s with an expected exit code (SIGKILL: -9; SIGINT: 130; 0/1 only if the run
   had finished, i.e. printed its summary), that no process descending from it (recorded just before the signal,
   or carrying this round's environment token) whose command line mentions fer_pipeline/fer-pipeline/uvicorn is
   alive 3 s after it exited, and that every table under OUT still reads with `pandas.read_parquet`;
3. re-runs the analyze command (without --force) to completion into OUT and compares faces, timeline, audience and
   videos with REF (volatile columns processing_s and created_at dropped, rows sorted by their keys).

Run (a few minutes on 2 cores; each analyze of the folder takes 10-20 s):

    .venv/bin/python benchmarks/soak.py --rounds 3
    .venv/bin/python benchmarks/soak.py --rounds 20 --seed 7 --work /tmp/soak --json /tmp/soak.json

Exit code 0 only if every round passed. Logs of every CLI run are kept in WORK/logs/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
TABLES = ("faces", "timeline", "audience", "videos")
GOOD = ("WolfgangLanger_Pexels.mp4", "face_noface.mov", "single_face.mp4")
VOLATILE = {"videos": ["processing_s", "created_at"]}  # differ on every run by nature
KEYS = ("video_id", "frame_index", "track_id", "second")
MARKS = ("fer_pipeline", "fer-pipeline", "uvicorn")
TOKEN_VAR = "FER_SOAK_TOKEN"


def build_inputs(shared: Path, inp: Path) -> None:
    """The mixed input folder: good clips copied, bad files and a rotated clip made here."""
    import av

    inp.mkdir(parents=True, exist_ok=True)
    src = shared / "videos"
    for name in GOOD:
        shutil.copyfile(src / name, inp / name)
    (inp / "notes.mp4").write_text("not a video, just notes\n")
    (inp / "empty.mp4").write_bytes(b"")
    data = (src / "WolfgangLanger_Pexels.mp4").read_bytes()
    (inp / "truncated.mp4").write_bytes(data[: int(len(data) * 0.7)])
    with av.open(str(src / "single_face.mp4")) as fin, av.open(str(inp / "rotated_phone.mp4"), "w") as fout:
        ist = fin.streams.video[0]
        ost = fout.add_stream_from_template(ist)
        if hasattr(ost, "set_display_rotation"):  # PyAV >= 14 (display matrix side data)
            ost.set_display_rotation(90)
        for pkt in fin.demux(ist):
            if pkt.dts is not None:  # not the demuxer's flush packet
                pkt.stream = ost
                fout.mux(pkt)


def start(cmd: list[str], log: Path, token: str) -> subprocess.Popen:
    with open(log, "wb") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, TOKEN_VAR: token})


def run_to_end(cmd: list[str], log: Path, token: str, fail: list[str], timeout: float = 900) -> int:
    p = start(cmd, log, token)
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        fail.append(f"{log.stem}: did not finish within {timeout:.0f} s")
        return p.wait()


def marked(cmdline) -> bool:
    return any(m in " ".join(cmdline or ()) for m in MARKS)  # the decode process and Prefect server mention these


def descendants(pid: int) -> list[tuple[int, float, str]]:
    out = []
    try:
        for p in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if marked(p.cmdline()):
                    out.append((p.pid, p.create_time(), " ".join(p.cmdline())[:120]))
    except psutil.Error:
        pass
    return out


def survivors(recorded: list[tuple[int, float, str]], token: str) -> list[str]:
    """Recorded descendants still alive (same pid and start time, not a zombie), plus any live process carrying the
    round's environment token (children started after the snapshot)."""
    alive = {}
    for pid, ct, cmd in recorded:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            if abs(p.create_time() - ct) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
                alive[pid] = cmd
    for p in psutil.process_iter(["pid", "environ", "cmdline", "status"]):
        env = p.info.get("environ") or {}
        if env.get(TOKEN_VAR) == token and p.info["status"] != psutil.STATUS_ZOMBIE and marked(p.info["cmdline"]):
            alive.setdefault(p.pid, " ".join(p.info["cmdline"])[:120])
    return [f"pid {pid}: {cmd}" for pid, cmd in alive.items()]


def read_all(out: Path) -> tuple[dict[str, pd.DataFrame], list[str]]:
    tables, errors = {}, []
    for t in TABLES:
        if (out / t).exists():
            try:
                tables[t] = pd.read_parquet(out / t)
            except Exception as e:  # noqa: BLE001 - any read error is the finding
                errors.append(f"{t} unreadable: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
    return tables, errors


def normalise(df: pd.DataFrame, table: str) -> pd.DataFrame:
    df = df.drop(columns=[c for c in VOLATILE.get(table, []) if c in df.columns])
    if "video_id" in df.columns:
        df["video_id"] = df["video_id"].astype(str)
    keys = [k for k in KEYS if k in df.columns]
    return df.sort_values(keys, kind="stable").reset_index(drop=True)[sorted(df.columns)]


def first_diff(a: pd.DataFrame, b: pd.DataFrame) -> str:
    if list(a.columns) != list(b.columns):
        return f"columns {list(a.columns)} vs {list(b.columns)}"
    if len(a) != len(b):
        ca, cb = a["video_id"].value_counts(), b["video_id"].value_counts()
        d = pd.concat([ca.rename("out"), cb.rename("ref")], axis=1).fillna(0)
        return f"{len(a)} vs {len(b)} rows; per video_id where they differ:\n{d[d.out != d.ref]}"
    ne = ~((a == b) | (a.isna() & b.isna()))
    rows = ne.any(axis=1)
    idx = rows[rows].index[:3]
    cols = [k for k in KEYS if k in a.columns] + [c for c in ne.columns[ne.loc[idx].any(axis=0)] if c not in KEYS]
    return f"{int(rows.sum())} rows differ; first ones (OUT then REF):\n{a.loc[idx, cols]}\n{b.loc[idx, cols]}"


def compare(out: Path, ref: dict[str, pd.DataFrame]) -> list[str]:
    got, problems = read_all(out)
    for t in TABLES:
        if t not in got or t not in ref:
            if (t in got) != (t in ref) and (out / t).exists() == (t in got):  # unreadable: already reported
                problems.append(f"{t}: present in {'OUT' if t in got else 'REF'} only")
            continue
        a, b = normalise(got[t], t), normalise(ref[t], t)
        try:
            pd.testing.assert_frame_equal(a, b, check_dtype=False, check_categorical=False)
        except AssertionError:
            problems.append(f"{t} differs from REF: {first_diff(a, b)}")
    return problems


def finished(log: Path) -> bool:  # the run printed its summary's last line: it ended on its own
    return "tables: " in log.read_text(errors="replace")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10, help="interrupted rounds (default 10)")
    ap.add_argument("--seed", type=int, default=None, help="random seed for delays and signals (default: random)")
    ap.add_argument("--max-delay", type=float, default=8.0, help="signal after a delay in [0.5, MAX] s (default 8)")
    ap.add_argument("--work", type=Path, default=None, help="work folder to keep (its input/ ref/ out/ logs/ are "
                    "recreated; default: a temporary one, removed if every round passed)")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data",
                    help="shared data folder holding videos/ (default: ../shared/data from the repo root)")
    ap.add_argument("--no-force", action="store_true",
                    help="run the interrupted rounds without --force (rounds after the first then mostly skip)")
    ap.add_argument("--json", type=Path, default=None, help="write the per-round records to this JSON file")
    args = ap.parse_args()

    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="fer-soak-"))
    inp, ref_dir, out, logs = work / "input", work / "ref", work / "out", work / "logs"
    for d in (inp, ref_dir, out, logs):  # only this script's own subfolders of a reused --work
        shutil.rmtree(d, ignore_errors=True)
    logs.mkdir(parents=True)
    build_inputs(args.shared, inp)
    script = Path(sys.executable).with_name("fer-pipeline")  # the console script, else the module (has main())
    base = ([str(script)] if script.is_file() else [sys.executable, "-m", "fer_pipeline.cli"]) + ["analyze", str(inp),
                                                                                                   "--out"]
    print(f"soak: seed {seed}, work {work}, command {' '.join(base)} OUT --no-report", flush=True)

    t0 = time.monotonic()
    errs: list[str] = []
    ref_rc = run_to_end(base + [str(ref_dir), "--no-report"], logs / "ref.log", uuid.uuid4().hex, errs)
    ref, errs = read_all(ref_dir) if not errs else ({}, errs)
    print(f"reference: exit {ref_rc} in {time.monotonic() - t0:.1f} s, "
          + ", ".join(f"{t} {len(df)} rows" for t, df in ref.items()), flush=True)
    if errs or ref_rc not in (0, 1) or "videos" not in ref:
        print(f"FAIL: the reference run did not produce readable tables: {errs or ref_rc}")
        return 1

    records = []
    for rnd in range(1, args.rounds + 1):
        sig = rng.choice(["SIGKILL", "SIGINT"])
        delay = rng.uniform(0.5, args.max_delay)
        token = uuid.uuid4().hex
        rec = {"round": rnd, "signal": sig, "delay_s": round(delay, 2), "failures": []}
        fail = rec["failures"]
        log = logs / f"round-{rnd}-kill.log"
        p = start(base + [str(out), "--no-report"] + ([] if args.no_force else ["--force"]), log, token)
        time.sleep(delay)  # the CLI may have finished by then: it is still a zombie, safe to signal
        kids = descendants(p.pid)
        t_sig = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGKILL) if sig == "SIGKILL" else os.killpg(p.pid, signal.SIGINT)
        try:
            rc = p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            fail.append("did not stop within 60 s")
            os.killpg(p.pid, signal.SIGKILL)
            rc = p.wait()
        rec.update(exit=rc, stopped_s=round(time.monotonic() - t_sig, 2), descendants=len(kids))
        if rc != (-signal.SIGKILL if sig == "SIGKILL" else 130) and not (rc in (0, 1) and finished(log)):
            fail.append(f"exit {rc} after {sig}" + (" without having finished" if rc in (0, 1) else ""))
        time.sleep(3)
        fail += [f"still alive 3 s after the CLI: {s}" for s in survivors(kids, token)]
        fail += read_all(out)[1]
        t1 = time.monotonic()
        rrc = run_to_end(base + [str(out), "--no-report"], logs / f"round-{rnd}-rerun.log", token, fail)
        rec.update(rerun_exit=rrc, rerun_s=round(time.monotonic() - t1, 1))
        if rrc != ref_rc:
            fail.append(f"completing re-run exited {rrc}, the reference {ref_rc}")
        diffs = compare(out, ref)
        rec["equal"] = not diffs
        fail += diffs
        records.append(rec)
        print(f"round {rnd:3d}  {sig:7s}  delay {delay:5.2f} s  exit {rc:4d}  stopped in {rec['stopped_s']:5.2f} s"
              f"  tables equal {'yes' if not diffs else 'no'}  re-run {rrc} in {rec['rerun_s']:.1f} s"
              f"  {'ok' if not fail else 'FAIL'}", flush=True)
        for f in fail:
            print(f"    FAILURE (round {rnd}, {sig}): {f}", flush=True)

    failed = [r["round"] for r in records if r["failures"]]
    if args.json:
        args.json.write_text(json.dumps({"seed": seed, "work": str(work), "ref_exit": ref_rc, "rounds": records},
                                        indent=1))
    print(f"soak: {len(records) - len(failed)} of {len(records)} rounds passed"
          + (f"; failed rounds: {failed}" if failed else "") + f" (seed {seed}, {time.monotonic() - t0:.0f} s)")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True) if not failed else print(f"soak: work folder kept: {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
