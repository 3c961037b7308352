"""``medmae prepare`` / ``--dataset_path`` against the fixtures in the datasets' exact published formats."""

import json
import shutil
import time

import numpy as np
import pytest
from PIL import Image

import datasets
from medmae.training import cli, data, evaluate, finetune, pretrain, registry
from medmae.training.prepare import (
    prepare_dataset,
    required_size,
    resized_size,
)
from medmae.training.prepared import (
    FINGERPRINT_FILE,
    PreparedDatasetError,
    load_prepared,
)

from .fixtures import build_busi, build_chexpert, build_nih, build_siim, corrupt_file

FAST = ["--report_to", "none", "--progress_bar", "False", "--seed", "0", "--logging_steps", "1", "--figures", "False"]


def _resized(image: Image.Image, size: int, nearest: bool = False) -> np.ndarray:
    target = resized_size(*image.size, size)
    if target == image.size:
        return np.asarray(image)
    return np.asarray(image.resize(target, Image.Resampling.NEAREST if nearest else Image.Resampling.BICUBIC))


def _assert_same_rows(raw, prepared, size, columns):
    assert list(prepared) == list(raw)
    for split in raw:
        assert len(prepared[split]) == len(raw[split])
        for a, b in zip(raw[split], prepared[split]):
            for column in columns:
                assert a[column] == b[column], (split, a["image_id"], column)
            assert b["image"].mode == a["image"].mode == "L"
            np.testing.assert_array_equal(np.asarray(b["image"]), _resized(a["image"], size))
            if "mask" in a:
                np.testing.assert_array_equal(np.asarray(b["mask"]), _resized(a["mask"], size, nearest=True))
                assert b["mask"].size == b["image"].size


def _leftovers(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_resize_rule_keeps_the_aspect_and_never_enlarges():
    assert resized_size(1024, 1024, 256) == (256, 256)
    assert resized_size(600, 450, 256) == (341, 256)  # landscape: shorter side (height) -> 256
    assert resized_size(40, 48, 16) == (16, 19)  # portrait: round(48 * 16 / 40) = 19
    assert resized_size(200, 300, 256) == (200, 300)  # smaller than image_size: unchanged
    assert required_size(224, "crop_flip") == 224 and required_size(224, "medical_mae") == 256  # Resize(224 / 0.875)


def test_busi_round_trip_with_two_workers(tmp_path):
    build_busi(tmp_path / "busi")
    prep = prepare_dataset("busi", tmp_path / "busi", 16, tmp_path / "busi-16", loader_kwargs={"seed": 3},
                           num_proc=2)
    started = time.perf_counter()
    prepared = load_prepared(prep, dataset="busi", image_size=16, loader_kwargs={"seed": 3})
    assert time.perf_counter() - started < 5  # the benchmark measures the real number; a bound against regressions
    raw = data.load_busi(tmp_path / "busi", seed=3)
    _assert_same_rows(raw, prepared, 16, ["image_id", "label", "mask_files"])
    sizes = {r["image_id"]: r["image"].size for ds in prepared.values() for r in ds}
    assert sizes["malignant (1)"] == (16, 19) and sizes["benign (1)"] == (19, 16)  # 40x48 portrait, 48x40
    assert prepared["train"].features == raw["train"].features  # ClassLabel names, Image(mode="L"), ...
    assert prepared.medmae_split_info == raw.medmae_split_info
    manifest = json.loads((prep / "split_manifest.json").read_text())
    assert manifest["splits"] == {s: list(raw[s]["image_id"]) for s in raw}
    fingerprint = json.loads((prep / FINGERPRINT_FILE).read_text())
    assert fingerprint["dataset"] == "busi" and fingerprint["image_size"] == 16
    assert fingerprint["num_rows_total"] == 7 and len(fingerprint["index_sha256"]) == 64
    assert fingerprint["source_root"] == str((tmp_path / "busi").resolve())
    assert "busi prepared at 16 px" in (prep / "README.md").read_text()
    assert isinstance(datasets.load_from_disk(str(prep)), datasets.DatasetDict)  # a plain datasets folder too
    assert _leftovers(tmp_path) == []


def test_nih_round_trip_and_small_images_are_not_enlarged(tmp_path):
    build_nih(tmp_path / "nih")
    raw = data.load_chestxray14(tmp_path / "nih")
    columns = ["image_id", "labels", "patient_id", "age", "sex", "view", "follow_up"]
    prep = prepare_dataset("chestxray14", tmp_path / "nih", 16, tmp_path / "nih-16")
    _assert_same_rows(raw, load_prepared(prep, dataset="chestxray14", image_size=16), 16, columns)
    files = json.loads((prep / FINGERPRINT_FILE).read_text())["source_files"]
    assert {f["path"] for f in files} == {"Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv", "test_list.txt",
                                          "train_val_list.txt"}
    big = prepare_dataset("chestxray14", tmp_path / "nih", 64, tmp_path / "nih-64", image_format="png")
    _assert_same_rows(raw, load_prepared(big), 64, columns)  # 32 px images kept as they are
    assert datasets.load_from_disk(str(big))["train"].cast_column(
        "image", datasets.Image(decode=False))[0]["image"]["bytes"].startswith(b"\x89PNG")


def test_combined_pretraining_set(tmp_path):
    build_nih(tmp_path / "nih")
    build_chexpert(tmp_path / "chexpert")
    roots = {"chestxray14": str(tmp_path / "nih"), "chexpert": str(tmp_path / "chexpert")}
    raw = registry.load_dataset_by_name("chestxray14+chexpert", roots)
    prep = prepare_dataset("chestxray14+chexpert", json.dumps(roots), 16, tmp_path / "both")
    prepared = load_prepared(prep, dataset="chestxray14+chexpert", source_root=roots)
    _assert_same_rows(raw, prepared, 16, ["image_id", "source", "patient_id"])
    files = {f["path"] for f in json.loads((prep / FINGERPRINT_FILE).read_text())["source_files"]}
    assert {"chestxray14:test_list.txt", "chexpert:train.csv"} <= files
    with pytest.raises(PreparedDatasetError, match="it was prepared from"):
        load_prepared(prep, source_root={**roots, "chexpert": str(tmp_path / "nih")})


def test_siim_and_chexpert_round_trip(tmp_path):
    build_siim(tmp_path / "siim")
    siim = {"csv": "train-rle.csv"}  # the fixture ships both stage files: the loader makes us choose
    with pytest.warns(UserWarning, match="no row in train-rle.csv"):
        raw = data.load_siim_acr(tmp_path / "siim", **siim)
        prep = prepare_dataset("siim_acr", tmp_path / "siim", 24, tmp_path / "siim-24", loader_kwargs=siim)
    _assert_same_rows(raw, load_prepared(prep), 24, ["image_id", "label", "patient_id", "pixel_spacing"])
    build_chexpert(tmp_path / "chexpert")
    kwargs = {"uncertainty": "ignore", "val_fraction": 0.0}
    raw = data.load_chexpert(tmp_path / "chexpert", **kwargs)
    prep = prepare_dataset("chexpert", tmp_path / "chexpert", 14, tmp_path / "chexpert-14", loader_kwargs=kwargs)
    _assert_same_rows(raw, load_prepared(prep, loader_kwargs=kwargs), 14, ["image_id", "labels", "label_mask"])
    with pytest.raises(PreparedDatasetError, match="loader argument 'uncertainty' is 'ignore' there and None"):
        load_prepared(prep, loader_kwargs={"val_fraction": 0.0})


def test_a_corrupt_or_truncated_image_is_named_and_nothing_is_left(tmp_path):
    build_nih(tmp_path / "nih")
    png = tmp_path / "nih" / "images_002" / "images" / "00000002_000.png"
    png.write_bytes(png.read_bytes()[:60])  # the header reads, the pixels do not
    with pytest.raises(data.CorruptImageError, match="00000002_000.png"):
        prepare_dataset("chestxray14", tmp_path / "nih", 16, tmp_path / "prep", num_proc=2)
    corrupt_file(png)
    with pytest.raises(data.CorruptImageError, match=r"images_002/images/00000002_000\.png"):
        prepare_dataset("chestxray14", tmp_path / "nih", 16, tmp_path / "prep")
    assert not (tmp_path / "prep").exists() and _leftovers(tmp_path) == []
    with pytest.warns(UserWarning, match="skipped 1 missing or unreadable"):  # the loader's own policy still works
        prep = prepare_dataset("chestxray14", tmp_path / "nih", 16, tmp_path / "prep",
                               loader_kwargs={"on_bad_image": "skip"})
    assert json.loads((prep / FINGERPRINT_FILE).read_text())["num_rows_total"] == 7


def test_bad_roots_and_output_folders_are_refused(tmp_path, capsys):
    build_busi(tmp_path / "busi")
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        prepare_dataset("busi", tmp_path / "no_such_folder", 16, tmp_path / "prep")
    with pytest.raises(PreparedDatasetError, match="overlaps the dataset folder"):
        prepare_dataset("busi", tmp_path / "busi", 16, tmp_path / "busi" / "prep")
    with pytest.raises(PreparedDatasetError, match="nothing to prepare"):
        prepare_dataset("synthetic_ultrasound", None, 16, tmp_path / "prep")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(PreparedDatasetError, match="exists and is not empty.*--overwrite"):
        prepare_dataset("busi", tmp_path / "busi", 16, tmp_path / "other")
    with pytest.raises(PreparedDatasetError, match="not a medmae prepared dataset, so --overwrite will not delete"):
        prepare_dataset("busi", tmp_path / "busi", 16, tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"
    prep = prepare_dataset("busi", tmp_path / "busi", 16, tmp_path / "prep")
    with pytest.raises(PreparedDatasetError, match="exists and is not empty"):
        prepare_dataset("busi", tmp_path / "busi", 20, prep)
    prepare_dataset("busi", tmp_path / "busi", 20, prep, overwrite=True)
    assert json.loads((prep / FINGERPRINT_FILE).read_text())["image_size"] == 20 and _leftovers(tmp_path) == []
    # the command: exit code 2 and a one-line message naming the problem
    assert cli.main(["prepare", "--dataset", "busi", "--data_root", str(tmp_path / "missing"), "--image_size", "16",
                     "--output_dir", str(tmp_path / "p2")]) == 2
    assert str(tmp_path / "missing") in capsys.readouterr().err
    assert cli.main(["prepare", "--dataset", "busi", "--data_root", str(tmp_path / "busi"),
                     "--output_dir", str(tmp_path / "p2")]) == 2
    assert "needs --image_size" in capsys.readouterr().err
    assert cli.main(["prepare", "--dataset", "busi", "--data_root", str(tmp_path / "busi"), "--image_size", "16",
                     "--output_dir", str(tmp_path / "p2"), "--num_proc", "1"]) == 0
    assert "prepared busi: 7 rows" in capsys.readouterr().out


def test_foreign_stale_or_edited_prepared_folders_are_refused(tmp_path):
    build_busi(tmp_path / "busi")
    prep = prepare_dataset("busi", tmp_path / "busi", 16, tmp_path / "prep")
    with pytest.raises(PreparedDatasetError, match="prepared for --dataset busi, this run reads --dataset chestxray14"):
        load_prepared(prep, dataset="chestxray14")
    with pytest.raises(PreparedDatasetError, match="image_size 16, below the 32 px this run reads"):
        load_prepared(prep, image_size=32)
    with pytest.raises(PreparedDatasetError, match="loader argument 'seed' is 0 there and 1 in this run"):
        load_prepared(prep, loader_kwargs={"seed": 1})
    with pytest.raises(PreparedDatasetError, match="not a medmae prepared dataset"):
        load_prepared(tmp_path / "busi")
    # the prepared labels edited after preparation
    train = datasets.load_from_disk(str(prep / "train"))
    edited = train.map(lambda row: {"label": (row["label"] + 1) % 3})
    edited.save_to_disk(str(tmp_path / "edited"))
    shutil.rmtree(prep / "train")
    shutil.move(str(tmp_path / "edited"), str(prep / "train"))
    with pytest.raises(PreparedDatasetError, match="no longer hash to the recorded index_sha256"):
        load_prepared(prep)
    # the source changed after preparation: an image added (BUSI's index is its folder listing), a label file edited
    fresh = prepare_dataset("busi", tmp_path / "busi", 16, tmp_path / "fresh")
    shutil.copy(tmp_path / "busi" / "Dataset_BUSI_with_GT" / "benign" / "benign (1).png",
                tmp_path / "busi" / "Dataset_BUSI_with_GT" / "benign" / "benign (3).png")
    with pytest.raises(PreparedDatasetError, match="stale: the source's folder listing"):
        load_prepared(fresh)
    assert len(load_prepared(fresh, check_source=False)["train"]) == 5
    build_nih(tmp_path / "nih")
    nih = prepare_dataset("chestxray14", tmp_path / "nih", 16, tmp_path / "nih-16")
    csv = tmp_path / "nih" / "Data_Entry_2017_v2020.csv"
    csv.write_text(csv.read_text().replace("Pneumonia", "Edema"))
    with pytest.raises(PreparedDatasetError, match=r"Data_Entry_2017_v2020\.csv changed"):
        load_prepared(nih)


def test_finetune_and_evaluate_from_a_prepared_folder_and_built_inside_a_run(tmp_path):
    build_busi(tmp_path / "busi")
    prep = tmp_path / "busi-32"
    common = ["--preset", "busi", "--dataset", "busi", "--model_preset", "tiny_test", "--image_size", "32",
              "--per_device_train_batch_size", "2", "--num_train_epochs", "1", *FAST]
    # inside a run: --data_root with a missing --dataset_path prepares it first (at the run's 32 px)
    pre = pretrain.main([*common, "--data_root", str(tmp_path / "busi"), "--dataset_path", str(prep),
                         "--max_steps", "1", "--output_dir", str(tmp_path / "pre")])
    assert json.loads((prep / FINGERPRINT_FILE).read_text())["image_size"] == 32 and pre["dataset"] == "busi"
    info = finetune.main([*common, "--dataset_path", str(prep), "--from_scratch", "--output_dir", str(tmp_path / "ft")])
    raw_manifest = data.write_split_manifest(data.load_busi(tmp_path / "busi"), tmp_path / "raw_manifest.json")
    assert (tmp_path / "ft" / "split_manifest.json").read_text() == raw_manifest.read_text()  # the same splits
    assert info["hyperparameters"]["dataset_path"] == "busi-32"
    assert str(tmp_path) not in (tmp_path / "ft" / "run_info.json").read_text()
    assert cli.main(["evaluate", "--model", str(tmp_path / "ft"), "--dataset_path", str(prep),
                     "--output_dir", str(tmp_path / "eval")]) == 0
    payload = json.loads((tmp_path / "eval" / "metrics_test.json").read_text())
    assert payload["metrics"]["dice"] == pytest.approx(info["metrics"]["dice"], abs=1e-6)
    with pytest.raises(PreparedDatasetError, match="image_size 32, below the 64 px this run reads"):
        finetune.main([*common, "--image_size", "64", "--dataset_path", str(prep), "--from_scratch",
                       "--output_dir", str(tmp_path / "ft64")])
    with pytest.raises(PreparedDatasetError, match="prepared for --dataset busi, this run reads --dataset chestxray14"):
        finetune.main([*common, "--dataset", "chestxray14", "--dataset_path", str(prep), "--from_scratch",
                       "--output_dir", str(tmp_path / "ftnih")])
