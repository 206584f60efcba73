"""The joint trainer: M moves toward both sides, lambda = 0 is two independent trainings, resume."""

import pytest
import torch

from lmrec.bdlm.cascade import CascadeConfig
from lmrec.errors import ConfigError
from lmrec.llm.modes import trainable_state

NO_FEATURE = CascadeConfig(use_llm_feature=False)


def _llm_rows(trainer, users, items):
    return trainer._llm_rows(users, items)


def _drs_rows(trainer, users, items):
    with torch.no_grad():
        p, q = trainer.sides.cascade.tables()
    return p[users], q[items]


def _distance_with(m, state, side, users, items, rows):
    """The mutual loss of ``side`` as if M held ``state``."""
    now = (m.users.clone(), m.items.clone())
    m.users.copy_(state[0]), m.items.copy_(state[1])
    value = m.distance(side, users, items, *rows)
    m.users.copy_(now[0]), m.items.copy_(now[1])
    return value


def test_a_joint_step_moves_m_toward_both_sides(split, make_trainer, make_sides):
    trainer = make_trainer(split, sides=make_sides(split, write_rate=0.5), lam=1.0)
    trainer.joint_step(0)  # a first step, so that the two sides differ
    rows, epoch, k = trainer.rows(1)
    users, items = trainer._shared(rows)
    m = trainer.sides.sharing
    start = (m.users.clone(), m.items.clone())

    trainer.llm_step(rows, 1, epoch, k)
    e_rows = _llm_rows(trainer, users, items)  # the LLM's rows after its step
    after_llm = (m.users.clone(), m.items.clone())
    assert m.distance("llm", users, items, *e_rows) < _distance_with(
        m, start, "llm", users, items, e_rows
    )

    trainer.drs_step(rows, 1)
    p_rows = _drs_rows(trainer, users, items)  # the domain model's rows after its step
    assert m.distance("drs", users, items, *p_rows) < _distance_with(
        m, after_llm, "drs", users, items, p_rows
    )
    # rows outside the batch are untouched
    other = torch.tensor(sorted(set(range(split.n_users)) - set(users.tolist())))
    assert torch.equal(m.users[other], start[0][other])


def test_each_step_writes_its_own_rows_into_m(split, make_trainer):
    trainer = make_trainer(split, lam=0.5)
    rows, epoch, k = trainer.rows(0)
    users, items = trainer._shared(rows)
    m = trainer.sides.sharing
    trainer.llm_step(rows, 0, epoch, k)
    e_u, e_i = _llm_rows(trainer, users, items)
    assert torch.allclose(m.users[users], 0.5 * e_u) and torch.allclose(m.items[items], 0.5 * e_i)
    trainer.drs_step(rows, 0)
    p_u, q_i = _drs_rows(trainer, users, items)
    assert torch.allclose(m.users[users], p_u) and torch.allclose(m.items[items], q_i)


def _weights(trainer):
    llm = {k: v.clone() for k, v in trainable_state(trainer.sides.llm).items()}
    drs = {k: v.clone() for k, v in trainer.sides.cascade.state_dict().items()}
    return llm, drs


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("cascade", [NO_FEATURE, CascadeConfig()], ids=["no-feature", "feature"])
def test_lambda_zero_reproduces_the_independent_trainings(split, cascade, make_trainer, make_sides):
    def run(lam=0.0, **flags):
        sides = make_sides(split, cascade=cascade)
        trainer = make_trainer(split, sides=sides, lam=lam, **flags)
        trainer.fit()
        return _weights(trainer)

    joint_llm, joint_drs = run()
    llm_only, _ = run(train_drs=False)
    _, drs_only = run(train_llm=False)
    assert _equal(joint_llm, llm_only)
    if cascade.use_llm_feature:
        # the cascade reads the LLM's current state: a run that does not train the LLM feeds
        # it the initial LLM, so only the LLM side can match here
        assert not _equal(joint_drs, drs_only)
    else:
        assert _equal(joint_drs, drs_only)
    # and a lambda > 0 does couple them
    coupled_llm, _ = run(lam=1.0)
    assert not _equal(coupled_llm, joint_llm)


def test_resume_ends_where_an_uninterrupted_run_ends(split, tmp_path, make_trainer):
    full = make_trainer(split, tmp_path / "full", lam=0.5, epochs=2)
    full.fit()

    def stop(step, losses):
        if step == 3:
            raise KeyboardInterrupt

    first = make_trainer(split, tmp_path / "cut", lam=0.5, epochs=2, save_every=1)
    with pytest.raises(KeyboardInterrupt):
        first.fit(on_step=stop)
    again = make_trainer(split, tmp_path / "cut", lam=0.5, epochs=2, save_every=1)
    stats = again.fit()
    assert stats["resumed_from"] == 3 and stats["steps"] == 8
    a, b = _weights(full), _weights(again)
    assert _equal(a[0], b[0]) and _equal(a[1], b[1])
    assert torch.equal(full.sides.sharing.users, again.sides.sharing.users)
    assert [h["epoch"] for h in again.history] == [1, 2]

    def losses(entry):
        return {k: v for k, v in entry.items() if k != "seconds"}

    assert losses(again.history[0]) == losses(full.history[0])
    folder = sorted((tmp_path / "cut" / "checkpoints").glob("step-*"))
    assert [f.name for f in folder] == ["step-0000008"]
    names = {p.relative_to(folder[0]).as_posix() for p in folder[0].rglob("*") if p.is_file()}
    assert {
        "llm/trainable.safetensors",
        "drs/model.safetensors",
        "sharing/model.safetensors",
    } <= names


def test_resume_with_another_config_raises(split, tmp_path, make_trainer):
    make_trainer(split, tmp_path, lam=0.5).fit()
    with pytest.raises(ConfigError, match="another joint config.*lam"):
        make_trainer(split, tmp_path, lam=0.1).fit()


def test_config_validation():
    from lmrec.bdlm.config import JointConfig

    with pytest.raises(ConfigError, match="joint.lam"):
        JointConfig(lam=-1)
    with pytest.raises(ConfigError, match="nothing to train"):
        JointConfig(train_llm=False, train_drs=False)
    with pytest.raises(ConfigError, match="joint.batch_size"):
        JointConfig(batch_size=0)


def test_zero_epochs_trains_nothing(split, tmp_path, make_trainer):
    trainer = make_trainer(split, out_dir=tmp_path, epochs=0)
    before = _weights(trainer)
    stats = trainer.fit()
    assert stats["steps"] == 0 and stats["history"] == []
    assert all(_equal(a, b) for a, b in zip(before, _weights(trainer), strict=True))
