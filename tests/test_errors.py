from dataclasses import dataclass

import pytest

from lmrec.errors import ConfigError, check_ints, check_numbers


@dataclass
class _Cfg:
    epochs: object = 1
    lr: object = 0.1


@pytest.mark.parametrize("value", [-1, True, 1.5, "2", None])
def test_check_ints_names_the_field_and_value(value):
    with pytest.raises(ConfigError, match=rf"train\.epochs must be an integer >= 0, got {value!r}"):
        check_ints("train", _Cfg(epochs=value), {"epochs": 0})


@pytest.mark.parametrize("value", [-0.5, False, "0.1", None])
def test_check_numbers_names_the_field_and_value(value):
    with pytest.raises(ConfigError, match=r"joint\.lr must be a number >= 0"):
        check_numbers("joint", _Cfg(lr=value), ("lr",))


def test_valid_values_pass():
    check_ints("train", _Cfg(epochs=0), {"epochs": 0})
    check_numbers("joint", _Cfg(lr=0), ("lr",))
    check_numbers("joint", _Cfg(lr=2.5), ("lr",), low=1)
    with pytest.raises(ConfigError, match=r"must be a number >= 1, got 0.5"):
        check_numbers("joint", _Cfg(lr=0.5), ("lr",), low=1)
