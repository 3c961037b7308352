"""The accelerate config files the README points to parse with accelerate and say what their names say."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"


@pytest.mark.parametrize("name, distributed_type, processes, machines", [
    ("single_gpu", "NO", 1, 1), ("ddp_8gpu", "MULTI_GPU", 8, 1), ("ddp_2node", "MULTI_GPU", 16, 2)])
def test_accelerate_config_files_parse(name, distributed_type, processes, machines):
    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert str(config.distributed_type).split(".")[-1] == distributed_type
    assert (config.num_processes, config.num_machines, config.mixed_precision) == (processes, machines, "bf16")
    assert not config.use_cpu


def test_every_shipped_config_is_tested_and_none_is_a_refused_sharding_mode():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == ["ddp_2node", "ddp_8gpu", "single_gpu"]
    for path in CONFIGS.glob("*.yaml"):
        assert "FSDP" not in path.read_text() and "DEEPSPEED" not in path.read_text()
