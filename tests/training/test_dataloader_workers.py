"""DataLoader workers: the default follows the data and the machine, and the number of workers never changes what
a run computes (every item is seeded by (seed, epoch, index), in whichever process loads it)."""

import os

import pytest
from safetensors.torch import load_file

from medmae.training import pretrain
from medmae.training.dataloading import MAX_AUTO_WORKERS, resolve_num_workers


def test_explicit_value_wins_and_negative_is_refused():
    assert resolve_num_workers(3, "busi", 1) == 3
    assert resolve_num_workers(0, "chestxray14", 1) == 0
    with pytest.raises(ValueError, match="--dataloader_num_workers must be 0 or more, got -1"):
        resolve_num_workers(-1, "busi", 1)


def test_default_is_none_for_generated_sets_and_the_spare_cpus_for_files(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert resolve_num_workers(None, "synthetic_cxr", 1) == 0
    assert resolve_num_workers(None, "chestxray14", 1) == MAX_AUTO_WORKERS  # 16 - 1, capped
    assert resolve_num_workers(None, "busi", 4) == 3  # 16 CPUs / 4 processes - 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert resolve_num_workers(None, "imagefolder", 2) == 0  # one core per process: load in the process


def test_two_workers_give_the_weights_of_none(tmp_path):
    common = ["--preset", "demo_etmae_teacher", "--dataset", "synthetic_cxr", "--dataset_kwargs",
              '{"num_images": 48, "image_size": 32}', "--per_device_train_batch_size", "8", "--max_steps", "4",
              "--crop_scale_min", "0.5", "--report_to", "none", "--figures", "False", "--progress_bar", "False",
              "--seed", "2"]
    for workers in (0, 2):
        pretrain.main([*common, "--dataloader_num_workers", str(workers), "--output_dir", str(tmp_path / str(workers))])
    zero = load_file(str(tmp_path / "0" / "final" / "model.safetensors"))
    two = load_file(str(tmp_path / "2" / "final" / "model.safetensors"))
    assert zero.keys() == two.keys() and all((zero[k] == two[k]).all() for k in zero)
