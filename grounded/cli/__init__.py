"""The ``grounded-sam`` command line: ``main`` parses and dispatches (``main.py``); ``batch.py`` runs
``predict`` over many images into one output folder; ``evaluate.py`` computes COCO metrics for ``eval``."""

from grounded.cli.main import main

__all__ = ["main"]
