"""Your own images: ``--dataset imagefolder`` layouts, exact reading, clear errors, and the user's path from a
folder of images to pre-training, single-label fine-tuning and evaluation."""

import json

import numpy as np
import pytest
from PIL import Image

from medmae.training import cli, finetune, pretrain
from medmae.training.data import DatasetFormatError
from medmae.training.registry import load_dataset_by_name

from .fixtures import _write_dicom, corrupt_file

CLASSES = ("benign", "malignant", "normal")


def _image(path, seed, size=(24, 28), dtype=np.uint8, high=255):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(seed).random(size) * high).astype(dtype)).save(path)


def class_folder(root, per_class=10):
    for k, name in enumerate(CLASSES):
        for i in range(per_class):
            _image(root / name / f"{name} ({i + 1}).png", seed=100 * k + i)
    return root


def test_one_folder_per_class_is_single_label_with_a_stratified_recorded_split(tmp_path):
    dd = load_dataset_by_name("imagefolder", class_folder(tmp_path / "data"), seed=0)
    assert dd["train"].features["label"].names == list(CLASSES)
    assert {name: len(ds) for name, ds in dd.items()} == {"train": 24, "validation": 3, "test": 3}
    assert sorted(dd["test"]["label"]) == [0, 1, 2]  # stratified
    assert dd["test"][0]["image_id"].split("/")[0] in CLASSES and dd.medmae_split_info["layout"] == "classes"
    again = load_dataset_by_name("imagefolder", tmp_path / "data", seed=0)
    assert again["test"]["image_id"] == dd["test"]["image_id"]


def test_given_splits_are_kept_and_validation_is_carved_from_train(tmp_path):
    root = tmp_path / "data"
    class_folder(root / "train", per_class=6)
    for name in CLASSES[:2]:
        _image(root / "test" / name / "t.png", seed=7)
    dd = load_dataset_by_name("imagefolder", root, val_fraction=0.34)
    assert len(dd["test"]) == 2 and all(i.startswith("test/") for i in dd["test"]["image_id"])
    assert len(dd["validation"]) == 6 and all(i.startswith("train/") for i in dd["validation"]["image_id"])


def test_any_other_folder_is_unlabelled_and_read_exactly(tmp_path):
    root = tmp_path / "scans"
    _image(root / "a.png", 1)
    _image(root / "nested" / "deeper" / "b.jpg", 2)
    _image(root / "c16.png", 3, dtype=np.uint16, high=4095)  # 12-bit data in a 16-bit PNG
    _write_dicom(root / "d.dcm", (np.random.default_rng(4).random((24, 28)) * 255).astype(np.uint8),
                 "1.2.3", "1.2.3.4", "1.2.3.4.5", jpeg=False)
    (root / "Thumbs.db").write_bytes(b"not an image")
    dd = load_dataset_by_name("imagefolder", root, test_fraction=0, val_fraction=0, bits_stored=12)
    assert set(dd) == {"train"} and "label" not in dd["train"].column_names
    ids = sorted(dd["train"]["image_id"])
    assert ids == ["a.png", "c16.png", "d.dcm", "nested/deeper/b.jpg"]
    row = next(r for r in dd["train"] if r["image_id"] == "c16.png")
    raw = np.asarray(Image.open(root / "c16.png")).astype(np.float64)
    np.testing.assert_allclose(np.asarray(row["image"], dtype=np.float64), np.round(raw / 4095 * 255), atol=1)
    with pytest.raises(DatasetFormatError, match="exceed bits_stored=8"):
        load_dataset_by_name("imagefolder", root, bits_stored=8)


def test_bad_folders_are_named(tmp_path):
    root = class_folder(tmp_path / "data", per_class=3)
    corrupt_file(root / "benign" / "benign (1).png")
    with pytest.raises(DatasetFormatError, match=r"benign \(1\)\.png"):
        load_dataset_by_name("imagefolder", root)
    with pytest.warns(UserWarning, match="skipped 1"):
        assert len(load_dataset_by_name("imagefolder", root, on_bad_image="skip", test_fraction=0,
                                        val_fraction=0)["train"]) == 8
    (root / "benign" / "benign (1).png").unlink()
    _image(root / "normal" / "X.png", 1)
    _image(root / "normal" / "x.png", 2)
    with pytest.raises(DatasetFormatError, match="found twice"):
        load_dataset_by_name("imagefolder", root)
    with pytest.raises(FileNotFoundError, match="folder not found"):
        load_dataset_by_name("imagefolder", tmp_path / "missing")


FAST = ["--report_to", "none", "--figures", "False", "--progress_bar", "False", "--per_device_train_batch_size", "4",
        "--learning_rate", "1e-3"]


def test_pretrain_on_a_folder_then_single_label_finetune_and_evaluate(tmp_path):
    scans = tmp_path / "scans"
    for i in range(16):
        _image(scans / f"s{i}.png", seed=500 + i, size=(40, 36))
    labelled = class_folder(tmp_path / "labelled", per_class=8)
    pretrain.main(["--family", "etmae", "--model_preset", "tiny_test", "--image_size", "32", "--dataset",
                   "imagefolder", "--data_root", str(scans), "--max_steps", "3", *FAST,
                   "--output_dir", str(tmp_path / "pre")])
    with pytest.raises(ValueError, match=r"needs the column\(s\) .*the data is unlabelled"):
        finetune.main(["--family", "etmae", "--dataset", "imagefolder", "--data_root", str(scans), "--init_from",
                       str(tmp_path / "pre"), "--max_steps", "2", *FAST, "--output_dir", str(tmp_path / "bad")])
    info = finetune.main(["--family", "etmae", "--dataset", "imagefolder", "--data_root", str(labelled),
                          "--init_from", str(tmp_path / "pre"), "--max_steps", "4", *FAST,
                          "--output_dir", str(tmp_path / "ft")])
    assert info["task"] == "classification" and info["label_names"] == list(CLASSES)
    assert {"accuracy", "precision", "recall", "f1", "auc"} <= set(info["metrics"])
    config = json.loads((tmp_path / "ft" / "final" / "config.json").read_text())
    assert config["problem_type"] == "single_label_classification" and config["id2label"]["2"] == "normal"
    assert cli.main(["evaluate", "--model", str(tmp_path / "ft"), "--data_root", str(labelled), "--output_dir",
                     str(tmp_path / "eval")]) == 0
    payload = json.loads((tmp_path / "eval" / "metrics_test.json").read_text())
    assert payload["metrics"]["accuracy"] == pytest.approx(info["metrics"]["accuracy"])
    assert cli.main(["predict", "--model", str(tmp_path / "ft"), "--input", str(labelled / "normal"), "--output",
                     str(tmp_path / "predictions.csv"), "--no_progress"]) == 0
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 8 and rows[0].startswith("path,prob/benign,prob/malignant,prob/normal,prediction")


def test_csv_single_multi_label_and_group_disjoint_splits(tmp_path):
    root = tmp_path / "data"
    lines = ["path,finding,patient"]
    for i in range(24):
        _image(root / "img" / f"{i}.png", seed=i)
        lines.append(f"img/{i}.png,{['Mass', 'Nodule|Mass', ''][i % 3]},p{i // 2}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    dd = load_dataset_by_name("csv", root, csv="labels.csv", group_column="patient", test_fraction=0.25,
                              val_fraction=0.2)
    assert dd.medmae_split_info["labels"] == ["Mass", "Nodule"]
    assert dd["train"][1]["labels"] == [1.0, 1.0] and dd["train"].features["labels"].feature.dtype == "float32"
    patients = {name: {row.split(",")[2] for row in lines[1:] if row.split(",")[0] in set(ds["image_id"])}
                for name, ds in dd.items()}
    assert not (patients["train"] & patients["test"]) and not (patients["train"] & patients["validation"])
    single = ["path,diagnosis"] + [f"img/{i}.png,{'benign' if i % 2 else 'malignant'}" for i in range(24)]
    (root / "single.csv").write_text("\n".join(single) + "\n")
    dd = load_dataset_by_name("csv", root, csv="single.csv")
    assert dd["train"].features["label"].names == ["benign", "malignant"]
    (root / "bad.csv").write_text("path,Mass,Nodule\nimg/0.png,1,0\nimg/1.png,1,-1\n")
    with pytest.raises(DatasetFormatError, match=r"bad\.csv, line 3, column 'Nodule': value '-1' is not 0 or 1"):
        load_dataset_by_name("csv", root, csv="bad.csv")
    (root / "escape.csv").write_text("path,diagnosis\n../outside.png,benign\n")
    with pytest.raises(DatasetFormatError, match=r"escape\.csv, line 2, column 'path'.*outside the dataset folder"):
        load_dataset_by_name("csv", root, csv="escape.csv")


def test_a_saved_datasets_dataset_with_its_own_column_names(tmp_path):
    import datasets

    images = [Image.fromarray((np.random.default_rng(i).random((20, 20)) * 255).astype(np.uint8)) for i in range(20)]
    ds = datasets.Dataset.from_dict({"img": images, "dx": ["a", "b"] * 10},
                                    features=datasets.Features({"img": datasets.Image(), "dx": datasets.Value("string")}))
    datasets.DatasetDict({"train": ds, "valid": ds.select(range(4))}).save_to_disk(str(tmp_path / "saved"))
    dd = load_dataset_by_name(f"hf:{tmp_path / 'saved'}", image_column="img", label_columns=["dx"])
    assert set(dd) == {"train", "validation"} and dd["train"].features["label"].names == ["a", "b"]
    assert dd["train"].column_names == ["image", "label", "image_id"] and dd["validation"][0]["image_id"] == "valid/0"
    with pytest.raises(DatasetFormatError, match="no column 'image'.*--image_column"):
        load_dataset_by_name(f"hf:{tmp_path / 'saved'}")
    datasets.DatasetDict({"train": ds, "test": ds.select(range(4))}).save_to_disk(str(tmp_path / "no_val"))
    dd = load_dataset_by_name(f"hf:{tmp_path / 'no_val'}", image_column="img", label_columns=["dx"], val_fraction=0.2)
    assert {name: len(split) for name, split in dd.items()} == {"train": 16, "validation": 4, "test": 4}


def test_finetune_multi_label_from_a_csv_on_the_command_line(tmp_path):
    root = tmp_path / "data"
    lines = ["path,findings"]
    for i in range(30):
        _image(root / f"{i}.png", seed=i, size=(40, 40))
        lines.append(f"{i}.png,{['Mass', 'Nodule|Mass', 'Effusion'][i % 3]}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    args = ["--family", "etmae", "--dataset", "csv", "--data_root", str(root), "--from_scratch", "--image_size", "32",
            "--max_steps", "2", *FAST]
    info = finetune.main([*args, "--csv", "labels.csv", "--output_dir", str(tmp_path / "ft")])
    assert info["task"] == "multilabel_classification" and "auc/Nodule" in info["metrics"]
    chosen = finetune.main([*args, "--csv", "labels.csv", "--problem_type", "multi_label_classification",
                            "--output_dir", str(tmp_path / "ft_pt")])
    assert chosen["task"] == "multilabel_classification"
    with pytest.raises(ValueError, match="--problem_type single_label_classification and --task multilabel"):
        finetune.main([*args, "--csv", "labels.csv", "--problem_type", "single_label_classification", "--task",
                       "multilabel_classification", "--output_dir", str(tmp_path / "ft3")])
    with pytest.raises(ValueError, match="--csv FILE"):
        finetune.main([*args, "--output_dir", str(tmp_path / "ft2")])
    with pytest.raises(ValueError, match="--group_column do.*not apply to --dataset busi"):
        finetune.main([*args[:3], "busi", *args[4:], "--group_column", "patient", "--output_dir", str(tmp_path / "x")])


def _lesion(size, seed, value):
    mask = np.zeros(size, np.uint8)
    r = np.random.default_rng(seed).integers(4, 10)
    mask[r:r + 8, r:r + 10] = value
    return mask


def segfolder(root, n=8):
    """images/<class>/i.png with masks/<class>/i.png, odd masks stored 0/255 and even ones 0/1."""
    for k, name in enumerate(("benign", "malignant")):
        (root / "masks" / name).mkdir(parents=True)
        for i in range(n):
            _image(root / "images" / name / f"{i}.png", seed=10 * k + i, size=(32, 32))
            Image.fromarray(_lesion((32, 32), i, 255 if i % 2 else 1)).save(root / "masks" / name / f"{i}.png")
    return root


def test_segfolder_masks_0_1_and_0_255_classes_from_folders_or_csv(tmp_path):
    root = segfolder(tmp_path / "seg")
    dd = load_dataset_by_name("segfolder", root, test_fraction=0.25, val_fraction=0.2)
    assert dd["train"].features["label"].names == ["benign", "malignant"]
    values = set(np.unique(np.concatenate([np.asarray(m).ravel() for m in dd["train"]["mask"]])).tolist())
    assert values == {0, 1}  # 0/255 and 0/1 masks both become 0/1
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    (flat / "masks").mkdir()
    for i in range(6):
        _image(flat / "images" / f"case{i}.png", seed=i, size=(32, 32))
        Image.fromarray(_lesion((32, 32), i, 255)).save(flat / "masks" / f"case{i}.png")
    (flat / "labels.csv").write_text("image,label\n" + "".join(f"case{i}.png,{'a' if i < 3 else 'b'}\n"
                                                               for i in range(6)))
    assert load_dataset_by_name("segfolder", flat, test_fraction=0, val_fraction=0)["train"].features[
        "label"].names == ["a", "b"]
    Image.fromarray(_lesion((32, 32), 0, 2) + _lesion((32, 32), 5, 1)).save(flat / "masks" / "case0.png")
    with pytest.raises(DatasetFormatError, match=r"case0\.png holds the values \[0, 1, 2"):
        load_dataset_by_name("segfolder", flat)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(flat / "masks" / "case0.png")
    with pytest.raises(DatasetFormatError, match=r"case0\.png is 16x16, its image 32x32"):
        load_dataset_by_name("segfolder", flat)
    (flat / "masks" / "case0.png").unlink()
    with pytest.raises(DatasetFormatError, match=r"case0\.png has no mask"):
        load_dataset_by_name("segfolder", flat)


def test_sdda_joint_finetuning_on_your_own_masks(tmp_path):
    root = segfolder(tmp_path / "seg")
    data = ["--dataset", "segfolder", "--data_root", str(root), "--dataset_kwargs", "{}", "--image_size", "32",
            "--report_to", "none",
            "--figures", "False", "--progress_bar", "False", "--per_device_train_batch_size", "4"]
    pretrain.main(["--preset", "demo", *data, "--max_steps", "2", "--output_dir", str(tmp_path / "pre")])
    info = finetune.main(["--preset", "demo", *data, "--max_steps", "2", "--init_from", str(tmp_path / "pre"),
                          "--output_dir", str(tmp_path / "ft")])
    assert info["task"] == "segmentation_classification" and {"dice", "accuracy"} <= set(info["metrics"])
    assert info["label_names"] == ["benign", "malignant"]


def test_sdda_single_label_finetuning_on_a_class_folder(tmp_path):
    labelled = class_folder(tmp_path / "labelled", per_class=8)
    data = ["--dataset", "imagefolder", "--data_root", str(labelled), "--dataset_kwargs", "{}", "--image_size", "32",
            "--report_to", "none", "--figures", "False", "--progress_bar", "False", "--per_device_train_batch_size",
            "4"]
    pretrain.main(["--preset", "demo", *data, "--max_steps", "2", "--output_dir", str(tmp_path / "pre")])
    info = finetune.main(["--preset", "demo", *data, "--task", "classification", "--metric_for_best_model", "accuracy",
                          "--max_steps", "2", "--init_from",
                          str(tmp_path / "pre"), "--output_dir", str(tmp_path / "ft")])
    assert info["task"] == "classification" and {"accuracy", "f1"} <= set(info["metrics"])
    config = json.loads((tmp_path / "ft" / "final" / "config.json").read_text())
    assert config["architectures"] == ["SDDAMAEForImageClassification"] and config["id2label"]["1"] == "malignant"


def test_several_segmentation_classes_named_in_classes_json(tmp_path):
    root = tmp_path / "seg"
    for k, name in enumerate(("benign", "malignant")):
        for i in range(8):
            _image(root / "images" / name / f"{i}.png", seed=10 * k + i, size=(32, 32))
            mask = _lesion((32, 32), i, 1) + 2 * (np.arange(32)[:, None] > 27) * np.ones((1, 32), np.uint8)
            (root / "masks" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / name / f"{i}.png")
    with pytest.raises(DatasetFormatError, match="for several classes give their names"):
        load_dataset_by_name("segfolder", root)
    (root / "classes.json").write_text('["background", "mass", "shadow"]')
    dd = load_dataset_by_name("segfolder", root)
    assert dd.medmae_split_info["segmentation_classes"] == ["background", "mass", "shadow"]
    assert set(np.unique(np.asarray(dd["train"][0]["mask"])).tolist()) == {0, 1, 2}  # class ids kept
    data = ["--dataset", "segfolder", "--data_root", str(root), "--dataset_kwargs", "{}", "--image_size", "32",
            "--report_to", "none", "--figures", "False", "--progress_bar", "False", "--per_device_train_batch_size",
            "4"]
    pretrain.main(["--preset", "demo", *data, "--max_steps", "2", "--output_dir", str(tmp_path / "pre")])
    info = finetune.main(["--preset", "demo", *data, "--max_steps", "2", "--init_from", str(tmp_path / "pre"),
                          "--output_dir", str(tmp_path / "ft")])
    assert {"dice/mass", "dice/shadow", "hd95/mass"} <= set(info["metrics"])
    config = json.loads((tmp_path / "ft" / "final" / "config.json").read_text())
    assert config["id2label"] == {"0": "background", "1": "mass", "2": "shadow"}
    assert cli.main(["evaluate", "--model", str(tmp_path / "ft"), "--data_root", str(root), "--output_dir",
                     str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "metrics_test.json").read_text())["metrics"]["dice/shadow"] == \
        pytest.approx(info["metrics"]["dice/shadow"])
