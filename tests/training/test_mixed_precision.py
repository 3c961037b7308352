"""--mixed_precision auto follows the accelerate config a run was launched with; explicit values win."""

import pytest

from medmae.training.runtime import resolve_mixed_precision


def test_auto_takes_the_accelerate_launch_setting(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert resolve_mixed_precision("auto", cpu=True, num_parameters=10) == "bf16"
    assert resolve_mixed_precision("no", cpu=True, num_parameters=10) == "no"  # an explicit choice wins


def test_auto_without_a_launcher_setting_keeps_fp32_for_tiny_cpu_models(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert resolve_mixed_precision("auto", cpu=True, num_parameters=10) == "no"


def test_a_launcher_asking_for_fp16_on_the_cpu_is_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(ValueError, match="fp16 mixed precision needs a CUDA device"):
        resolve_mixed_precision("auto", cpu=True, num_parameters=10)
