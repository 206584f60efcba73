import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lmrec.errors import ConfigError, DataError
from lmrec.train.loop import latest_checkpoint
from lmrec.train.trainer import TrainConfig, resolve_device, train


class Stop(Exception):
    """Stands in for a kill between epochs."""


def _cfg(**kw):
    base = dict(epochs=6, batch_size=32, lr=0.05, patience=0, seed=7, progress=False)
    base["valid_metric"] = "HR@5"
    return TrainConfig(**{**base, **kw})


def _model(tiny, split, cls="MF", init_seed=0):
    torch.manual_seed(init_seed)
    return getattr(tiny, cls)(split.n_users, split.n_items)


def _strip(history):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in history]


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _interrupt(stop_epoch):
    def hook(epoch, entry):
        if epoch == stop_epoch:
            raise Stop

    return hook


_REFERENCE = {}


def _reference(tiny, split, cls, tmp_path_factory):
    """The uninterrupted run of ``cls``, trained once per test session."""
    if cls not in _REFERENCE:
        model = _model(tiny, split, cls)
        out = tmp_path_factory.mktemp(f"full-{cls}")
        _REFERENCE[cls] = (model, train(model, split, _cfg(), out, tiny.hit_rate_valid(split)), out)
    return _REFERENCE[cls]


@pytest.mark.parametrize(
    "cls, how",
    [
        ("MF", "between_epochs"),
        ("MF", "mid_epoch"),
        ("MF", "mid_write"),
        ("MF", "before_best"),
        ("Seq", "between_epochs"),
        ("Seq", "before_best"),
    ],
)
def test_resumed_run_ends_exactly_like_an_uninterrupted_one(
    tiny, split, tmp_path, tmp_path_factory, cls, how
):
    valid_fn = tiny.hit_rate_valid(split)
    cfg = _cfg()
    full, ref, full_dir = _reference(tiny, split, cls, tmp_path_factory)
    stop = 3
    if how == "before_best":  # stop at an epoch that improved, so best.safetensors was due
        values = [e["metrics"]["HR@5"] for e in ref.history]
        improved = [i + 1 for i, v in enumerate(values) if v > max(values[:i], default=-1)]
        stop = max(e for e in improved if e < cfg.epochs)

    out = tmp_path / "resumed"
    first = _model(tiny, split, cls)
    if how == "mid_epoch":  # TinyMF's crash hook
        per_epoch = -(-len(split.train) // cfg.batch_size)
        first.fail_at_step = 3 * per_epoch + 2  # inside epoch 4
        with pytest.raises(KeyboardInterrupt):
            train(first, split, cfg, out, valid_fn)
    else:
        with pytest.raises(Stop):
            train(first, split, cfg, out, valid_fn, on_epoch_end=_interrupt(stop))
    half = out / "checkpoints" / ".step-0009999.x1y2.tmp"
    if how == "mid_write":  # killed while writing the next checkpoint's temporary folder
        (half / "model").mkdir(parents=True)
        (half / "model" / "model.safetensors").write_bytes(b"half")
    if how == "before_best":  # killed after the checkpoint's rename, before best.safetensors
        (out / "best.safetensors").unlink()
        saved = json.loads((latest_checkpoint(out) / "state.json").read_text())
        assert saved["best_epoch"] == saved["epoch"] == stop

    # A fresh process: different initial weights, RNGs elsewhere; all must come from disk.
    torch.manual_seed(12345)
    resumed = _model(tiny, split, cls, init_seed=99)
    res = train(resumed, split, cfg, out, valid_fn)

    _assert_same_weights(full, resumed)
    assert _strip(res.history) == _strip(ref.history)
    assert (res.best_epoch, res.best_metric, res.epochs) == (ref.best_epoch, ref.best_metric, 6)
    a = load_file(latest_checkpoint(full_dir) / "model" / "model.safetensors")
    b = load_file(latest_checkpoint(out) / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [p.name for p in (out / "checkpoints").iterdir()] == [latest_checkpoint(out).name]


def test_early_stopping_stops_after_patience_and_keeps_the_best_weights(tiny, split, tmp_path):
    scripted = iter([0.1, 0.3, 0.2, 0.25, 0.3, 0.9, 0.9])
    snapshots = {}
    model = _model(tiny, split)

    def keep(epoch, entry):
        snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    res = train(
        model,
        split,
        _cfg(epochs=20, patience=3),
        tmp_path,
        lambda m: {"HR@5": next(scripted)},
        on_epoch_end=keep,
    )
    assert res.stopped_early and res.epochs == 5 and res.best_epoch == 2
    assert res.best_metric == pytest.approx(0.3)
    assert [e["metrics"]["HR@5"] for e in res.history] == [0.1, 0.3, 0.2, 0.25, 0.3]
    assert all(torch.equal(v, snapshots[2][k]) for k, v in model.state_dict().items())
    assert not torch.equal(snapshots[5]["user.weight"], snapshots[2]["user.weight"])
    # Running again does not train further: the run is finished.
    again = train(_model(tiny, split, init_seed=5), split, _cfg(epochs=20, patience=3), tmp_path,
                  lambda m: {"HR@5": 1.0})  # fmt: skip
    assert again.epochs == 5 and again.best_epoch == 2


def test_eval_every_validates_on_schedule_and_after_the_last_epoch(tiny, split, tmp_path):
    calls = []

    def valid_fn(m):
        calls.append(1)
        return {"HR@5": float(len(calls))}

    res = train(_model(tiny, split), split, _cfg(epochs=5, eval_every=2), tmp_path, valid_fn)
    assert [("metrics" in e) for e in res.history] == [False, True, False, True, True]
    assert len(calls) == 3 and res.best_epoch == 5


def test_checkpoint_is_safetensors_and_json_only(tiny, split, tmp_path):
    train(_model(tiny, split), split, _cfg(epochs=2), tmp_path, tiny.hit_rate_valid(split))
    steps = 2 * -(-len(split.train) // 32)
    ckpt = tmp_path / "checkpoints" / f"step-{steps:07d}"
    names = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert names == {
        "best.safetensors",
        *(
            f"checkpoints/step-{steps:07d}/{name}"
            for name in (
                "model/model.safetensors",
                "model/optimizer.safetensors",
                "model/optimizer.json",
                "state.json",
            )
        ),
    }
    for name in names:
        data = (tmp_path / name).read_bytes()
        assert not data.startswith(b"\x80"), f"{name} looks like a pickle"
        if name.endswith(".json"):
            json.loads(data)
        else:
            with safe_open(str(tmp_path / name), framework="pt") as fh:
                assert list(fh.keys())
    optim = load_file(ckpt / "model" / "optimizer.safetensors")
    assert {"0.exp_avg", "0.exp_avg_sq", "0.step", "1.exp_avg"} <= set(optim)
    assert float(optim["0.step"]) == steps
    state = json.loads((ckpt / "state.json").read_text())
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert isinstance(state["rng"]["torch"], list) and len(state["rng"]["python"][1]) == 625
    assert state["rng"]["numpy"]["bit_generator"] == "MT19937"
    groups = json.loads((ckpt / "model" / "optimizer.json").read_text())["param_groups"]
    assert groups[0]["lr"] == 0.05 and groups[0]["betas"] == [0.9, 0.999]


@pytest.mark.parametrize(
    "name",
    [
        "model/model.safetensors",
        "model/optimizer.safetensors",
        "state.json",
        "model/optimizer.json",
    ],
)
def test_corrupt_checkpoint_names_the_file(tiny, split, tmp_path, name):
    train(_model(tiny, split), split, _cfg(epochs=1), tmp_path, tiny.hit_rate_valid(split))
    (latest_checkpoint(tmp_path) / name).write_bytes(b"\x00garbage{")
    with pytest.raises(DataError, match=name.replace(".", r"\.")):
        train(_model(tiny, split), split, _cfg(epochs=2), tmp_path, tiny.hit_rate_valid(split))


def test_resuming_with_another_config_is_refused(tiny, split, tmp_path):
    train(_model(tiny, split), split, _cfg(epochs=1), tmp_path, tiny.hit_rate_valid(split))
    with pytest.raises(ConfigError, match="lr: 0.05 -> 0.01"):
        train(_model(tiny, split), split, _cfg(lr=0.01), tmp_path, tiny.hit_rate_valid(split))
    # more epochs is fine: training continues
    res = train(_model(tiny, split), split, _cfg(epochs=2), tmp_path, tiny.hit_rate_valid(split))
    assert res.epochs == 2


def test_other_batch_kinds_train_and_popularity_is_only_validated(tiny, split, tmp_path):
    valid_fn = tiny.hit_rate_valid(split)
    res = train(_model(tiny, split, "Pointwise"), split, _cfg(epochs=2), tmp_path / "p", valid_fn)
    assert res.epochs == 2 and res.history[-1]["loss"] < res.history[0]["loss"] + 1.0
    pop = tiny.Popularity(split.n_users, split.n_items)
    res = train(pop, split, _cfg(), tmp_path / "pop", valid_fn)
    assert res.epochs == 0 and res.best_epoch == 0 and res.history[0]["metrics"]["HR@5"] > 0
    assert (tmp_path / "pop" / "best.safetensors").exists()


def test_training_recovers_the_planted_groups(tiny, split, tmp_path):
    valid_fn = tiny.hit_rate_valid(split)
    model = _model(tiny, split)
    before = valid_fn(model)["HR@5"]
    res = train(model, split, _cfg(epochs=15, lr=0.05), tmp_path, valid_fn)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert res.best_metric > before and res.best_metric >= 0.5


def test_missing_valid_metric_and_bad_config_are_clear(tiny, split, tmp_path):
    with pytest.raises(ConfigError, match="'full/NDCG@10' is not among .*HR@5"):
        train(_model(tiny, split), split, TrainConfig(epochs=1, progress=False), tmp_path,
              tiny.hit_rate_valid(split))  # fmt: skip
    with pytest.raises(ConfigError, match="train.batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="train.device"):
        TrainConfig(device="tpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    shutil.rmtree(tmp_path)


def test_a_run_folder_in_an_older_checkpoint_layout_is_refused_not_overwritten(
    tiny, split, tmp_path
):
    old = tmp_path / "checkpoint"
    old.mkdir()
    (old / "trainer_state.json").write_text('{"epoch": 3}')
    with pytest.raises(DataError, match="layout of an older lmrec"):
        train(_model(tiny, split), split, _cfg(epochs=1), tmp_path, tiny.hit_rate_valid(split))
    assert not (tmp_path / "best.safetensors").exists()
