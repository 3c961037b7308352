"""One run per output folder: a lock, no silent mixing with another run's files, no untrained exports."""

import json
import os
import socket
import subprocess
import sys

import pytest

from medmae.training import finetune, pretrain
from medmae.training.output_folder import LOCK_FILE, OutputFolder, OutputFolderError

RUN = ["--preset", "demo_etmae_teacher", "--dataset", "synthetic_cxr", "--dataset_kwargs",
       '{"num_images": 48, "image_size": 32}', "--per_device_train_batch_size", "8", "--max_steps", "2",
       "--report_to", "none",
       "--figures", "False", "--progress_bar", "False"]


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path):
    with OutputFolder(tmp_path / "run", resume=False, overwrite=False):
        lock = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
        assert lock["pid"] == os.getpid() and lock["host"] == socket.gethostname()
        with pytest.raises(OutputFolderError, match=rf"in use by another run \(process {os.getpid()} on host"):
            pretrain.main([*RUN, "--output_dir", str(tmp_path / "run")])
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_a_stale_lock_of_a_dead_process_is_replaced(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    info = pretrain.main([*RUN, "--output_dir", str(folder)])
    assert info["hyperparameters"]["total_steps"] == 2 and not (folder / LOCK_FILE).exists()
    assert "stale lock" in capsys.readouterr().out


def test_a_folder_of_another_run_needs_resume_or_overwrite(tmp_path):
    folder = tmp_path / "run"
    pretrain.main([*RUN, "--output_dir", str(folder)])
    with pytest.raises(OutputFolderError, match="is not empty .*--resume_from_checkpoint latest.*--overwrite"):
        pretrain.main([*RUN, "--output_dir", str(folder), "--seed", "1"])
    (folder / "notes.txt").write_text("mine")
    info = pretrain.main([*RUN, "--output_dir", str(folder), "--seed", "1", "--overwrite"])
    assert info["seed"] == 1 and (folder / "notes.txt").read_text() == "mine"  # only the run's outputs replaced
    assert [p.name for p in (folder / "checkpoints").iterdir()] == ["step_2"]


def test_zero_steps_are_refused_instead_of_exporting_an_untrained_model(tmp_path):
    with pytest.raises(ValueError, match="0 optimizer steps: nothing would be trained"):
        without_max_steps = [a for i, a in enumerate(RUN) if "--max_steps" not in RUN[max(i - 1, 0):i + 1]]
        pretrain.main([*without_max_steps, "--num_train_epochs", "0", "--output_dir", str(tmp_path / "run")])
    assert not (tmp_path / "run" / "final").exists()


def test_finetune_needs_init_from_or_an_explicit_from_scratch(tmp_path):
    args = ["--preset", "demo_etmae", *RUN[2:], "--output_dir", str(tmp_path / "ft")]
    with pytest.raises(ValueError, match="give --init_from .* or --from_scratch"):
        finetune.main(args)
    with pytest.raises(ValueError, match="contradict"):
        finetune.main([*args, "--from_scratch", "--init_from", str(tmp_path)])
    info = finetune.main([*args, "--from_scratch"])
    assert info["hyperparameters"]["from_scratch"] is True


def test_a_full_disk_names_the_file_and_the_remedy_and_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    import torch

    from medmae.training.output_folder import DiskFullError

    def full(*args, **kwargs):  # what torch's zip writer says on a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:858] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    out = tmp_path / "run"
    with pytest.raises(DiskFullError, match=r"writing a checkpoint to .*step_2 failed: the disk is full .*MiB free.*"
                                            r"--save_total_limit.*--resume_from_checkpoint latest"):
        pretrain.main([*RUN, "--output_dir", str(out)])
    assert not (out / "checkpoints" / "step_2").exists() and not (out / LOCK_FILE).exists()


def test_a_dead_dataloader_worker_says_why_and_what_to_do():
    from medmae.training.dataloading import worker_errors

    class Dying:
        def __iter__(self):
            yield 1
            raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")

    batches = worker_errors(Dying(), num_workers=8)
    assert next(batches) == 1
    with pytest.raises(RuntimeError, match=r"worker process died .*--dataloader_num_workers 8.*shared memory.*"
                                          r"--resume_from_checkpoint latest"):
        next(batches)


def test_an_item_that_fails_to_load_is_named():
    import datasets

    from medmae.training.dataloading import EpochSeededDataset

    def broken(batch):
        raise OSError("cannot identify image file")

    data = datasets.Dataset.from_dict({"image_id": ["a.png", "b.png"], "x": [1, 2]}).with_transform(broken)
    with pytest.raises(OSError) as info:
        EpochSeededDataset(data, seed=0)[1]
    assert "training item 1 (epoch 0); image_id 'b.png'" in "".join(info.value.__notes__)


def test_report_to_is_validated_not_silently_dropped():
    from medmae.training.runtime import trackers

    assert trackers("none") is None and trackers("") is None
    assert trackers("tensorboard") == ["tensorboard"]
    with pytest.raises(ValueError, match="unknown tracker.*'tensorbord'.*wandb"):
        trackers("tensorbord")
    try:
        import wandb  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="wandb not installed"):
            trackers("tensorboard,wandb")  # 0.1 accepted it and logged nothing


def test_only_the_main_process_writes_the_split_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    from medmae.training.dataloading import load_splits, split_record

    class Data:
        dataset, data_root, dataset_kwargs, split_seed, manifest = "synthetic_cxr", None, '{"num_images": 20}', 0, None
        max_train_samples = max_eval_samples = None

    record = split_record(load_splits(Data()), Data(), tmp_path)
    assert record["manifest_sha256"] is None and not (tmp_path / "split_manifest.json").exists()
    monkeypatch.setenv("RANK", "0")
    assert split_record(load_splits(Data()), Data(), tmp_path)["manifest_sha256"]
