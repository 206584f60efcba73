"""From a dataset name to everything a method is scored on: data, split and candidate sets.

Every method (popularity, domain models, the LLM side, BDLM) starts from :func:`prepare`, so all
of them see the same preprocessing, the same split and the same saved candidate sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmrec.config import from_dict, to_dict
from lmrec.data import Dataset, PreprocessConfig
from lmrec.protocol import CandidateSet, Split


@dataclass
class Prepared:
    """A dataset, its leave-one-out split and its candidate sets keyed by (task, stage)."""

    dataset: Dataset
    split: Split
    sets: dict[tuple[str, str], CandidateSet]
    preprocess: PreprocessConfig
    candidates: Any  # CandidateConfig

    def protocol(self) -> dict[str, Any]:
        """The evaluation protocol as a saved, comparable value."""
        return {
            "dataset": self.dataset.stats(),
            "preprocess": to_dict(self.preprocess),
            "split": self.split_description(),
            "candidates": to_dict(self.candidates),
            "content_hash": {
                f"{task}/{stage}": s.meta.get("content_hash")
                for (task, stage), s in self.sets.items()
            },
        }

    def split_description(self) -> str:
        """How train / valid / test were made, as the protocol file says it."""
        from lmrec.protocol.split import STAGE_COLUMN

        if STAGE_COLUMN in self.dataset.inter.columns:
            return "as given by the source (its own train / valid / test files), kept"
        if self.dataset.clock == "timestamp":
            return "leave-one-out by time (last = test, second-last = valid)"
        return (
            "leave-one-out by file order (the source has no timestamps: last row of each user "
            "= test, the one before = valid)"
        )

    def export(self, out: Path) -> list[Path]:
        """Write the candidate sets (saved format + CSV in raw ids) under ``out``."""
        from lmrec.protocol.candidate_files import export_csv
        from lmrec.utils.io import write_json

        out = Path(out)
        written = []
        for (task, stage), cands in sorted(self.sets.items()):
            folder = out / f"{task}_{stage}"
            cands.save(folder)
            written.append(folder)
        # one CSV per set (<task>_<stage>.csv) plus candidates.csv, the test top-K set
        export_csv(self.sets, self.dataset, out)
        written += sorted(out.glob("*.csv"))
        write_json(out / "protocol.json", self.protocol())
        written.append(out / "protocol.json")
        return written


def prepare(
    dataset: str,
    *,
    data_dir: str | Path | None = None,
    preprocess: PreprocessConfig | dict | None = None,
    candidates: Any = None,
) -> Prepared:
    """Load ``dataset``, split it and load (or build once and save) its candidate sets."""
    from lmrec.data import load_dataset
    from lmrec.protocol.candidate_files import load_or_build_candidates
    from lmrec.protocol.candidates import CandidateConfig
    from lmrec.protocol.split import split_dataset

    if not isinstance(preprocess, PreprocessConfig):
        preprocess = from_dict(PreprocessConfig, preprocess, "preprocess")
    if not isinstance(candidates, CandidateConfig):
        candidates = from_dict(CandidateConfig, candidates, "candidates")
    ds = load_dataset(dataset, data_dir=data_dir, preprocess=preprocess)
    split = split_dataset(ds)  # the source's own split if it ships one, else leave-one-out
    sets = load_or_build_candidates(ds, split, candidates, preprocess=to_dict(preprocess))
    return Prepared(ds, split, sets, preprocess, candidates)
