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
       '{"num_images": 48, "image_size": 32}', "--batch_size", "8", "--max_steps", "2", "--report_to", "none",
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
    with pytest.raises(OutputFolderError, match="is not empty .*--resume latest.*--overwrite"):
        pretrain.main([*RUN, "--output_dir", str(folder), "--seed", "1"])
    (folder / "notes.txt").write_text("mine")
    info = pretrain.main([*RUN, "--output_dir", str(folder), "--seed", "1", "--overwrite"])
    assert info["seed"] == 1 and (folder / "notes.txt").read_text() == "mine"  # only the run's outputs replaced
    assert [p.name for p in (folder / "checkpoints").iterdir()] == ["step_2"]


def test_zero_steps_are_refused_instead_of_exporting_an_untrained_model(tmp_path):
    with pytest.raises(ValueError, match="0 optimizer steps: nothing would be trained"):
        without_max_steps = [a for i, a in enumerate(RUN) if "--max_steps" not in RUN[max(i - 1, 0):i + 1]]
        pretrain.main([*without_max_steps, "--num_epochs", "0", "--output_dir", str(tmp_path / "run")])
    assert not (tmp_path / "run" / "final").exists()


def test_finetune_needs_init_from_or_an_explicit_from_scratch(tmp_path):
    args = ["--preset", "demo_etmae", *RUN[2:], "--output_dir", str(tmp_path / "ft")]
    with pytest.raises(ValueError, match="give --init_from .* or --from_scratch"):
        finetune.main(args)
    with pytest.raises(ValueError, match="contradict"):
        finetune.main([*args, "--from_scratch", "--init_from", str(tmp_path)])
    info = finetune.main([*args, "--from_scratch"])
    assert info["hyperparameters"]["from_scratch"] is True
