"""Atomic folders: a folder appears whole or not at all."""

import pytest

from lmrec.utils.io import atomic_folder


def test_atomic_folder_replaces_keeps_or_leaves_untouched(tmp_path):
    final = tmp_path / "ckpt"
    with atomic_folder(final) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (final / "a.txt").read_text() == "one"
    with atomic_folder(final) as tmp:  # replace: the new folder wins, whole
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    with pytest.raises(RuntimeError), atomic_folder(final) as tmp:  # an error: untouched
        (tmp / "c.txt").write_text("half")
        raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    with atomic_folder(final, replace=False) as tmp:  # a cache: the first copy is kept
        (tmp / "d.txt").write_text("late")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary left
