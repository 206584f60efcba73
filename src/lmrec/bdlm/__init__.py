"""BDLM (seeds/002): a domain model and an LLM trained together, bridged by a shared module.

Modules, in the order data flows through them:

- :mod:`~lmrec.bdlm.sharing`: M = (M_U, M_I), the mutual-learning losses (eqs. 7-8), writes.
- :mod:`~lmrec.bdlm.features`: h_LLM per prompt, cached per LLM state, shared prefixes once.
- :mod:`~lmrec.bdlm.cascade`: the domain side with the LLM feature (eqs. 5-6).
- :mod:`~lmrec.bdlm.aligned`: the same (user, positive, negative) rows for both sides.
- :mod:`~lmrec.bdlm.joint`: the joint trainer (eq. 9, alternating steps, checkpoints).
- :mod:`~lmrec.bdlm.inference`: BDLM-llm and BDLM-drs on the saved candidate sets.
- :mod:`~lmrec.bdlm.run`: :func:`run_bdlm`, a whole run (what the experiment cell calls).
- :mod:`~lmrec.experiment.kinds`: the ``bdlm`` and ``llm`` experiment cell kinds.
"""

from lmrec.bdlm.cascade import Cascade, CascadeConfig
from lmrec.bdlm.config import BDLMConfig, DomainSpec, JointConfig
from lmrec.bdlm.features import FeatureCache
from lmrec.bdlm.joint import JointSides, JointTrainer
from lmrec.bdlm.run import run_bdlm
from lmrec.bdlm.sharing import SharingModule

__all__ = [
    "BDLMConfig",
    "Cascade",
    "CascadeConfig",
    "DomainSpec",
    "FeatureCache",
    "JointConfig",
    "JointSides",
    "JointTrainer",
    "SharingModule",
    "run_bdlm",
]
