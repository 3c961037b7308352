"""``medmae reproduce sdda``: the ablation runner end to end (--quick), continuation, and bad input."""

import json
import shutil

import pytest

from medmae.training import cli, reproduce, reproduce_sdda


@pytest.fixture(scope="module")
def quick_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "sdda"
    result = reproduce.main(["sdda", "--quick", "--output_dir", str(out)])
    return out, result


def test_quick_sweep_writes_the_papers_layout(quick_sweep):
    out, result = quick_sweep
    assert (out / "ablation.md").is_file() and (out / "ablation.json").is_file() and (out / "mask_ratio.png").is_file()
    saved = json.loads((out / "ablation.json").read_text())
    assert list(saved["rows"]) == [name for name, _, _ in reproduce_sdda.SDDA_ROWS]
    assert all(len(per["dice"]) == 2 for per in saved["rows"].values())  # two seeds per row
    assert set(saved["mask_ratio"]) == {"0.4", "0.6"} and saved["distance_convention"] == "medpy"
    assert {v["claim"] for v in saved["verdicts"]} == {c for c, _, _ in reproduce_sdda.SDDA_CLAIMS}
    assert all(v["status"] for v in saved["verdicts"]) and saved["setting"]["preset"] == "quick"
    text = (out / "ablation.md").read_text()
    assert "Only Encoder (DAT & SD)" in text and "HD95 (medpy)" in text and " ± " in text
    # each pre-training is shared: 2 seeds x (dat, dat_sd at 0.6, dat_sd at 0.4); 2 x (5 rows + 1 ratio) fine-tunings
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert sum(n.startswith("pretrain_") for n in runs) == 6 and sum(n.startswith("finetune_") for n in runs) == 12
    dat = json.loads((out / "runs" / "pretrain_dat_mr60_seed0" / "run_info.json").read_text())
    assert json.loads(dat["hyperparameters"]["config_overrides"])["sd_weight"] == 0.0
    # the rows really differ in their starting weights
    ft = json.loads((out / "runs" / "finetune_dat_sd_encoder_seed1" / "run_info.json").read_text())
    assert ft["transfer"]["transfer"] == "encoder" and ft["seed"] == 1


def test_a_partial_sweep_continues_and_another_sweep_is_refused(quick_sweep, tmp_path):
    out, result = quick_sweep
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "ablation.md").unlink()
    shutil.rmtree(copy / "runs" / "finetune_scratch_seed1")  # as if interrupted before this run
    again = reproduce.main(["sdda", "--quick", "--output_dir", str(copy)])
    assert (copy / "ablation.md").is_file()
    kept = {k: v for k, v in result["rows"].items() if not k.startswith("From scratch")}
    assert {k: v for k, v in again["rows"].items() if not k.startswith("From scratch")} == kept  # read back
    with pytest.raises(ValueError, match="other settings"):
        reproduce.main(["sdda", "--quick", "--sd_weight", "0.5", "--output_dir", str(copy)])


@pytest.mark.parametrize("argv, message", [
    (["sdda", "--dataset", "mnist"], "unknown --dataset 'mnist'"),
    (["sdda", "--dataset", "busi"], "needs --data_root"),
    (["sdda", "--dataset", "busi", "--data_root", "/nonexistent/BUSI"], "no such folder"),
    (["sdda", "--quick", "--mask_ratios"], "--mask_ratios/--mask-ratios: expected at least one argument"),
    (["sdda", "--quick", "--mask_ratios", "0.6", "1.2"], "must lie in (0, 1)"),
    (["sdda", "--quick", "--seeds", "0", "0"], "distinct"),
    (["sdda", "--preset", "huge"], "unknown --preset"),
    (["etmae2"], "unknown method"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert cli.main(["reproduce", *argv, "--output_dir", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def etmae_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "etmae"
    return out, reproduce.main(["etmae", "--quick", "--teachers", "S", "--finetune_teachers", "True",
                                "--output_dir", str(out)])


def test_etmae_quick_sweep_writes_table_2_with_probes_and_verdicts(etmae_sweep):
    from medmae.training import reproduce_etmae

    out, result = etmae_sweep
    saved = json.loads((out / "ablation.json").read_text())
    assert list(saved["rows"]) == ["Student, plain MAE (no teacher)", "Student, distilled from teacher S",
                                   "Student from scratch (no pre-training)", "Teacher S"]
    for entry in saved["rows"].values():
        assert len(entry["finetune"]) == len(entry["probe"]) == 2 and all(0 <= v <= 1 for v in entry["probe"])
    # one teacher pre-training shared by both seeds; the distilled students name it
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert [n for n in runs if n.startswith("pretrain_teacher")] == ["pretrain_teacher_S"]
    student = json.loads((out / "runs" / "pretrain_student_from_S_seed1" / "run_info.json").read_text())
    assert student["task"] == "distillation" and student["teacher"] == "pretrain_teacher_S"
    plain = json.loads((out / "runs" / "pretrain_student_mae_seed1" / "run_info.json").read_text())
    assert plain["task"] == "pretraining" and plain["num_parameters"] < student["num_parameters"]  # no projection
    claims = {v["claim"] for v in saved["verdicts"]}
    assert "distillation from teacher S beats plain MAE" in claims
    assert all(v["n_seeds"] == 2 and v["significance_threshold"] is not None for v in saved["verdicts"])
    text = (out / "ablation.md").read_text()
    assert "mAUC(%) linear probe" in text and "paired t-test" in text
    assert reproduce_etmae.ETMAE_BUDGETS["default"]["seeds"] == (0, 1, 2)


def test_linear_probe_separates_informative_features():
    import numpy as np

    from medmae.training.probe import linear_probe

    rng = np.random.default_rng(0)
    labels = (rng.random((200, 2)) < 0.5).astype(np.float32)
    informative = labels + 0.3 * rng.standard_normal((200, 2))
    noise = rng.standard_normal((200, 2))
    good = linear_probe((informative[:150], labels[:150]), (informative[150:], labels[150:]), ["a", "b"])
    bad = linear_probe((noise[:150], labels[:150]), (noise[150:], labels[150:]), ["a", "b"])
    assert good["mauc"] > 0.95 and 0.3 < bad["mauc"] < 0.7 and set(good) == {"mauc", "auc/a", "auc/b"}


def test_paired_t_test_verdicts():
    from medmae.training.sweep import verdict

    assert verdict("c", [0.9, 0.8, 0.85], [0.7, 0.6, 0.66], "m")["status"] == "supported"
    assert verdict("c", [0.6, 0.5, 0.55], [0.7, 0.6, 0.66], "m")["status"] == "contradicted"
    assert verdict("c", [0.9, 0.6, 0.7], [0.7, 0.8, 0.66], "m")["status"].startswith("not supported")
    assert verdict("c", [0.9], [0.7], "m")["status"].startswith("not testable")
    assert verdict("c", [3.0, 2.0, 2.5], [5.0, 4.0, 4.4], "hd95", lower_is_better=True)["status"] == "supported"


@pytest.mark.parametrize("argv, message", [
    (["etmae", "--dataset", "mimic"], "unknown --dataset 'mimic'"),
    (["etmae", "--dataset", "chestxray14"], "needs --data_root"),
    (["etmae", "--teachers", "L"], "--teachers must name sizes"),
    (["etmae", "--teacher_paths", "S"], "NAME=PATH"),
    (["etmae", "--teacher_paths", "S=/nonexistent/teacher.pth"], "no such file"),
    (["etmae", "--preset", "paper"], "--preset paper runs the paper's recipe on chestxray14 or chexpert"),
])
def test_etmae_bad_input_is_refused_before_anything_is_written(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert cli.main(["reproduce", *argv, "--output_dir", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_pth_teacher_needs_its_statistics(tmp_path, capsys):
    pth = tmp_path / "vit-s_CXR_0.3M_mae.pth"
    pth.write_bytes(b"not read")
    assert cli.main(["reproduce", "etmae", "--teacher_paths", f"S={pth}", "--output_dir", str(tmp_path / "o")]) == 2
    assert "--teacher_normalization" in capsys.readouterr().err
