"""The pipeline's one configuration object (pydantic), loaded from YAML and overridable from the CLI.

Every default lives here; ``configs/pipeline.yaml`` repeats them for users to copy and edit (installed with the
package: :func:`fer_pipeline.resources.default_config` says where).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fer_pipeline import resources

DEFAULT_MODEL = resources.default_model()
"""The shipped default emotion model (inside the installed package, or ``models/`` of a checkout)."""


class _Section(BaseModel):
    """A settings section: unknown keys refused, immutable once built (sections are passed whole to the stages, so
    none can change a setting under another's feet; derive a changed copy with ``model_copy(update=...)``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DecodeConfig(_Section):
    backend: Literal["pyav", "decord"] = Field("pyav", description="video decoder: pyav (default; faster and "
                                                "3.8x less memory than decord here, see fer_pipeline/decode/) or "
                                                "decord")
    sample_fps: float = Field(5.0, gt=0, description="frames analysed per second of video (Hz)")
    batch_size: int = Field(16, ge=1, description="sampled frames per batch; bounds memory")
    skip_nonref: bool = Field(True, description="pyav: do not decode non-reference frames the sampler cannot "
                              "keep (same samples on constant frame rate, 22-37% less decode CPU; see "
                              "fer_pipeline/decode/sampling.py); false decodes every frame")
    threads: int = Field(0, ge=0, description="pyav: decoder threads; 0 = one per core (at most 4), decoding chunks "
                         "of GOPs side by side (exact; files that cannot be split use FFmpeg's frame threads); "
                         "1 = sequential on one thread; N = N chunk decoders")
    snap_to_anchors: bool = Field(True, description="pyav, chunked decoding: a sample that would fall on a B-frame "
                                  "takes the nearest I/P-frame within half a sampling interval instead, so B-frames "
                                  "are not decoded (29% less decode CPU on the 720p benchmark file; checked "
                                  "bit-exact on the first chunk of each file, see fer_pipeline/decode/); false "
                                  "samples the first frame at or after each tick")
    process: bool = Field(True, description="decode in a child process with its own interpreter, handing batches "
                          "over in shared memory (POSIX; the decoders then never wait for the pipeline's GIL: 1-minute "
                          "720p benchmark input 8% faster, see fer_pipeline/decode/process.py); false decodes in a "
                          "thread of the pipeline's process")
    stall_timeout_s: float = Field(60.0, gt=0, description="watchdog: a video whose decoder delivers nothing for "
                                   "this many seconds fails with \"decoder stalled\" and the run goes on")
    skip_loop_filter: Literal["default", "nonref", "all"] = Field(
        "default", description="pyav: decode without the deblocking filter on no frame (default, exact), on "
        "non-reference frames only (nonref) or on all frames (all: 22% less decode CPU, errors accumulate until the "
        "next keyframe; 95-100% of emotions unchanged, benchmarks/README.md)")


class DetectConfig(_Section):
    backend: Literal["centerface", "insightface"] = "centerface"
    score_threshold: float = Field(0.35, ge=0, le=1, description="keep detections at or above this score; "
                                   "scores between this and track.high_conf_threshold only extend existing tracks")
    nms_iou: float = Field(0.4, ge=0, le=1)
    input_max_side: int = Field(640, ge=64, description="frames are downscaled so their long side is at most this "
                                "(pixels) before detection")
    min_face_px: int = Field(20, ge=0, description="drop faces whose box is smaller (short side, pixels)")
    adaptive_input: bool = Field(True, description="centerface: shrink the detector input when faces are big "
                                 "(first frame of each batch at full size; see fer_pipeline.detect.adaptive)")
    target_face_px: float = Field(64.0, gt=0, description="adaptive input: short side the smallest face keeps, "
                                  "in detector-input pixels")
    min_input_side: int = Field(256, ge=32, description="adaptive input: smallest detector input long side, pixels")
    face_crops: bool = Field(True, description="adaptive input (centerface, adaptive_input on): between full-frame "
                             "passes, detect each known face on a small crop around it when cheaper (same faces, about "
                             "half the detector CPU on 1080p; see fer_pipeline.detect.crops)")
    crop_input_side: int = Field(96, ge=32, multiple_of=32, description="face crops: crop side in detector-input "
                                 "pixels (the face spans two thirds of it)")
    full_frame_every: int = Field(16, ge=1, description="face crops: a full-frame pass every this many samples of a "
                                  "batch (and on the first): new faces are found within this many samples")
    model_path: Path | None = Field(None, description="insightface: a det_*.onnx file (SCRFD/RetinaFace)")
    pack: str | None = Field(None, description="insightface: model pack name under `root`, e.g. buffalo_l")
    root: Path = Field(Path("~/.insightface/models"), description="insightface: folder holding model packs")
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads (0 = all cores but one, min 1)")
    device: Literal["auto", "cpu", "cuda"] | None = Field(None, description="where the detector runs: auto = CUDA "
                                                          "when onnxruntime has it, cpu, cuda (required); null "
                                                          "(default) = the same as classify.device, so one setting "
                                                          "moves both models")


class TrackConfig(_Section):
    tracker: Literal["bytetrack"] = "bytetrack"
    high_conf_threshold: float = Field(0.6, ge=0, le=1, description="ByteTrack first-stage threshold")
    activation_threshold: float = Field(0.6, ge=0, le=1, description="minimum score to start a track")
    min_iou: float = Field(0.1, ge=0, le=1, description="minimum IoU to associate a face with a track")
    max_lost_s: float = Field(1.0, ge=0, description="seconds a lost track is kept for re-association")
    min_track_s: float = Field(1.0, ge=0, description="tracks spanning less than this many seconds are dropped "
                               "as noise")
    cut_threshold: float = Field(45.0, ge=0, description="shot cuts end every track: mean absolute gray difference "
                                 "(0-255) between consecutive samples' thumbnails above which a cut is declared "
                                 "(fer_pipeline/cuts.py; 0 = off)")


class ClassifyConfig(_Section):
    model: Path = Field(DEFAULT_MODEL, description="emotion model (.onnx with its .json card beside it)")
    batch_size: int = Field(128, ge=1, description="faces per inference call")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when onnxruntime has it")
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads (0 = all cores but one, min 1)")

    @field_validator("model")
    @classmethod
    def _resolve_model(cls, v: Path) -> Path:
        """A relative path is taken from the working directory, else among the shipped models
        (``models/emotion-ferplus-vgg.onnx`` or ``emotion-ferplus-vgg.onnx``, in a clone and installed alike;
        :func:`fer_pipeline.resources.resolve_model`)."""
        return resources.resolve_model(v)


class ReidConfig(_Section):
    """Re-identification: tracks of the same person in one video become one viewer (fer_pipeline/reid/)."""

    enabled: bool = Field(True, description="group tracks into viewers by face embeddings; false: every track is a "
                          "viewer")
    backend: Literal["dlib", "arcface"] = Field("dlib", description="dlib (ResNet, weights in the "
                                                "face-recognition-models package) or arcface (needs an InsightFace "
                                                "pack on disk: model_path or pack + root)")
    distance_threshold: float = Field(0.40, gt=0, le=2, description="largest distance between two tracks' mean "
                                      "embeddings (unit vectors) for one viewer; measured: same person <= 0.45 per "
                                      "frame, different people >= 0.43")
    samples_per_track: int = Field(3, ge=1, description="best face samples per track that are embedded")
    min_face_px: float = Field(40.0, ge=0, description="samples with a smaller face (short side, pixels) are not "
                               "trusted: a track with only such samples stays its own viewer")
    max_yaw_deg: float = Field(40.0, gt=0, le=90, description="samples turned further are not trusted")
    model_path: Path | None = Field(None, description="arcface: a recognition .onnx (e.g. w600k_r50.onnx)")
    pack: str | None = Field(None, description="arcface: model pack name under root, e.g. buffalo_l")
    root: Path = Field(Path("~/.insightface/models"), description="arcface: folder holding model packs")


class AttentionConfig(_Section):
    """When a face counts as attentive (facing the camera); head pose from fer_pipeline/headpose.py."""

    max_yaw_deg: float = Field(30.0, gt=0, le=90, description="largest |yaw| (head turned left/right), degrees, "
                               "still counted as facing the camera")
    max_pitch_deg: float = Field(25.0, gt=0, le=90, description="largest |pitch| (head tilted up/down), degrees, "
                                 "still counted as facing the camera")


class OutputConfig(_Section):
    thumbnails: bool = Field(True, description="save face and moment thumbnails (JPEG) for the reports")
    save_embeddings: bool = Field(False, description="write each viewer's face embeddings to OUT/embeddings/ "
                                  "(biometric data: off by default; never in reports)")
    reports: bool = Field(True, description="render HTML reports after analysis")
    annotate: bool = Field(False, description="also write OUT/annotated/<video_id>.mp4: the recording with each "
                           "face's box, viewer id and dominant emotion drawn on every frame (H.264; about 40 CPU s "
                           "per minute of 720p30 video, fer_pipeline/annotate.py)")


class ReportConfig(_Section):
    """What the HTML reports show beyond the tables (fer_pipeline/report/)."""

    explain: bool = Field(False, description="under each key moment of a video's report, the occlusion map of each "
                          "viewer's face: which parts of the aligned face the emotion model's answer rests on "
                          "(fer_pipeline/explain/moments.py; about 0.2 s per face and 2.3 kB per face-second of "
                          "memory while analysing). Batch runs only. Turning it on re-analyses videos analysed "
                          "without it (the maps are made from the frames)")


class StudyConfig(_Section):
    """Studies: respondents aligned on stimulus time, aggregated with confidence intervals (fer_pipeline/study/)."""

    baseline: Literal["none", "lead_in", "resting"] = Field(
        "none", description="per-respondent baseline reported beside the raw figures (delta_valence, "
        "delta_expressiveness): none, lead_in (the respondent's own mean before the stimulus starts) or resting (their "
        "least expressive seconds of the recording)")
    resting_share: float = Field(0.25, gt=0, le=1, description="resting baseline: the share of the respondent's "
                                 "seconds, least expressive first, that it averages")
    smoothing_s: float = Field(0.3, ge=0, description="temporal smoothing of each track's per-sample "
                               "probabilities before the per-second means: standard deviation of a centred Gaussian, "
                               "seconds (0 = off). 0.3 halves sample-to-sample flips of the dominant emotion on the "
                               "shared clips without moving any second's dominant emotion or onset; 0.5 already moves "
                               "a real change by a second (benchmarks/study_smoothing.py)")
    confidence: float = Field(0.95, gt=0, lt=1, description="level of the confidence intervals")
    bootstrap: int = Field(1000, ge=100, description="bootstrap resamples of the respondents for the intervals")
    permutations: int = Field(10000, ge=100, description="label permutations of the A/B test between two stimuli")
    seed: int = Field(0, description="seed of the bootstrap and permutation draws (same tables, same intervals)")


class PipelineConfig(_Section):
    """All pipeline settings. ``PipelineConfig()`` is the documented default."""

    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    detect: DetectConfig = Field(default_factory=DetectConfig)
    track: TrackConfig = Field(default_factory=TrackConfig)
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig)
    reid: ReidConfig = Field(default_factory=ReidConfig)
    attention: AttentionConfig = Field(default_factory=AttentionConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict | None = None) -> "PipelineConfig":
        """Load a YAML file (or the defaults when ``path`` is None) and apply dotted overrides.

        Args:
            path: YAML file with any subset of the sections above.
            overrides: e.g. ``{"decode.sample_fps": 2}``.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            pydantic.ValidationError: unknown key or bad value (the message names it).
        """
        raw: dict = {}
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise FileNotFoundError(f"config file not found: {p}")
            raw = yaml.safe_load(p.read_text()) or {}
        for dotted, value in (overrides or {}).items():
            if value is None:
                continue
            node = raw
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return cls.model_validate(raw)

    #: Settings that never change a video's results: how fast, where and how it runs, what is kept for reports, and
    #: the study step (it reads the videos' tables and is recomputed whole on every run).
    #: ``classify.model`` and the InsightFace file settings are replaced by the weights' sha256 in
    #: :func:`fer_pipeline.reuse.settings_fingerprint` (a moved copy of the same model changes nothing).
    #: ``decode.threads`` stays in: one decoder decodes sequentially, which never snaps samples to anchors.
    NOT_IN_FINGERPRINT: ClassVar[dict] = {"decode": {"process", "stall_timeout_s"},
                          "detect": {"threads", "device", "model_path", "pack", "root"},
                          "classify": {"model", "batch_size", "device", "threads"},
                          "reid": {"model_path", "pack", "root"},
                          "output": True, "study": True}

    def fingerprint(self) -> dict:
        """Every setting that changes a video's results (JSON-ready nested dict): all but ``NOT_IN_FINGERPRINT``.
        The pipeline re-analyses a video whose stored fingerprint differs. ``report`` is in only while
        ``report.explain`` is on (its maps are made from the frames, so turning it on re-analyses; off, fingerprints
        are those of versions without the setting)."""
        exclude = dict(self.NOT_IN_FINGERPRINT)
        if not self.report.explain:
            exclude["report"] = True
        return self.model_dump(mode="json", exclude=exclude)
