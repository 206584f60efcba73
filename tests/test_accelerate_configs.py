"""The shipped Accelerate launch configs parse as Accelerate's own config class reads them."""

from pathlib import Path

import pytest

CONFIGS = sorted((Path(__file__).parents[1] / "configs" / "accelerate").glob("*.yaml"))
EXPECTED = {
    "ddp_cpu.yaml": "MULTI_CPU",
    "ddp_gpus.yaml": "MULTI_GPU",
    "fsdp_full_shard.yaml": "FSDP",
    "zero2.yaml": "DEEPSPEED",
    "zero3.yaml": "DEEPSPEED",
}


def test_every_engine_has_a_config():
    assert {p.name for p in CONFIGS} == set(EXPECTED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_with_accelerate_and_says_when_to_use_it(path):
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = ClusterConfig.from_yaml_file(path)
    assert str(cfg.distributed_type).split(".")[-1] == EXPECTED[path.name]
    assert cfg.num_processes >= 2 and cfg.num_machines == 1
    assert path.read_text().startswith("# "), "each config opens with when to use it"
    if EXPECTED[path.name] == "DEEPSPEED":
        assert cfg.deepspeed_config["zero_stage"] == int(path.stem[-1])
    if EXPECTED[path.name] == "FSDP":
        assert cfg.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert cfg.use_cpu == (EXPECTED[path.name] == "MULTI_CPU")
