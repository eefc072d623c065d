"""Studies: many respondents watching the same stimulus, aligned on stimulus time, aggregated with confidence
intervals, compared across stimuli and against the norms of the output folder.

Modules: :mod:`.manifest` (who watched what, from when), :mod:`.timing` (stimulus time, smoothing), :mod:`.baseline`,
:mod:`.stats` (bootstrap, permutation test, percentile ranks), :mod:`.tables` (the study tables), :mod:`.store`
(Parquet by stimulus), :mod:`.run` (one study step over an output folder). No module here imports Prefect, the CLI
or HTML.
"""
