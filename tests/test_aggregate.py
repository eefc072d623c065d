"""Aggregation: per-second buckets from timestamps, viewer-weighted audience means, valence/expressiveness."""
import numpy as np
import pandas as pd
import pytest

from fer_pipeline.aggregate import audience, prob_columns, timeline, valence

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _faces(rows):
    """rows: (track_id, timestamp_s, label index with p=1)"""
    pcols = prob_columns(LABELS)
    data = []
    for tid, ts, k in rows:
        p = np.zeros(len(LABELS))
        p[k] = 1.0
        data.append({"track_id": tid, "timestamp_s": ts, **dict(zip(pcols, p))})
    return pd.DataFrame(data)


def test_timeline_buckets_by_timestamp_floor():
    # 29.97 fps-like timestamps: 0.9999 belongs to second 0, 1.0 to second 1
    f = _faces([(1, 0.0, 3), (1, 0.9999, 6), (1, 1.0, 3), (1, 1.5, 3), (2, 1.2, 0)])
    tl = timeline(f, LABELS)
    assert list(zip(tl.track_id, tl.second, tl.n_samples)) == [(1, 0, 2), (1, 1, 2), (2, 1, 1)]
    r = tl.iloc[0]
    assert r.p_happy == pytest.approx(0.5) and r.p_neutral == pytest.approx(0.5)
    assert tl.iloc[1].emotion == "happy" and tl.iloc[2].emotion == "angry"
    assert tl.iloc[1].valence == pytest.approx(1.0) and tl.iloc[2].valence == pytest.approx(-1.0)
    assert tl.iloc[0].expressiveness == pytest.approx(0.5)
    np.testing.assert_allclose(tl[prob_columns(LABELS)].sum(axis=1), 1.0)


def test_audience_weighs_viewers_equally_and_covers_every_second():
    # track 1 has 4 happy samples in second 2, track 2 one sad sample: mean over viewers is 50/50
    f = _faces([(1, 2.0, 3), (1, 2.2, 3), (1, 2.4, 3), (1, 2.6, 3), (2, 2.1, 4)])
    au = audience(timeline(f, LABELS), LABELS, duration_s=4.5)
    assert list(au.second) == [0, 1, 2, 3, 4]
    assert list(au.viewers) == [0, 0, 2, 0, 0]
    row = au[au.second == 2].iloc[0]
    assert row.p_happy == pytest.approx(0.5) and row.p_sad == pytest.approx(0.5)
    assert row.share_happy == pytest.approx(0.5) and row.share_sad == pytest.approx(0.5)
    assert row.valence == pytest.approx(0.0)
    assert np.isnan(au[au.second == 0].iloc[0].p_happy)


def test_empty_inputs_give_empty_tables_with_columns():
    tl = timeline(_faces([]).reindex(columns=["track_id", "timestamp_s", *prob_columns(LABELS)]), LABELS)
    assert len(tl) == 0 and "valence" in tl.columns
    au = audience(tl, LABELS, 3.0)
    assert list(au.viewers) == [0, 0, 0]


def test_valence_range():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7), size=1000)
    v = valence(p, LABELS)
    assert v.min() >= -1 and v.max() <= 1


def test_attention_is_share_of_samples_then_mean_over_viewers():
    # second 0: track 1 attentive in 3 of 4 samples, track 2 in 0 of 1 -> timeline 0.75 and 0.0, audience 0.375
    f = _faces([(1, 0.0, 6), (1, 0.2, 6), (1, 0.4, 6), (1, 0.6, 6), (2, 0.1, 6), (1, 1.0, 6)])
    f["attentive"] = [True, True, False, True, False, True]
    tl = timeline(f, LABELS)
    assert list(tl.columns[-1:]) == ["attention"]
    assert tl.attention.tolist() == pytest.approx([0.75, 1.0, 0.0])
    au = audience(tl, LABELS, duration_s=3.0)
    assert au.attention.iloc[:2].tolist() == pytest.approx([0.375, 1.0]) and np.isnan(au.attention.iloc[2])
    # tables without head pose: NaN attention, nothing else changes
    tl_old = timeline(f.drop(columns=["attentive"]), LABELS)
    assert tl_old.attention.isna().all()
    pd.testing.assert_frame_equal(tl_old.drop(columns=["attention"]), tl.drop(columns=["attention"]))
