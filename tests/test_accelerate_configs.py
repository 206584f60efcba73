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
    if EXPECTED[path.name] == "FSDP":  # lmrec shards with FSDP2, resharding after forward
        assert cfg.fsdp_config["fsdp_version"] == 2
        assert cfg.fsdp_config["fsdp_reshard_after_forward"] is True
    assert cfg.use_cpu == (EXPECTED[path.name] == "MULTI_CPU")


def test_the_fsdp_config_launches_lmrec_s_fsdp_engine(monkeypatch):
    """The environment Accelerate's own launcher builds from fsdp_full_shard.yaml makes lmrec
    shard with FSDP2, resharding after forward, without CPU offload."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    from lmrec.utils.distributed import _flag, fsdp_options

    path = Path(__file__).parents[1] / "configs" / "accelerate" / "fsdp_full_shard.yaml"
    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    args, _, _ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)
    for key, value in env.items():
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)
    assert _flag("ACCELERATE_USE_FSDP")
    assert fsdp_options() == {"reshard_after_forward": True}
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "true")
    assert type(fsdp_options()["offload_policy"]).__name__ == "CPUOffloadPolicy"
