"""DataLoader workers: the default follows the data and the machine, and the number of workers never changes what
a run computes (every item is seeded by (seed, epoch, index), in whichever process loads it)."""

import os

import pytest
import torch
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


def test_two_workers_persistent_or_not_give_the_weights_of_none(tmp_path):
    """Three epochs (the crops depend on the epoch's item seeds): persistent workers, alive since the first epoch,
    must still see each new epoch."""
    common = ["--preset", "demo_etmae_teacher", "--dataset", "synthetic_cxr", "--dataset_kwargs",
              '{"num_images": 32, "image_size": 32}', "--per_device_train_batch_size", "8", "--max_steps", "9",
              "--crop_scale_min", "0.5", "--report_to", "none", "--figures", "False", "--progress_bar", "False",
              "--seed", "2"]
    runs = {"0": ["--dataloader_num_workers", "0"], "2": ["--dataloader_num_workers", "2"],
            "2_fresh": ["--dataloader_num_workers", "2", "--dataloader_persistent_workers", "false"]}
    infos = {name: pretrain.main([*common, *extra, "--output_dir", str(tmp_path / name)]) for name, extra in runs.items()}
    assert infos["0"]["hyperparameters"]["steps_per_epoch"] == 3  # 9 steps: three epochs
    assert [infos[n]["hyperparameters"]["dataloader_persistent_workers"] for n in runs] == [False, True, False]
    weights = {name: load_file(str(tmp_path / name / "final" / "model.safetensors")) for name in runs}
    for name in ("2", "2_fresh"):
        assert weights[name].keys() == weights["0"].keys()
        assert all((weights[name][k] == weights["0"][k]).all() for k in weights["0"]), name


def test_persistent_workers_read_each_new_epoch():
    """The epoch reaches a worker process that was started before ``set_epoch`` (a stale epoch would repeat the
    first epoch's crops every epoch)."""
    from torch.utils.data import DataLoader

    from medmae.training.dataloading import EpochSeededDataset

    items = EpochSeededDataset(list(range(4)), seed=0)
    items.dataset = _SeedProbe()
    loader = DataLoader(items, batch_size=4, num_workers=1, persistent_workers=True)
    seen = []
    for epoch in range(3):
        items.set_epoch(epoch)
        seen.append(next(iter(loader)).tolist())
    assert seen[0] != seen[1] != seen[2] and seen[0] != seen[2]
    fresh = EpochSeededDataset(_SeedProbe(), seed=0)
    for epoch in range(3):  # the same draws as in the training process itself
        fresh.set_epoch(epoch)
        assert [fresh[i] for i in range(4)] == seen[epoch]


class _SeedProbe:
    """Returns a draw of the torch RNG as seeded for the item."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return int(torch.randint(0, 2**30, ()))
