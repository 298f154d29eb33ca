"""The ``grounded-sam`` command line: ``main`` parses and dispatches (``main.py``). ``predict``:
``options.py`` (what a run asks for and did), ``image_job.py`` (one image: read, predict, encode),
``run_folder.py`` (the output folder: resume records, stems, ``annotations.json``), and two engines,
``batch.py`` (local, in this process) and ``ray_engine.py`` (a pool of Ray workers). ``evaluate.py``
computes COCO metrics for ``eval``."""

from grounded.cli.main import main

__all__ = ["main"]
