"""lmrec: recommendation with pre-trained language models.

The data flows one way: raw files -> :class:`lmrec.data.Interactions` -> split and candidate
sets (:mod:`lmrec.protocol`) -> domain models / LLM side -> joint trainer -> evaluator -> report.
Nothing is loaded or created at import time.
"""

__version__ = "0.1.0"
