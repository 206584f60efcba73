"""Protocol: leave-one-out split, negative samplers, saved candidate sets."""

from lmrec.protocol.candidate_files import (
    export_csv,
    load_candidates,
    load_or_build_candidates,
    save_candidates,
)
from lmrec.protocol.candidates import CandidateConfig, CandidateSet, build_candidates
from lmrec.protocol.samplers import SAMPLERS
from lmrec.protocol.split import Split, leave_one_out
from lmrec.protocol.text_encoder import EncoderConfig, encode_titles

__all__ = [
    "SAMPLERS",
    "CandidateConfig",
    "CandidateSet",
    "EncoderConfig",
    "Split",
    "build_candidates",
    "encode_titles",
    "export_csv",
    "leave_one_out",
    "load_candidates",
    "load_or_build_candidates",
    "save_candidates",
]
