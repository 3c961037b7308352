"""The scripts' arguments: transformers.TrainingArguments names with the old ones as aliases, choices from
``Literal`` types, and each command's own ``--help`` (without torch)."""

import dataclasses
import re
import subprocess
import sys
from typing import get_args, get_type_hints

import pytest
from transformers import HfArgumentParser

from medmae.modeling.image_processing_medmae import NORMALIZATION_PRESETS
from medmae.training import cli
from medmae.training.args import (
    DESCRIPTIONS,
    ONLY_FOR,
    SCRIPT_DATACLASSES,
    TRAIN_DATACLASSES,
    ModelArguments,
    args_to_dict,
    parse_args,
    renamed_fields,
    script_fields,
)
from medmae.training.checkpointing import CheckpointError, check_resume_arguments
from medmae.training.tasks.etmae import teacher_normalization_choices

SCRIPTS = ("pretrain", "finetune", "evaluate")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_flag_has_help_text(script):
    missing = [f.name for f in script_fields(script) if not f.metadata.get("help")]
    assert not missing, f"{script}: flags without help: {missing}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_command_has_its_own_help(script, capsys):
    assert cli.main([script, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: medmae {script} ") and DESCRIPTIONS[script][:40] in " ".join(out.split())
    listed = set(re.findall(r"^  (--\w+)", out, re.MULTILINE))
    assert {"--" + f.name for f in script_fields(script)} <= listed
    others = {"--" + f.name for other in SCRIPTS if other != script for f in script_fields(other)}
    assert not (others & listed) - {"--" + f.name for f in script_fields(script)}
    if script != "evaluate":
        assert "{cosine,poly,constant}" in out and "--learning_rate" in out and "(formerly --lr)" in out
        assert set(ONLY_FOR[script]) <= {f.name for f in script_fields(script)}
    else:
        assert "{train,validation,test}" in out and "--per_device_eval_batch_size" in out


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_imports_neither_torch_nor_transformers(script):
    # what the console script does: sys.argv[0] is .../bin/medmae
    code = (f"import sys; sys.argv = ['medmae', {script!r}, '--help']; from medmae.training.cli import main; "
            "code = main(); heavy = sorted({'torch', 'transformers', 'datasets'} & set(sys.modules)); "
            "assert not heavy, heavy; sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: medmae {script} ")


def test_old_names_still_work_with_a_note(tmp_path, capsys):
    _, _, opt, run = parse_args("finetune", ["--lr", "0.5", "--num-epochs", "3", "--batch_size=4", "--scheduler",
                                             "poly", "--resume", "latest", "--metric_for_best", "auc"])
    assert (opt.learning_rate, opt.num_train_epochs, opt.per_device_train_batch_size, opt.lr_scheduler_type) == \
        (0.5, 3, 4, "poly")
    assert (run.resume_from_checkpoint, run.metric_for_best_model) == ("latest", "auc")
    err = capsys.readouterr().err
    assert "medmae finetune: --lr is deprecated, use --learning_rate" in err and len(err.splitlines()) == 6
    config = tmp_path / "old.yaml"
    config.write_text("num_workers: 2\nlr: 0.25\n")
    _, data, opt, _ = parse_args("pretrain", ["--config", str(config)])
    assert (data.dataloader_num_workers, opt.learning_rate) == (2, 0.25)
    assert f"{config}: num_workers is deprecated, use dataloader_num_workers" in capsys.readouterr().err
    (args,) = parse_args("evaluate", ["--model", "run", "--batch_size", "3", "--num_workers", "1"])
    assert (args.per_device_eval_batch_size, args.dataloader_num_workers) == (3, 1)
    assert renamed_fields() == {"lr": "learning_rate", "num_epochs": "num_train_epochs",
                                "batch_size": "per_device_train_batch_size", "scheduler": "lr_scheduler_type",
                                "resume": "resume_from_checkpoint", "metric_for_best": "metric_for_best_model",
                                "num_workers": "dataloader_num_workers"}


def test_bad_choices_and_other_scripts_flags_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args("pretrain", ["--lr_scheduler_type", "linear"])
    assert exit_.value.code == 2 and "invalid choice: 'linear'" in capsys.readouterr().err
    for argv in (["--transfer", "encoder"], ["--task", "classification"]):
        with pytest.raises(SystemExit):
            parse_args("pretrain", argv)
    with pytest.raises(SystemExit):
        parse_args("finetune", ["--teacher", "t.pth"])
    config = tmp_path / "bad.yaml"
    config.write_text("lr_scheduler_type: linear\n")
    with pytest.raises(ValueError, match="--lr_scheduler_type 'linear': choose one of cosine, poly, constant"):
        parse_args("finetune", ["--config", str(config)])
    config.write_text("mask_ratio: 0.5\n")
    with pytest.raises(ValueError, match=r"unknown finetune argument\(s\) \['mask_ratio'\]"):
        parse_args("finetune", ["--config", str(config)])
    assert cli.main(["pretrain", "--mixed_precision", "fp8"]) == 2


def test_a_checkpoint_written_under_the_old_names_resumes(tmp_path):
    current = args_to_dict(*parse_args("pretrain", ["--preset", "demo"]))
    old = {v: k for k, v in renamed_fields().items()}
    saved = {old.get(k, k): v for k, v in current.items() if k != "warmup_steps"}  # a field added with the names
    assert "lr" in saved and "learning_rate" not in saved
    check_resume_arguments(saved, current, tmp_path)  # no error
    with pytest.raises(CheckpointError, match=r"--learning_rate: checkpoint 0\.002, now 0\.5"):
        check_resume_arguments(saved, {**current, "learning_rate": 0.5}, tmp_path)


def test_the_dataclasses_stay_hf_argument_parser_dataclasses():
    argv = ["--lr", "0.1", "--lr_scheduler_type", "poly", "--figures", "false", "--label_columns", "a", "b",
            "--family", "etmae"]
    theirs = HfArgumentParser(TRAIN_DATACLASSES).parse_args_into_dataclasses(argv, look_for_args_file=False)
    ours = parse_args("pretrain", argv)
    assert [dataclasses.asdict(group) for group in theirs] == [dataclasses.asdict(group) for group in ours]
    assert SCRIPT_DATACLASSES["pretrain"] == TRAIN_DATACLASSES


def test_literal_choices_match_what_the_code_accepts():
    types_ = get_type_hints(ModelArguments)  # Optional[Literal[...]]
    assert list(get_args(get_args(types_["teacher_normalization"])[0])) == teacher_normalization_choices()
    assert set(get_args(get_args(types_["normalization"])[0])) == set(NORMALIZATION_PRESETS)
