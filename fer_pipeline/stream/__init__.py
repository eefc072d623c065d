"""Live mode: a camera or a network stream through the batch pipeline's stages, with rolling results.

:mod:`fer_pipeline.stream.source` decodes the source (newest frames first, bounded queue), :mod:`.rolling` turns the
stages' output into settled rows of the four tables window by window, :mod:`.store` writes them as Parquet part
files, and :mod:`.session` runs the loop. No module here imports Prefect, the CLI or HTML.
"""
