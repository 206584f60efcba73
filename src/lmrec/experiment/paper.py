"""Published figures the report sets beside ours, as data (one entry per paper table)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperTable:
    """One published table: on which dataset, in which setting, and its rows."""

    title: str
    dataset: str  # lmrec's dataset name the rows were measured on
    setting: str  # what the paper ran, in one sentence
    metrics: tuple[str, ...]  # lmrec metric names, in the order of each row's figures
    rows: dict[str, tuple[float, ...]]  # method label -> figures


BDLM_TABLE3_ML1M = PaperTable(
    title="BDLM Table 3, ML-1M",
    dataset="ml-1m",
    setting=(
        "Vicuna-7B, full fine-tuning on 2 GPUs, ML-1M, 20 candidates with popularity + "
        "text-similarity negatives"
    ),
    metrics=(
        "topk/HR@1",
        "topk/HR@2",
        "interaction/precision",
        "interaction/recall",
        "interaction/F1",
    ),
    rows={
        "LightGCN": (0.284, 0.448, 0.733, 0.702, 0.717),
        "SASRec": (0.324, 0.475, 0.748, 0.644, 0.691),
        "BERT4Rec": (0.375, 0.506, 0.740, 0.668, 0.702),
        "InstructRec": (0.372, 0.483, 0.833, 0.672, 0.744),
        "BDLM-llm": (0.431, 0.545, 0.847, 0.758, 0.799),
        "BDLM-drs": (0.460, 0.607, 0.812, 0.819, 0.816),
    },
)

__all__ = ["BDLM_TABLE3_ML1M", "PaperTable"]
