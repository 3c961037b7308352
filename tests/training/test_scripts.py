"""The Accelerate scripts and the ``medmae`` command on tiny synthetic runs (in-process, one CPU thread)."""

import json
from pathlib import Path

import pytest
import torch

from medmae.training import cli, evaluate, finetune, pretrain
from medmae.training.args import parse_args
from medmae.training.checkpointing import checkpoint_dirs
from medmae.training.engine import NonFiniteLossError
from medmae.training.presets import preset_values

FAST = ["--report_to", "none", "--progress_bar", "False", "--seed", "0", "--logging_steps", "1"]
US = ["--dataset", "synthetic_ultrasound", "--dataset_kwargs", '{"num_images": 40, "image_size": 64}']
CXR = ["--dataset", "synthetic_cxr", "--dataset_kwargs", '{"num_images": 48, "image_size": 32}']
RUN_INFO_KEYS = {"family", "task", "dataset", "split", "uncertainty_policy", "hyperparameters", "metrics",
                 "eval_split", "git_commit", "medmae_version", "seed", "wall_time_s", "num_parameters"}


@pytest.fixture(scope="module")
def sdda_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdda")
    pre = pretrain.main(["--preset", "demo", *US, "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
                         *FAST, "--output_dir", str(root / "pre")])
    ft = finetune.main(["--preset", "demo", *US, "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
                        "--crop_scale_min", "0.6", "--init_from", str(root / "pre"), *FAST,
                        "--output_dir", str(root / "ft")])
    return root, pre, ft


def test_presets_are_defaults_below_flags_and_config_files(tmp_path):
    model, data, opt, run = parse_args("finetune", ["--preset", "busi", "--num_train_epochs", "3", "--output_dir", "x"])
    assert (opt.optimizer, opt.learning_rate, opt.momentum, opt.lr_scheduler_type, opt.per_device_train_batch_size) == \
        ("sgd", 0.01, 0.9, "poly", 12)
    assert opt.num_train_epochs == 3 and model.family == "sdda_mae" and data.dataset == "busi"
    model, _, opt, _ = parse_args("finetune", ["--preset", "chestxray14"])
    assert (opt.layer_decay, opt.blr, opt.weight_decay, model.drop_path_rate) == (0.55, 2.5e-4, 0.05, 0.2)
    assert preset_values("pretrain", "siim-acr")["learning_rate"] == 2e-4
    config = tmp_path / "args.yaml"
    config.write_text("preset: siim_acr\nnum_train_epochs: 7\nper_device_train_batch_size: 4\n")
    _, data, opt, _ = parse_args("pretrain", ["--config", str(config), "--per_device_train_batch_size", "2"])
    assert (data.dataset, opt.num_train_epochs, opt.per_device_train_batch_size, opt.learning_rate) == \
        ("siim_acr", 7, 2, 2e-4)


def test_unknown_preset_is_a_clear_usage_error(capsys):
    with pytest.raises(ValueError, match="valid presets: .*busi.*chestxray14"):
        parse_args("pretrain", ["--preset", "imagenet"])
    assert cli.main(["finetune", "--preset", "imagenet"]) == 2
    err = capsys.readouterr().err
    assert "unknown finetune preset 'imagenet'" in err and "siim_acr" in err


def test_missing_dataset_folder_names_the_folder(tmp_path, capsys):
    missing = tmp_path / "no_such_busi"
    code = cli.main(["pretrain", "--preset", "busi", "--data_root", str(missing), "--model_preset", "tiny_test",
                     "--output_dir", str(tmp_path / "run"), *FAST])
    assert code == 2
    assert str(missing) in capsys.readouterr().err


def test_pretrain_finetune_run_folder_contract(sdda_runs):
    root, pre, ft = sdda_runs
    for run, info in (("pre", pre), ("ft", ft)):
        folder = root / run
        on_disk = json.loads((folder / "run_info.json").read_text())
        assert RUN_INFO_KEYS <= set(on_disk) and on_disk["family"] == "sdda_mae"
        assert (folder / "final" / "model.safetensors").is_file()
        assert (folder / "final" / "preprocessor_config.json").is_file()
        assert any(p.suffix == ".py" for p in (folder / "final").iterdir())  # remote code
        assert (folder / "metrics.json").is_file() and (folder / "metrics.md").is_file()
        assert checkpoint_dirs(folder) and (folder / "split_manifest.json").is_file()
        text = json.dumps(on_disk["hyperparameters"])
        assert str(root) not in text and "/tmp" not in text  # no absolute paths
        assert on_disk["split"]["kind"] == "seeded" and on_disk["split"]["manifest_sha256"]
    assert pre["task"] == "pretraining" and pre["eval_split"] == "validation"
    assert ft["task"] == "segmentation_classification" and ft["eval_split"] == "test"
    assert {"dice", "jaccard", "hd95", "asd", "accuracy", "precision", "recall"} <= set(ft["metrics"])
    assert ft["metric_for_best"] == "dice" and ft["best_step"] is not None
    assert ft["validation_metrics"]["step"] == ft["best_step"]  # chosen on validation, reported on test
    assert ft["source_checkpoint_sha256"] and ft["transfer"]["transfer"] == "encoder_decoder"
    figures = {Path(p).name for p in ft["figures"]} | {Path(p).name for p in pre["figures"]}
    assert {"loss_curves.png", "reconstructions.png", "segmentation_overlays.png"} <= figures
    assert "| Dice(%) ↑ | Jaccard(%) ↑ | HD95 (medpy) ↓ | ASD ↓ |" in (root / "ft" / "metrics.md").read_text()


def test_evaluate_command_writes_json_and_markdown(sdda_runs, tmp_path):
    root, _, ft = sdda_runs
    assert cli.main(["evaluate", "--model", str(root / "ft"), *US, "--split", "test", "--output_dir",
                     str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "metrics_test.json").read_text())
    assert payload["metrics"]["dice"] == pytest.approx(ft["metrics"]["dice"], abs=1e-6)
    assert "ACC(%)" in (tmp_path / "metrics_test.md").read_text()


def test_evaluate_defaults_to_the_runs_own_data_and_refuses_training_images(sdda_runs, tmp_path):
    root, _, ft = sdda_runs
    assert cli.main(["evaluate", "--model", str(root / "ft" / "final"), "--output_dir", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "metrics_test.json").read_text())
    assert payload["data_source"] == "the run's own" and payload["manifest"] == "split_manifest.json"
    assert payload["training_overlap"] == 0
    assert payload["metrics"]["dice"] == pytest.approx(ft["metrics"]["dice"], abs=1e-6)
    # the same generator with fewer images (what 0.1 silently did): its test split holds images the run trained on
    other = ["evaluate", "--model", str(root / "ft"), "--dataset", "synthetic_ultrasound", "--dataset_kwargs",
             '{"num_images": 20, "image_size": 64}', "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match=r"shares \d+ of \d+ images with the run's training split"):
        evaluate.main(other[1:])
    assert cli.main([*other, "--allow_training_overlap"]) == 0
    labelled = json.loads((tmp_path / "metrics_test.json").read_text())
    assert labelled["training_overlap"] > 0 and "WARNING" in (tmp_path / "metrics_test.md").read_text()


def test_evaluate_refuses_a_pretraining_checkpoint(sdda_runs):
    root, _, _ = sdda_runs
    with pytest.raises(ValueError, match="not a medmae fine-tuned model; a pre-training checkpoint"):
        evaluate.main(["--model", str(root / "pre")])


def test_distillation_on_nih_and_chexpert_together_with_per_source_teacher_statistics(tmp_path):
    from .fixtures import build_chexpert, build_nih

    nih, chexpert = tmp_path / "NIH", tmp_path / "CheXpert"
    nih.mkdir()
    chexpert.mkdir()
    build_nih(nih)
    build_chexpert(chexpert)
    common = ["--num_train_epochs", "1", "--per_device_train_batch_size", "2", *FAST, "--figures", "False"]
    pretrain.main(["--preset", "demo_etmae_teacher", *CXR, "--config_overrides", '{"hidden_size": 48}', *common,
                   "--output_dir", str(tmp_path / "teacher")])
    torch.save({"model": {}}, tmp_path / "teacher.pth")
    roots = ["--data_root", f"chestxray14={nih}", "--data_root", f"chexpert={chexpert}"]
    student_args = ["--preset", "demo_etmae_teacher", "--dataset", "chestxray14+chexpert", "--dataset_kwargs", "{}",
                    *roots, "--task", "distillation", "--image_size", "32", *common]
    with pytest.raises(ValueError, match="without input statistics.*--teacher_normalization medical_mae"):
        pretrain.main([*student_args, "--teacher", str(tmp_path / "teacher.pth"), "--output_dir", str(tmp_path / "x")])
    info = pretrain.main([*student_args, "--teacher", str(tmp_path / "teacher"), "--teacher_normalization",
                          "medical_mae", "--output_dir", str(tmp_path / "student")])
    assert info["dataset"] == "chestxray14+chexpert" and info["teacher_statistics"].startswith(
        "--teacher_normalization medical_mae: per source chestxray14 mean 0.5056")
    assert "distillation_loss" in info["metrics"] and info["split"]["kind"] == "official"
    manifest = json.loads((tmp_path / "student" / "split_manifest.json").read_text())
    assert {i.split(":")[0] for i in manifest["splits"]["train"]} == {"chestxray14", "chexpert"}
    config = json.loads((tmp_path / "student" / "final" / "config.json").read_text())
    assert set(config["teacher_source_statistics"]) == {"chestxray14", "chexpert"}
    nih_only = [a for a in student_args if a not in roots] + ["--dataset", "chestxray14", "--data_root", str(nih)]
    folder_default = pretrain.main([*nih_only, "--teacher", str(tmp_path / "teacher"), "--output_dir",
                                    str(tmp_path / "nih")])
    assert folder_default["teacher_statistics"].startswith("the teacher folder's config")


def test_etmae_teacher_distillation_and_multilabel_finetune(tmp_path):
    common = [*CXR, "--num_train_epochs", "1", "--per_device_train_batch_size", "8", *FAST, "--figures", "False"]
    teacher = pretrain.main(["--preset", "demo_etmae_teacher", "--config_overrides", '{"hidden_size": 48}', *common,
                             "--output_dir", str(tmp_path / "teacher")])
    student = pretrain.main(["--preset", "demo_etmae_teacher", "--teacher", str(tmp_path / "teacher"), "--task",
                             "distillation", *common, "--output_dir", str(tmp_path / "student")])
    assert teacher["task"] == "pretraining" and student["task"] == "distillation"
    assert student["teacher"] == "teacher" and len(student["teacher_sha256"]) == 64
    assert "distillation_loss" in student["metrics"]
    cls = finetune.main(["--preset", "demo_etmae", "--init_from", str(tmp_path / "student"), *common,
                         "--output_dir", str(tmp_path / "cls")])
    assert cls["task"] == "multilabel_classification" and 0.0 <= cls["metrics"]["mauc"] <= 1.0
    assert cls["hyperparameters"]["layer_decay"] == 0.75 and "auc/Effusion" in cls["metrics"]
    # the family table's weight-decay rule per stage, recorded as resolved
    assert [r["hyperparameters"]["weight_decay_rule"] for r in (teacher, student, cls)] == ["mae", "mae", "timm"]
    assert "etmae.blocks.0.attn.qkv.weight" not in cls["transfer"]["initialised"]


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "nan"
    argv = ["--preset", "demo_etmae_teacher", *CXR, "--num_train_epochs", "2", "--per_device_train_batch_size", "8",
            "--save_steps", "2", *FAST, "--debug_nan_at_step", "4", "--output_dir", str(out)]
    with pytest.raises(NonFiniteLossError, match=r"step 4.*Last good checkpoint: .*step_2"):
        pretrain.main(argv)
    assert [p.name for p in checkpoint_dirs(out)] == ["step_2"] and not (out / "final").exists()
    assert cli.main(["pretrain", *argv, "--output_dir", str(tmp_path / "nan_cli")]) == 1
    assert "non-finite training loss" in capsys.readouterr().err


def test_convert_command_timm_checkpoint(tmp_path):
    timm = pytest.importorskip("timm")
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=32, patch_size=8,
                               embed_dim=32, depth=2, num_heads=2, global_pool="avg", fc_norm=True)
    torch.save({"model": source.state_dict()}, tmp_path / "vit.pth")
    assert cli.main(["convert", "timm", str(tmp_path / "vit.pth"), str(tmp_path / "out"), "--num-heads", "2"]) == 0
    from medmae import ETMAEForImageClassification, MedMAEImageProcessor

    model = ETMAEForImageClassification.from_pretrained(tmp_path / "out").eval()
    processor = MedMAEImageProcessor.from_pretrained(tmp_path / "out")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x).logits, source.eval()(x), atol=1e-5, rtol=1e-5)
    assert processor.size == {"height": 32, "width": 32}


def test_cli_help_and_unknown_command(capsys):
    assert cli.main([]) == 0 and "demo" in capsys.readouterr().out
    assert cli.main(["frobnicate"]) == 2
    assert pretrain.main(["--list_presets"]) == {} and "chestxray14_teacher" in capsys.readouterr().out


def test_evaluate_tables_in_paper_layout():
    rows = {"ours": {"dice": 0.8575, "jaccard": 0.8031, "hd95": 10.87, "asd": 3.02, "accuracy": 0.9464,
                     "precision": 0.8421, "recall": 0.9242}}
    assert "| ours | 85.75 | 80.31 | 10.87 | 3.02 |" in evaluate.segmentation_table(rows, "SIIM-ACR")
    assert "| ours | 94.64 | 84.21 | 92.42 |" in evaluate.classification_table(rows, "SIIM-ACR")
    table = evaluate.mauc_table({"ETMAE": {"mauc": 0.781, "auc/Mass": 0.8}}, "NIH", {"ETMAE": 5_500_000})
    assert "| ETMAE | 5.5M | 78.10 |" in table and "| ETMAE | 80.00 |" in table


def test_busi_preset_on_a_real_format_folder(tmp_path):
    from .fixtures import build_busi

    build_busi(tmp_path / "busi")
    info = finetune.main(["--preset", "busi", "--data_root", str(tmp_path / "busi"), "--model_preset", "tiny_test",
                          "--per_device_train_batch_size", "2", "--num_train_epochs", "1", "--from_scratch", *FAST,
                          "--figures", "False", "--output_dir", str(tmp_path / "run")])
    assert info["dataset"] == "busi" and info["hyperparameters"]["optimizer"] == "sgd"
    assert info["hyperparameters"]["weight_decay_rule"] == "all"  # the preset: DAE-Former's SGD, every parameter
    assert info["hyperparameters"]["data_root"] == "<data_root>" and info["label_names"] == ["normal", "benign",
                                                                                              "malignant"]
    assert str(tmp_path) not in (tmp_path / "run" / "run_info.json").read_text()


def test_self_distillation_stays_alive_in_a_short_pretraining_run(tmp_path):
    data = ["--dataset", "synthetic_ultrasound", "--dataset_kwargs", '{"num_images": 96, "image_size": 32}']
    info = pretrain.main(["--preset", "demo", *data, "--image_size", "32", "--num_train_epochs", "4",
                          "--per_device_train_batch_size", "8", "--report_to", "none", "--progress_bar", "False",
                          "--logging_steps", "3", "--output_dir", str(tmp_path / "pre")])
    state = json.loads(sorted((tmp_path / "pre" / "checkpoints").glob("step_*"))[-1].joinpath(
        "trainer_state.json").read_text())
    train = [h for h in state["history"] if h["split"] == "train"]
    assert len(train) >= 10 and info["hyperparameters"]["total_steps"] >= 30
    assert all(h["sd_teacher_information"] > 0.05 for h in train)  # image-specific targets throughout
    assert all(h["sd_teacher_entropy"] < h["sd_entropy_max"] for h in train)
    assert all(h["sd_grad_ratio"] > 1e-3 for h in train)  # the SD term pulls on the encoder
    assert (tmp_path / "pre" / "figures" / "loss_curves.png").is_file()
    literal = pretrain.main(["--preset", "demo", *data, "--image_size", "32", "--max_steps", "3",
                             "--per_device_train_batch_size", "8", "--config_overrides", '{"sd_mode": "detached"}',
                             "--report_to", "none", "--progress_bar", "False", "--logging_steps", "1",
                             "--figures", "False", "--output_dir", str(tmp_path / "literal")])
    state = json.loads(sorted((tmp_path / "literal" / "checkpoints").glob("step_*"))[-1].joinpath(
        "trainer_state.json").read_text())
    assert literal["num_parameters"] > 0
    assert all(h["sd_teacher_information"] < 1e-3 for h in state["history"] if h["split"] == "train")


def test_sd_weight_warmup_ramps_over_the_lr_warmup(tmp_path):
    data = ["--dataset", "synthetic_ultrasound", "--dataset_kwargs", '{"num_images": 48, "image_size": 32}']
    # --warmup_steps 3 (transformers' name) wins over the preset's --warmup_ratio 0.1
    pretrain.main(["--preset", "demo", *data, "--image_size", "32", "--max_steps", "6", "--warmup_steps", "3",
                   "--per_device_train_batch_size", "8", "--sd_warmup", "True", "--config_overrides",
                   '{"sd_weight": 0.5}', "--report_to", "none", "--progress_bar", "False", "--logging_steps", "1",
                   "--figures", "False", "--output_dir", str(tmp_path / "pre")])
    state = json.loads((tmp_path / "pre" / "checkpoints" / "step_6" / "trainer_state.json").read_text())
    weights = [h["sd_weight"] for h in state["history"] if h["split"] == "train"]
    assert weights == pytest.approx([0.0, 0.5 / 3, 1.0 / 3, 0.5, 0.5, 0.5])
