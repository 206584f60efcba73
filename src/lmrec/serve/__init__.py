"""``lmrec serve``: a saved run behind an HTTP API (FastAPI + uvicorn).

- :mod:`lmrec.serve.engine`: a run folder in memory; retrieval and re-ranking of batches.
- :mod:`lmrec.serve.batcher`: the micro-batcher and its bounded queue.
- :mod:`lmrec.serve.app`: the endpoints, errors, API key and metrics.

Importing this package loads no weights and starts nothing.
"""

from lmrec.serve.app import ServeConfig, create_app
from lmrec.serve.load import load_engine

__all__ = ["ServeConfig", "create_app", "load_engine"]
