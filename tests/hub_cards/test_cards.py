"""Model cards: front matter, model-index round trip, sections read from the model, processor and run."""

import re
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard

from medmae import ETMAEConfig, ETMAEForImageClassification, ETMAEForPreTraining, MedMAEImageProcessor
from medmae.hub_cards.cards import applied_hyperparameters, build_model_card, mean_sd
from medmae.hub_cards.catalogue import LABEL_CROSSWALK
from medmae.hub_cards.run_records import sanitize_run_info, strip_local_names
from medmae.hub_cards.zoo import ZOO, get_entry, parameter_count, related_models, zoo_table_markdown

LABELS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration"]
README = Path(__file__).resolve().parents[2] / "README.md"


def classifier():
    config = ETMAEConfig.from_preset("tiny_test", num_labels=len(LABELS), problem_type="multi_label_classification",
                                     id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    torch.manual_seed(0)
    return ETMAEForImageClassification(config).eval()


def processor():
    return MedMAEImageProcessor.from_preset("cxr", size={"height": 32, "width": 32})


RUN_INFO = {
    "family": "etmae", "task": "multilabel_classification", "dataset": "chexpert",
    "split": {"kind": "official", "manifest_sha256": "0" * 64},
    "uncertainty_policy": "mixed",
    "hyperparameters": {"lr": 0.00025, "epochs": 75, "batch_size": 256, "optimizer": "adamw", "layer_decay": 0.55,
                        "mask_ratio": 0.75, "precision": "bf16"},
    "metrics": {"macro_auroc": 0.8812, "accuracy": 0.7}, "eval_split": "validation",
    "metrics_over_seeds": {"macro_auroc": [0.8812, 0.8790, 0.8851]},
    "base_model": "medmae/etmae-vit-tiny", "source_checkpoint_sha256": "a" * 64, "git_commit": "0123abc",
}


def front_matter(text: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, "card has no YAML front matter"
    return yaml.safe_load(match.group(1))


def test_front_matter_is_yaml_and_metrics_round_trip(tmp_path):
    card = build_model_card(classifier(), processor(), RUN_INFO, repo_id="medmae/etmae-vit-tiny-p16-224-ft-chexpert")
    card.save(tmp_path / "README.md")
    meta = front_matter((tmp_path / "README.md").read_text())
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-classification"
    assert {"medical-imaging", "masked-autoencoder", "medmae", "etmae"} <= set(meta["tags"])
    assert meta["base_model"] == "medmae/etmae-vit-tiny"
    assert "datasets" not in meta  # "chexpert" is not a Hub dataset id; only an explicit dataset_hub_id is listed
    assert "knowledge-distillation" not in meta["tags"]  # this classifier was not distilled
    assert meta["license"] == "other" and meta["license_link"].startswith("https://")
    loaded = ModelCard.load(tmp_path / "README.md")
    results = {(r.metric_type, r.dataset_split): r.metric_value for r in loaded.data.eval_results}
    assert results == {("roc_auc", "validation"): pytest.approx(0.8818, abs=1e-4), ("accuracy", "validation"): 0.7}
    assert all(isinstance(value, float) for value in results.values())  # numbers, never "0.88 ± 0.003"
    names = {r.metric_type: r.metric_name for r in loaded.data.eval_results}
    assert names["roc_auc"] == "macro AUROC (mean over 3 seeds, sd 0.0031)"
    assert mean_sd([0.8812, 0.8790, 0.8851]) == "0.8818 ± 0.0031"
    with_id = build_model_card(classifier(), processor(), {**RUN_INFO, "dataset_hub_id": "stanfordmlgroup/chexpert"})
    assert front_matter(with_id.content)["datasets"] == ["stanfordmlgroup/chexpert"]


def test_body_is_read_from_model_processor_and_run():
    text = build_model_card(classifier(), processor(), RUN_INFO, repo_id="medmae/etmae-vit-tiny-p16-224-ft-chexpert").content
    n_params = sum(p.numel() for p in classifier().parameters())
    assert f"{n_params:,}" in text
    assert "mean = [0.5056, 0.5056, 0.5056], std = [0.252, 0.252, 0.252]" in text  # the processor's statistics
    assert "resized to 32 x 32" in text
    for name, value in RUN_INFO["hyperparameters"].items():  # the recipe comes from the run, not from the template
        if name != "mask_ratio":  # a pre-training setting: it did not apply to this fine-tuning
            assert re.search(rf"\| `{name}` \| {re.escape(str(value))} \|", text), name
    assert "| 2 | Effusion | Effusion | Pleural Effusion |" in text  # label table with the NIH / CheXpert names
    assert "| 3 | Infiltration | Infiltration | ≈ Lung Opacity |" in text
    assert "U-Ones for Atelectasis and Edema" in text  # CheXpert uncertainty policy
    assert "0" * 64 in text and "a" * 64 in text  # manifest and source checkpoint hashes
    assert "0.8818 ± 0.0031" in text and "| 3 |" in text
    assert "not for clinical decisions" in text and "not a medical device" in text
    assert "automatic report labeller" in text  # the dataset's bias notes
    assert "Knowledge Distillation for Efficient Tiny Masked Autoencoders for Medical Imaging" in text
    assert "Masked Autoencoders Are Scalable Vision Learners" in text
    assert 'from_pretrained("medmae/etmae-vit-tiny-p16-224-ft-chexpert", trust_remote_code=True)' in text
    assert "[medmae/etmae-vit-tiny](https://huggingface.co/medmae/etmae-vit-tiny)" in text  # link to the base model


def test_card_without_run_info_still_renders():
    text = build_model_card(ETMAEForPreTraining(ETMAEConfig.from_preset("tiny_test")), processor(), {}).content
    meta = front_matter(text)
    assert meta["pipeline_tag"] == "image-feature-extraction" and "model-index" not in meta
    assert "No evaluation results were recorded" in text and "not recorded" in text


def test_student_and_teacher_cards_link_each_other():
    student = {row["repo_id"]: row["relation"] for row in related_models("medmae/etmae-vit-tiny")}
    teacher = {row["repo_id"]: row["relation"] for row in related_models("medmae/etmae-vit-small-teacher")}
    assert student["medmae/etmae-vit-small-teacher"].startswith("teacher")
    assert teacher["medmae/etmae-vit-tiny"].startswith("student")
    assert "medmae/etmae-vit-tiny-p16-224-ft-nih14" in student
    card = build_model_card(ETMAEForPreTraining(ETMAEConfig.from_preset("tiny_test")), processor(),
                            {"task": "distillation", "teacher": "medmae/etmae-vit-small-teacher"},
                            repo_id="medmae/etmae-vit-tiny")
    meta = front_matter(card.content)
    assert "base_model" not in meta and "knowledge-distillation" in meta["tags"]  # not a fine-tune of its teacher
    assert "[medmae/etmae-vit-small-teacher](https://huggingface.co/medmae/etmae-vit-small-teacher)" in card.content
    assert "(https://huggingface.co/medmae/etmae-vit-tiny-p16-224-ft-nih14)" in card.content


def test_recipe_table_shows_only_what_applied_and_unknowns_are_not_claimed():
    hp = {"optimizer": "adamw", "adam_beta1": 0.9, "momentum": 0.9, "scheduler": "cosine", "poly_power": 0.9,
          "sd_warmup": False, "mask_ratio": 0.75, "layer_decay": 0.55, "num_workers": 4, "progress_bar": True,
          "teacher_normalization": None, "lr": 1e-3}
    text = build_model_card(classifier(), processor(), {**RUN_INFO, "hyperparameters": hp}).content
    for shown in ("adam_beta1", "layer_decay", "lr", "optimizer"):
        assert f"| `{shown}` |" in text, shown
    for hidden in ("momentum", "poly_power", "sd_warmup", "mask_ratio", "num_workers", "progress_bar",
                   "teacher_normalization"):
        assert f"| `{hidden}` |" not in text, hidden
    bare = build_model_card(classifier(), processor(), {}).content  # e.g. a folder saved by Trainer
    assert "SHA-256 above" not in bare and "No split manifest was recorded" in bare
    assert "knowledge-distillation" not in front_matter(bare)["tags"]


def test_sdda_mae_card_has_segmentation_and_diagnosis_tables():
    sdda = pytest.importorskip("medmae").__dict__.get("SDDAMAEForSegmentationAndClassification")
    if sdda is None:
        pytest.skip("SDDA-MAE is not importable yet")
    from medmae import SDDAMAEConfig

    config = SDDAMAEConfig.from_preset("tiny_test", cls_id2label={0: "normal", 1: "benign", 2: "malignant"})
    model = sdda(config).eval()
    card = build_model_card(model, MedMAEImageProcessor(size={"height": 64, "width": 64}),
                            {"task": "segmentation_classification", "dataset": "busi", "metrics": {"dice": 0.71},
                             "eval_split": "test"}, repo_id="medmae/sdda-mae-512-ft-busi")
    text = card.content
    assert front_matter(text)["pipeline_tag"] == "image-segmentation"
    assert "| 1 | lesion |" in text and "| 2 | malignant |" in text
    assert "single hospital in Cairo, Egypt" in text and "SDDA-MAE" in text and "Wang, Yunze" in text
    # the joint model takes the AutoModelForSemanticSegmentation slot of its own folder's auto_map
    assert "AutoModelForSemanticSegmentation.from_pretrained(" in text and "trust_remote_code=True" in text


def test_sanitize_drops_paths_and_data_file_names():
    clean, dropped = sanitize_run_info({
        "dataset": "chestxray14", "teacher": "medmae/etmae-vit-small-teacher",
        "hyperparameters": {"lr": 1e-3, "data_dir": "relative/dir", "resume": "/home/alice/run/ckpt.pth",
                            "note": "C:\\Users\\alice", "examples": ["00000001_000.png", "ok"], "out": "a/b/c"},
        "split": {"manifest_sha256": "f" * 64, "manifest": "runs/x/split_manifest.json"},
    })
    assert clean == {"dataset": "chestxray14", "teacher": "medmae/etmae-vit-small-teacher",
                     "hyperparameters": {"lr": 1e-3, "examples": ["ok"]}, "split": {"manifest_sha256": "f" * 64}}
    assert set(dropped) == {"hyperparameters.data_dir", "hyperparameters.resume", "hyperparameters.note",
                            "hyperparameters.examples[0]", "hyperparameters.out", "split.manifest"}


def test_zoo_names_and_readme_table():
    names = [entry.name for entry in ZOO]
    assert len(set(names)) == len(names)
    for entry in ZOO:
        assert entry.name.startswith(entry.family.replace("_", "-") + "-")  # architecture first
        for parent in (entry.teacher, entry.base_model):
            assert parent is None or get_entry(parent)
        if "-ft-" in entry.name:
            assert entry.base_model and entry.task != "pretraining"
    assert get_entry("medmae/etmae-vit-tiny").teacher == "etmae-vit-small-teacher"
    assert 12_000_000 < parameter_count(get_entry("etmae-vit-tiny")) < 13_000_000
    table = zoo_table_markdown(results={"etmae-vit-tiny": "macro AUROC 0.80 (test)"})
    assert table.count("\n") == len(ZOO) + 2 and "macro AUROC 0.80 (test)" in table
    assert "| published | [`medmae/etmae-vit-tiny`](https://huggingface.co/medmae/etmae-vit-tiny) |" in table
    assert "| **not published** | `medmae/etmae-vit-small-teacher` |" in table  # no link to a page that does not exist
    readme = README.read_text()
    assert zoo_table_markdown() in readme  # the README's table is the generated one: nothing is published yet
    assert "huggingface.co/medmae/" not in readme  # no link to an unpublished repository anywhere


def test_crosswalk_covers_every_nih_and_chexpert_label():
    from medmae.training.data import CHEXPERT_OBSERVATIONS, NIH_LABELS

    for name in (*NIH_LABELS, *CHEXPERT_OBSERVATIONS):
        assert name in LABEL_CROSSWALK
    assert LABEL_CROSSWALK["Pleural Effusion"] == ("Effusion", "Pleural Effusion")


def test_cards_read_the_transformers_argument_names():
    """Runs record TrainingArguments names (lr_scheduler_type, dataloader_num_workers, resume_from_checkpoint,
    warmup_steps): the card's recipe applies the same conditions to them as to the old names."""
    poly = {"optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.9, "lr_scheduler_type": "poly", "poly_power": 0.9,
            "min_lr": 0.0, "warmup_epochs": 5, "warmup_steps": 100, "dataloader_num_workers": 4,
            "resume_from_checkpoint": "latest"}
    shown = applied_hyperparameters(poly, "segmentation_classification")
    assert shown["poly_power"] == 0.9 and shown["warmup_steps"] == 100
    assert not {"min_lr", "warmup_epochs", "dataloader_num_workers", "resume_from_checkpoint"} & set(shown)
    cosine = applied_hyperparameters({"lr_scheduler_type": "cosine", "min_lr": 1e-5, "poly_power": 0.9}, "pretraining")
    assert cosine == {"lr_scheduler_type": "cosine", "min_lr": 1e-5}
    info, dropped, _ = strip_local_names({"hyperparameters": {"resume_from_checkpoint": "runs/my-secret-run",
                                                              "dataset_path": "/data/nih-256"}})
    assert sorted(dropped) == ["hyperparameters.dataset_path", "hyperparameters.resume_from_checkpoint"]
