"""What temporal smoothing and a per-respondent baseline do to the study figures, measured on the shared clips.

    .venv/bin/python benchmarks/study_smoothing.py [--out DIR] [--json] [--fps 5,10] [--reanalyse]

The shared clips (``shared/data/videos``: ``WolfgangLanger_Pexels.mp4``, ``single_face.mp4``, ``face_noface.mov``,
``noface_face.mov``; ``--shared DIR`` for another copy of ``shared/data``) are analysed with the default settings at
each sample rate of ``--fps`` (the default 5 Hz and 10 Hz) into ``OUT/fps<rate>/`` (``OUT`` defaults to
``benchmarks/_results/study_smoothing``, git-ignored). A clip already analysed there with the same settings is read
back without loading any model; ``--reanalyse`` analyses every clip again.

For each smoothing sigma of 0, 0.1, 0.2, 0.3, 0.5, 0.8 and 1.2 s (``fer_pipeline.study.timing.smooth_probs``, the
smoothing behind ``study.smoothing_s``) and each clip it measures, on the clip's respondent over the whole recording (recording
seconds, as ``respondent_seconds`` with offset 0):

* ``flip``: sample-level flip rate, the share of consecutive samples of a track (all tracks of the clip) whose argmax
  emotion differs;
* ``jitter``: second-level jitter, the share of consecutive seconds (both with a face) whose dominant emotion differs;
* ``blips``: isolated flips, seconds whose dominant emotion differs from both neighbours while the neighbours agree
  (one-second blips), as a count over the clip;
* headline figures: mean valence, mean expressiveness, share of seconds happy-dominant;
* WolfgangLanger only: ``onset``, the first second whose dominant emotion is happy and stays happy for >= 3 seconds,
  and ``contrast``, mean valence of seconds >= 12 minus that of seconds < 8 (the crying-to-laughing change the
  smoothing must not flatten).

The rule that picks a smoothing default (printed as ``recommended``). A sigma is admissible when, at every rate,
the WolfgangLanger onset stays within 1 s of the unsmoothed one, its contrast keeps >= 95% of the unsmoothed one,
and no second of any clip changes its dominant emotion except a one-second blip of the unsmoothed figures being
removed (the clips' changes are real: crying to laughing, neutral to smile, ``shared/data/SOURCES.md``; erasing or
moving one is the damage smoothing must not do). Among the admissible sigmas that remove a one-second blip or a
second-level flip, the largest; when none does (no admissible sigma changes any second), the smallest admissible
sigma that reaches 90% of the largest cut of sample-level flips any admissible sigma achieves, at every rate (more
smoothing past that point only blurs); 0 when no sigma cuts them by at least a third.

Then, for the baselines ``none``, ``lead_in`` and ``resting`` (``fer_pipeline.study.baseline``, resting share 0.25)
with a stimulus offset of 3 s on WolfgangLanger (lead-in = its first 3 s) and 1 s on the other clips, with and
without the recommended smoothing: the baseline's valence and expressiveness and the headline figures over the
stimulus window, raw and as deltas (figure minus baseline). ``lead_in`` is NaN where no face is seen before the
offset. Timings: the clips analyse in a few seconds each; the figures take well under a second once analysed.

``--json`` prints the figures as JSON instead of the tables; ``OUT/study_smoothing.json`` is written either way.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "_results" / "study_smoothing"
DEFAULT_SHARED = ROOT.parent / "shared" / "data"
WOLFGANG = "WolfgangLanger_Pexels.mp4"
CLIPS = (WOLFGANG, "single_face.mp4", "face_noface.mov", "noface_face.mov")
BASELINE_OFFSET_S = {WOLFGANG: 3.0}  # the others: 1 s
OTHER_OFFSET_S = 1.0
SIGMAS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2)
SMILE = "happy"
ONSET_RUN = 3           # seconds the happy run must last
CONTRAST_AFTER = 12     # seconds >= this ...
CONTRAST_BEFORE = 8     # ... minus seconds < this
ONSET_TOLERANCE_S = 1
CONTRAST_KEEP = 0.95
MIN_FLIP_CUT = 1 / 3    # share of the sample-level flips a recommended sigma must at least remove
KNEE = 0.9              # share of the best admissible sample-flip cut the recommended sigma must reach


def _config(fps: float):
    from fer_pipeline.config import PipelineConfig

    return PipelineConfig() if fps == PipelineConfig().decode.sample_fps else \
        PipelineConfig.load(None, {"decode.sample_fps": fps})


def _cached(out: Path, clips: list[Path], cfg) -> dict[str, dict] | None:
    """``{clip name: videos row}`` when every clip has an ``ok`` row analysed with ``cfg``'s settings in ``out``."""
    from fer_pipeline.store import read_table

    try:
        videos = read_table(out, "videos")
    except Exception:  # noqa: BLE001  (no or damaged cache: analyse again)
        return None
    if videos.empty:
        return None
    want = cfg.fingerprint()
    rows = {}
    for clip in clips:
        mine = videos.loc[(videos["path"] == str(clip)) & (videos["status"] == "ok")]
        for _, r in mine.iterrows():
            try:
                same = json.loads(r["settings"] or "{}").get("config") == want
            except ValueError:
                same = False
            if same:
                rows[clip.name] = r.to_dict()
        if clip.name not in rows:
            return None
    return rows


def analysed(out: Path, clips: list[Path], fps: float, reanalyse: bool, log) -> tuple[dict, tuple, float]:
    """Analyse (or read back) the clips at ``fps``: ``({clip: {"faces": DataFrame, "duration_s": float}}, labels,
    seconds spent analysing)``."""
    from fer_pipeline.store import read_parts, read_table

    cfg = _config(fps)
    rows = None if reanalyse else _cached(out, clips, cfg)
    spent = 0.0
    if rows is None:
        from fer_pipeline.models import Models
        from fer_pipeline.pipeline import analyze_video

        t0 = time.perf_counter()
        models = Models.load(cfg)
        rows = {}
        for clip in clips:
            log(f"analysing {clip.name} at {fps:g} Hz into {out}")
            r = analyze_video(str(clip), str(out), cfg, models=models, force=reanalyse)
            if r["status"] not in ("ok", "skipped"):
                raise SystemExit(f"{clip}: analysis failed: {r.get('error')}")
            rows[clip.name] = r
        spent = time.perf_counter() - t0
        videos = read_table(out, "videos").set_index("video_id")
        for name, r in rows.items():
            rows[name] = {**videos.loc[r["video_id"]].to_dict(), "video_id": r["video_id"]}
    labels = None
    data = {}
    for name, r in rows.items():
        faces = read_parts(out / "faces", r["video_id"])
        data[name] = {"faces": faces, "duration_s": float(r["duration_s"]), "video_id": r["video_id"]}
        model_labels = tuple(c[2:] for c in faces.columns if c.startswith("p_"))
        labels = labels or model_labels
    return data, labels, spent


# --------------------------------------------------------------------------------------------------- measures


def sample_flips(faces: pd.DataFrame, labels) -> tuple[int, int]:
    """``(flips, pairs)``: consecutive samples of a track (time order) whose argmax emotion differs."""
    from fer_pipeline.aggregate import prob_columns

    if faces.empty:
        return 0, 0
    p = faces[prob_columns(labels)].to_numpy(np.float64)
    arg = p.argmax(1)
    t = faces["timestamp_s"].to_numpy(np.float64)
    flips = pairs = 0
    for idx in faces.groupby("track_id", sort=False).indices.values():
        a = arg[idx[np.argsort(t[idx], kind="stable")]]
        flips += int((a[1:] != a[:-1]).sum())
        pairs += max(len(a) - 1, 0)
    return flips, pairs


def second_flips(rows: pd.DataFrame) -> dict:
    """Second-level jitter and isolated one-second blips of a per-second table (``stimulus_second``, ``emotion``)."""
    dom = dict(zip(rows["stimulus_second"].astype(int), rows["emotion"]))
    pairs = [(s, s + 1) for s in dom if s + 1 in dom]
    changes = sum(dom[a] != dom[b] for a, b in pairs)
    triples = [s for s in dom if s - 1 in dom and s + 1 in dom]
    blips = sum(dom[s - 1] == dom[s + 1] != dom[s] for s in triples)
    return {"second_pairs": len(pairs), "second_changes": int(changes), "jitter": changes / len(pairs)
            if pairs else float("nan"), "triples": len(triples), "blips": int(blips)}


def changed_seconds(rows: pd.DataFrame, raw: pd.DataFrame) -> tuple[int, int]:
    """``(changed, blips_removed)``: seconds (present in both) whose dominant emotion differs from the unsmoothed
    table's, and how many of those were one-second blips there (a blip changed to its neighbours' emotion)."""
    dom = dict(zip(rows["stimulus_second"].astype(int), rows["emotion"]))
    ref = dict(zip(raw["stimulus_second"].astype(int), raw["emotion"]))
    changed = [s for s in dom if s in ref and dom[s] != ref[s]]
    removed = [s for s in changed if ref.get(s - 1) == ref.get(s + 1) == dom[s] and s - 1 in ref and s + 1 in ref]
    return len(changed), len(removed)


def onset(rows: pd.DataFrame, run: int = ONSET_RUN) -> int | None:
    """First second whose dominant emotion is happy and stays happy for ``run`` consecutive seconds."""
    dom = dict(zip(rows["stimulus_second"].astype(int), rows["emotion"]))
    for s in sorted(dom):
        if all(dom.get(s + k) == SMILE for k in range(run)):
            return int(s)
    return None


def headline(rows: pd.DataFrame) -> dict:
    if rows.empty:
        return {"seconds": 0, "mean_valence": float("nan"), "mean_expressiveness": float("nan"),
                "happy_share": float("nan")}
    return {"seconds": len(rows), "mean_valence": float(rows["valence"].mean()),
            "mean_expressiveness": float(rows["expressiveness"].mean()),
            "happy_share": float((rows["emotion"] == SMILE).mean())}


def smoothing_figures(clip: str, faces: pd.DataFrame, duration_s: float, labels, sigma: float) -> dict:
    from fer_pipeline.study.timing import respondent_seconds, smooth_probs

    flips, pairs = sample_flips(smooth_probs(faces, labels, sigma), labels)
    rows, _, _ = respondent_seconds(faces, labels, 0.0, duration_s, sigma)
    raw, _, _ = respondent_seconds(faces, labels, 0.0, duration_s, 0.0)
    changed, removed = changed_seconds(rows, raw)
    out = {"clip": clip, "sigma_s": sigma, "samples": len(faces), "sample_pairs": pairs, "sample_flips": flips,
           "flip": flips / pairs if pairs else float("nan"), **second_flips(rows), "changed_seconds": changed,
           "blips_removed": removed, **headline(rows)}
    if clip == WOLFGANG:
        sec = rows["stimulus_second"].to_numpy()
        v = rows["valence"].to_numpy()
        out["onset"] = onset(rows)
        out["contrast"] = float(v[sec >= CONTRAST_AFTER].mean() - v[sec < CONTRAST_BEFORE].mean())
    return out


def resting_seconds(samples: pd.DataFrame, labels, share: float = 0.25) -> tuple[list[int], float, float]:
    """The recording seconds the ``resting`` baseline averages (as ``baseline_probs`` picks them: the least
    expressive ``share`` of the respondent's seconds, at least one) and the range of their expressiveness."""
    from fer_pipeline.aggregate import expressiveness, prob_columns

    if samples.empty:
        return [], float("nan"), float("nan")
    sec = np.floor(samples["timestamp_s"].to_numpy(np.float64)).astype(np.int64)
    per_sec = pd.DataFrame(samples[prob_columns(labels)].to_numpy(np.float64)).groupby(sec).mean()
    expr = expressiveness(per_sec.to_numpy(), labels)
    calm = np.argsort(expr, kind="stable")[:max(1, math.ceil(share * len(per_sec)))]
    return [int(per_sec.index[i]) for i in calm], float(expr[calm].min()), float(expr[calm].max())


def baseline_figures_of(clip: str, faces: pd.DataFrame, duration_s: float, labels, sigma: float) -> list[dict]:
    from fer_pipeline.study.baseline import METHODS, baseline_figures, baseline_probs
    from fer_pipeline.study.timing import respondent_seconds

    offset = BASELINE_OFFSET_S.get(clip, OTHER_OFFSET_S)
    rows, samples, _ = respondent_seconds(faces, labels, offset, duration_s - offset, sigma)
    head = headline(rows)
    out = []
    for method in METHODS:
        b_val, b_expr = baseline_figures(baseline_probs(samples, labels, method, offset, 0.25), labels)
        lead = samples.loc[samples["timestamp_s"] < offset] if not samples.empty else samples
        calm, lo, hi = resting_seconds(samples, labels) if method == "resting" else ([], float("nan"), float("nan"))
        out.append({"clip": clip, "sigma_s": sigma, "offset_s": offset, "method": method,
                    "lead_in_samples": len(lead), "resting_seconds": calm, "resting_expr_min": lo,
                    "resting_expr_max": hi, "baseline_valence": b_val, "baseline_expressiveness": b_expr,
                    **head, "delta_valence": head["mean_valence"] - b_val,
                    "delta_expressiveness": head["mean_expressiveness"] - b_expr})
    return out


def recommend(smoothing: dict[str, list[dict]]) -> tuple[float, dict]:
    """The rule of the module docstring; returns ``(sigma, {sigma: why it is not admissible, or "admissible"})``."""
    verdict, gain = {}, {}
    for sigma in SIGMAS:
        why, fewer_second_flips, cuts = [], True, []
        for fps, rows in smoothing.items():
            w = {r["sigma_s"]: r for r in rows if r["clip"] == WOLFGANG}
            ref, cur = w[0.0], w[sigma]
            if ref["onset"] is None or cur["onset"] is None or abs(cur["onset"] - ref["onset"]) > ONSET_TOLERANCE_S:
                why.append(f"{fps}: onset {ref['onset']} -> {cur['onset']}")
            if cur["contrast"] < CONTRAST_KEEP * ref["contrast"]:
                why.append(f"{fps}: contrast {cur['contrast'] / ref['contrast']:.1%} of raw")
            mine = [r for r in rows if r["sigma_s"] == sigma]
            bad = sum(r["changed_seconds"] - r["blips_removed"] for r in mine)
            if bad:
                why.append(f"{fps}: {bad} second(s) changed dominant emotion ("
                           + ", ".join(r["clip"] for r in mine if r["changed_seconds"] > r["blips_removed"]) + ")")
            raw = [r for r in rows if r["sigma_s"] == 0.0]
            fewer_second_flips &= (sum(r["second_changes"] + r["blips"] for r in mine)
                                   < sum(r["second_changes"] + r["blips"] for r in raw))
            f0 = sum(r["sample_flips"] for r in raw)
            cuts.append((f0 - sum(r["sample_flips"] for r in mine)) / f0 if f0 else 0.0)
        verdict[sigma] = "; ".join(why) or "admissible"
        gain[sigma] = (fewer_second_flips and sigma > 0, cuts)
    ok = [s for s in SIGMAS if verdict[s] == "admissible"]
    second_level = [s for s in ok if gain[s][0]]
    if second_level:
        return max(second_level), verdict
    n_rates = len(next(iter(gain.values()))[1])
    best = [max(gain[s][1][i] for s in ok) for i in range(n_rates)]
    for sigma in ok:
        cuts = gain[sigma][1]
        if sigma > 0 and all(c >= MIN_FLIP_CUT and c >= KNEE * b for c, b in zip(cuts, best)):
            return sigma, verdict
    return 0.0, verdict


# --------------------------------------------------------------------------------------------------- output


def _f(x, spec=".3f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return format(x, spec)


def smoothing_table(rows: list[dict]) -> list[str]:
    lines = [("| clip | sigma s | flip (samples) | jitter (seconds) | blips | changed s | mean valence | mean expr. | "
              "happy share | onset s | contrast |"), "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['clip']} | {r['sigma_s']:g} | {_f(r['flip'])} ({r['sample_flips']}/{r['sample_pairs']}) "
                     f"| {_f(r['jitter'])} ({r['second_changes']}/{r['second_pairs']}) | {r['blips']} | {r['changed_seconds']} | "
                     f"{_f(r['mean_valence'])} | {_f(r['mean_expressiveness'])} | {_f(r['happy_share'])} | "
                     f"{r['onset'] if 'onset' in r and r['onset'] is not None else ('n/a' if 'onset' in r else '')} | "
                     f"{_f(r['contrast']) if 'contrast' in r else ''} |")
    return lines


def pooled_table(smoothing: dict[str, list[dict]]) -> list[str]:
    lines = [("| rate | sigma s | sample flips | second changes | blips | seconds changed vs raw | max abs shift of "
              "a clip's mean valence / expr. | Wolfgang onset s | Wolfgang contrast (share of raw) |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for fps, rows in smoothing.items():
        ref = next(r for r in rows if r["clip"] == WOLFGANG and r["sigma_s"] == 0.0)
        raw = {r["clip"]: r for r in rows if r["sigma_s"] == 0.0}
        for sigma in SIGMAS:
            mine = [r for r in rows if r["sigma_s"] == sigma]
            w = next(r for r in mine if r["clip"] == WOLFGANG)
            sf, sp = sum(r["sample_flips"] for r in mine), sum(r["sample_pairs"] for r in mine)
            sc, spp = sum(r["second_changes"] for r in mine), sum(r["second_pairs"] for r in mine)
            dv = max(abs(r["mean_valence"] - raw[r["clip"]]["mean_valence"]) for r in mine)
            de = max(abs(r["mean_expressiveness"] - raw[r["clip"]]["mean_expressiveness"]) for r in mine)
            lines.append(f"| {fps} | {sigma:g} | {sf}/{sp} = {_f(sf / sp if sp else float('nan'))} | {sc}/{spp} | "
                         f"{sum(r['blips'] for r in mine)} | {sum(r['changed_seconds'] for r in mine)} | "
                         f"{_f(dv)} / {_f(de)} | {w['onset']} | {_f(w['contrast'])} "
                         f"({_f(w['contrast'] / ref['contrast'], '.1%')}) |")
    return lines


def baseline_table(rows: list[dict]) -> list[str]:
    lines = [("| clip (offset) | sigma s | baseline | lead-in samples | resting seconds (their expr.) | "
              "baseline valence | baseline expr. | mean valence | mean expr. | delta valence | delta expr. |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        calm = (f"{', '.join(map(str, r['resting_seconds']))} ({_f(r['resting_expr_min'], '.2f')}-"
                f"{_f(r['resting_expr_max'], '.2f')})" if r["resting_seconds"] else "")
        lines.append(f"| {r['clip']} ({r['offset_s']:g} s) | {r['sigma_s']:g} | {r['method']} | "
                     f"{r['lead_in_samples']} | {calm} | {_f(r['baseline_valence'])} | "
                     f"{_f(r['baseline_expressiveness'])} | "
                     f"{_f(r['mean_valence'])} | {_f(r['mean_expressiveness'])} | {_f(r['delta_valence'])} | "
                     f"{_f(r['delta_expressiveness'])} |")
    return lines


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help=f"analysis cache and results folder (default {DEFAULT_OUT.relative_to(ROOT)})")
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the shared data folder (holds videos/)")
    ap.add_argument("--fps", default="5,10", help="sample rates to analyse at, comma-separated (default 5,10)")
    ap.add_argument("--reanalyse", action="store_true", help="analyse the clips again even when cached")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON instead of the tables")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else (lambda m: print(m, flush=True))
    clips = [(args.shared / "videos" / c).resolve() for c in CLIPS]
    missing = [str(c) for c in clips if not c.is_file()]
    if missing:
        raise SystemExit(f"missing clips: {', '.join(missing)}")
    rates = [float(x) for x in args.fps.split(",") if x.strip()]
    smoothing: dict[str, list[dict]] = {}
    data_by_rate = {}
    analyse_s = 0.0
    labels = None
    for fps in rates:
        key = f"{fps:g} Hz"
        data, labels, spent = analysed(args.out / f"fps{fps:g}", clips, fps, args.reanalyse, log)
        analyse_s += spent
        data_by_rate[key] = data
        smoothing[key] = [smoothing_figures(c, data[c]["faces"], data[c]["duration_s"], labels, s)
                          for c in CLIPS for s in SIGMAS]
    sigma, verdict = recommend(smoothing)
    baselines = {key: [b for c in CLIPS for s in sorted({0.0, sigma})
                       for b in baseline_figures_of(c, data[c]["faces"], data[c]["duration_s"], labels, s)]
                 for key, data in data_by_rate.items()}
    elapsed = time.perf_counter() - t0
    result = {"clips": list(CLIPS), "sigmas_s": list(SIGMAS), "labels": list(labels), "smoothing": smoothing,
              "recommended_smoothing_s": sigma, "verdict": {f"{k:g}": v for k, v in verdict.items()},
              "baselines": baselines, "analyse_s": round(analyse_s, 2), "elapsed_s": round(elapsed, 2)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "study_smoothing.json").write_text(json.dumps(_jsonable(result), indent=2))
    if args.json:
        print(json.dumps(_jsonable(result), indent=2))
        return 0
    for key, rows in smoothing.items():
        print(f"\nSmoothing, per clip, {key} (whole recording, recording seconds)\n")
        print("\n".join(smoothing_table(rows)))
    print("\nSmoothing, pooled over the clips\n")
    print("\n".join(pooled_table(smoothing)))
    print("\nRule per sigma: " + "; ".join(f"{k:g} s: {v}" for k, v in verdict.items()))
    print(f"recommended study.smoothing_s = {sigma:g}")
    for key, rows in baselines.items():
        print(f"\nBaselines, {key} (stimulus window from the offset to the end; deltas = figure - baseline)\n")
        print("\n".join(baseline_table(rows)))
    print(f"\n{elapsed:.1f} s in all ({analyse_s:.1f} s analysing); figures in {args.out / 'study_smoothing.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
