"""The information-sharing module M: mutual losses (eqs. 7-8), writes, safetensors round trip."""

import pytest
import torch
import torch.nn.functional as F

from lmrec.bdlm.sharing import SharingModule, unique_ids
from lmrec.errors import ConfigError, DataError


def _module(write_rate=1.0):
    users = torch.arange(6.0).view(3, 2)  # M_U rows [0 1], [2 3], [4 5]
    items = -torch.arange(8.0).view(4, 2)
    return SharingModule.from_tables(users, items, llm_scale=2.0, write_rate=write_rate)


def test_mutual_loss_is_the_two_mses_with_the_side_scale():
    m = _module()
    users, items = torch.tensor([0, 2]), torch.tensor([1])
    rows_u = torch.tensor([[1.0, 1.0], [4.0, 5.0]])
    rows_i = torch.tensor([[0.0, 0.0]])
    # drs side: plain MSE; hand-computed: users ((1-0)^2 + (1-1)^2 + 0 + 0) / 4 = 0.25,
    # items ((0+2)^2 + (0+3)^2) / 2 = 6.5
    assert m.mutual_loss("drs", users, items, rows_u, rows_i).item() == pytest.approx(6.75)
    # llm side: rows times 2 first
    expected = F.mse_loss(2 * rows_u, m.users[users]) + F.mse_loss(2 * rows_i, m.items[items])
    assert m.mutual_loss("llm", users, items, rows_u, rows_i).item() == pytest.approx(
        expected.item()
    )


def test_mutual_loss_has_a_gradient_for_the_rows_only():
    m = _module()
    rows = torch.zeros(1, 2, requires_grad=True)
    m.mutual_loss("drs", torch.tensor([1]), torch.tensor([0]), rows, torch.zeros(1, 2)).backward()
    assert rows.grad is not None and rows.grad.abs().sum() > 0
    assert not m.users.requires_grad and len(list(m.parameters())) == 0


def test_write_overwrites_only_the_batch_rows():
    m = _module()
    before_u, before_i = m.users.clone(), m.items.clone()
    m.write("llm", torch.tensor([1]), torch.tensor([3]), torch.ones(1, 2), torch.ones(1, 2))
    assert torch.equal(m.users[1], torch.tensor([2.0, 2.0]))  # llm rows are scaled by 2
    assert torch.equal(m.items[3], torch.tensor([2.0, 2.0]))
    assert torch.equal(m.users[[0, 2]], before_u[[0, 2]])
    assert torch.equal(m.items[:3], before_i[:3])


def test_partial_write_moves_m_part_of_the_way():
    m = _module(write_rate=0.25)
    m.write(
        "drs", torch.tensor([0]), torch.tensor([0]), torch.tensor([[4.0, 5.0]]), torch.zeros(1, 2)
    )
    assert torch.allclose(m.users[0], torch.tensor([1.0, 2.0]))  # 0.75 * [0 1] + 0.25 * [4 5]


def test_save_load_round_trip(tmp_path):
    m = _module(write_rate=0.5)
    m.write("drs", torch.tensor([2]), torch.tensor([1]), torch.ones(1, 2), torch.ones(1, 2))
    m.save(tmp_path / "m.safetensors")
    back = SharingModule.load(tmp_path / "m.safetensors")
    assert torch.equal(back.users, m.users) and torch.equal(back.items, m.items)
    assert torch.equal(back.scales, m.scales) and back.write_rate == 0.5
    fresh = _module()
    fresh.load_state(back)
    assert torch.equal(fresh.users, m.users) and fresh.write_rate == 0.5


def test_bad_inputs_raise_clearly(tmp_path):
    with pytest.raises(ConfigError, match="one width"):
        SharingModule(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="write_rate"):
        SharingModule(torch.zeros(2, 3), torch.zeros(2, 3), write_rate=0.0)
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(DataError, match="bad.safetensors"):
        SharingModule.load(tmp_path / "bad.safetensors")


def test_unique_ids():
    assert unique_ids([3, 1], torch.tensor([1, 2])).tolist() == [1, 2, 3]


def test_row_reduction_is_d_times_the_element_mean(tmp_path):
    users, items = torch.randn(3, 4), torch.randn(2, 4)
    element = SharingModule(users, items)
    row = SharingModule(users, items, reduction="row")
    args = ("drs", torch.tensor([0, 1]), torch.tensor([1]), torch.zeros(2, 4), torch.zeros(1, 4))
    assert row.mutual_loss(*args).item() == pytest.approx(4 * element.mutual_loss(*args).item())
    row.save(tmp_path / "m.safetensors")
    assert SharingModule.load(tmp_path / "m.safetensors").reduction == "row"
    with pytest.raises(ConfigError, match="reduction"):
        SharingModule(users, items, reduction="sum")
