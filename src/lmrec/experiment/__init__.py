"""Experiments: a config -> a grid of cells -> per-cell results -> a Markdown/PNG report.

- :mod:`lmrec.experiment.config`: :class:`ExperimentConfig` (datasets x methods x seeds).
- :mod:`lmrec.experiment.cell`: one cell, the registry of cell kinds, time and memory records.
- :mod:`lmrec.experiment.runner`: :func:`run_experiment` (skip finished, resume interrupted).
- :mod:`lmrec.experiment.report`: mean +- std over seeds, tables, charts, results files.
- :mod:`lmrec.experiment.demo`: the offline demo.

Nothing is imported here, so ``import lmrec.experiment`` stays cheap.
"""
