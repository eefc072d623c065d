"""``python -m fer_pipeline ...``: the ``fer-pipeline`` command line (:func:`fer_pipeline.cli.main`)."""

from fer_pipeline.cli import main

if __name__ == "__main__":
    main()
