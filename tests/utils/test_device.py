"""The one device rule: auto picks CUDA when present; a named CUDA device must exist."""

import pytest
import torch

from lmrec.errors import ConfigError
from lmrec.utils.device import resolve_device


def test_auto_and_cpu():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match="llm.device is 'cuda' but no CUDA"):
        resolve_device("cuda", "llm.device")


def test_a_bad_name_is_a_config_error():
    with pytest.raises(ConfigError, match="train.device: 'gpu0' is not a device"):
        resolve_device("gpu0", "train.device")
