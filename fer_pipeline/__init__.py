"""fer-pipeline: per-viewer, per-second emotion timelines and engagement reports from recordings of audiences."""

__version__ = "0.1.0"
