"""Protocol: leave-one-out split, negative samplers, saved candidate sets."""

from lmrec.protocol.candidates import CandidateSet
from lmrec.protocol.split import Split, leave_one_out

__all__ = ["CandidateSet", "Split", "leave_one_out"]
