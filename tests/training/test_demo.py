"""``medmae demo --quick``: the whole pipeline end to end, as a user runs it (a subprocess)."""

import json
import os
import subprocess
import sys

import pytest

from medmae.training import demo_readme
from medmae.training.demo import STAGES, DemoArguments, results_markdown, stage_argv
from medmae.training.reproduce_etmae import ETMAE_BUDGETS, SYNTHETIC_TEACHERS


def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "medmae.training.cli", "demo", "--quick", "--output_dir", str(out),
                             "--progress_bar", "False"], capture_output=True, text=True, timeout=280,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(out / "results.md") in result.stdout
    text = (out / "results.md").read_text()
    for header in ("mAUC(%)", "Dice(%) ↑ | Jaccard(%) ↑ | HD95 (medpy) ↓ | ASD ↓", "ACC(%) ↑ | PRE(%) ↑ | REC(%) ↑",
                   "distilled from the teacher", "without distillation"):
        assert header in text
    payload = json.loads((out / "results.json").read_text())
    assert set(payload["runs"]) == {name for name, _ in STAGES}
    assert payload["runs"]["etmae_cls_distilled"]["eval_split"] == "test"
    for name, _ in STAGES:
        run = out / "runs" / name
        assert (run / "final" / "model.safetensors").is_file() and (run / "run_info.json").is_file()
        assert (run / "figures" / "loss_curves.png").is_file()
    assert (out / "runs" / "sdda_pretrain" / "figures" / "reconstructions.png").is_file()
    assert (out / "runs" / "sdda_finetune" / "figures" / "segmentation_overlays.png").is_file()
    assert (out / "runs" / "etmae_cls_distilled" / "figures" / "roc_curves.png").is_file()
    student = json.loads((out / "runs" / "etmae_student_distilled" / "run_info.json").read_text())
    assert student["task"] == "distillation" and student["teacher"] == "etmae_teacher"
    if payload["hub"]:
        for folder in payload["hub"]:
            names = set(os.listdir(folder))
            assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"} <= names
    else:
        assert payload["hub_note"]
    assert set(payload["stage_seconds"]) == {"synthetic_sets", "training_stages_wall", "baselines_and_export",
                                             *payload["runs"]}
    for index in range(1, len(STAGES) + 3):
        assert result.stdout.count(f"[{index}/{len(STAGES) + 2}]") == 1, result.stdout
    assert results_markdown(payload) == text
    with pytest.raises(ValueError, match="smoke run"):
        demo_readme.recorded(payload)


def test_demo_stages_are_ordinary_script_command_lines(tmp_path):
    runs = tmp_path / "runs"
    argv = stage_argv("etmae_student_distilled", DemoArguments(), runs, "full")
    assert argv[argv.index("--teacher") + 1] == str(runs / "etmae_teacher")
    argv = stage_argv("sdda_finetune", DemoArguments(), runs, "full")
    assert argv[argv.index("--transfer") + 1] == "encoder_decoder"
    assert argv[argv.index("--init_from") + 1] == str(runs / "sdda_pretrain")


def test_demo_is_seed_0_of_the_reproduce_etmae_default_budget(tmp_path):
    """The demo's ETMAE stages are the measured sweep's: teacher S of ``medmae reproduce etmae`` (default budget)."""
    runs = tmp_path / "runs"
    teacher = stage_argv("etmae_teacher", DemoArguments(), runs, "full")
    overrides = json.loads(teacher[teacher.index("--config_overrides") + 1])
    assert overrides == {**SYNTHETIC_TEACHERS["S"], "image_size": ETMAE_BUDGETS["default"]["image_size"]}
    assert teacher[teacher.index("--num_train_epochs") + 1] == str(ETMAE_BUDGETS["default"]["teacher_epochs"])
    plain = stage_argv("etmae_student_mae", DemoArguments(), runs, "full")
    assert plain[plain.index("--task") + 1] == "pretraining"


def test_readme_demo_tables_are_generated_from_the_recorded_results(tmp_path):
    assert demo_readme.check() is None
    record = json.loads(demo_readme.RECORD.read_text())
    assert not record["quick"] and "hub" not in record
    record["runs"]["etmae_cls_mae"]["metrics"]["mauc"] += 0.01  # a drifted number is caught
    drifted = tmp_path / "demo_results.json"
    drifted.write_text(json.dumps(record))
    assert "differ" in demo_readme.check(drifted)
