"""``medmae predict``: probabilities equal to the model + processor run directly, 16-bit images not saturated,
masks at the original size, bad files skipped and counted, pre-training checkpoints refused."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from medmae import (ETMAEConfig, ETMAEForImageClassification, ETMAEForPreTraining, SDDAMAEConfig,
                    SDDAMAEForSegmentationAndClassification)
from medmae.modeling.image_processing_medmae import processor_for_config
from medmae.training.predict import discover_inputs, main

from .fixtures import _gray, _write_dicom, corrupt_file

LABELS = ["Atelectasis", "Cardiomegaly", "Effusion"]
DIAGNOSES = ["normal", "benign", "malignant"]


def save(model, folder):
    model.save_pretrained(folder)
    processor_for_config(model.config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    config = ETMAEConfig.from_preset("tiny_test", num_labels=3, problem_type="multi_label_classification",
                                     id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    torch.manual_seed(0)
    model = ETMAEForImageClassification(config)
    with torch.no_grad():
        model.classifier.weight.normal_(std=0.5)
    run = tmp_path_factory.mktemp("runs") / "etmae_ft"
    save(model, run / "final")
    return run  # a run folder: predict must find its final/


@pytest.fixture(scope="module")
def joint_dir(tmp_path_factory):
    config = SDDAMAEConfig.from_preset("tiny_test", cls_id2label=dict(enumerate(DIAGNOSES)))
    torch.manual_seed(0)
    model = SDDAMAEForSegmentationAndClassification(config)
    with torch.no_grad():  # a head whose masks mix background and lesion pixels
        model.segmentation_head.classifier.weight.normal_(std=1.0)
    return save(model, tmp_path_factory.mktemp("joint") / "sdda_joint")


def direct(folder, arrays):
    """What the checkpoint gives when its processor and model are run by hand on the same arrays."""
    from medmae.training.evaluate import load_finetuned

    model, processor, _ = load_finetuned(folder)
    with torch.no_grad():
        return model.eval()(**processor(images=arrays, return_tensors="pt")), processor


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def run(argv, capsys):
    code = main([*argv, "--no_progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


def images_folder(root):
    """8-bit gray, 8-bit RGB, 16-bit gray PNGs (one in a subfolder) and an 8-bit DICOM, with their arrays."""
    root.mkdir(parents=True)
    arrays = {"img2.png": _gray((40, 48), 1), "img10.png": np.stack([_gray((36, 36), 2)] * 3, -1),
              "sub/deep16.png": (_gray((48, 40), 3).astype(np.uint16) * 300)}
    for name, array in arrays.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / name)
    arrays["scan.dcm"] = _write_dicom(root / "scan.dcm", _gray((32, 32), 4), "1.2.3.1", "1.2.3.2", "1.2.3.3", False)
    return arrays


def test_multilabel_probabilities_equal_direct_model(tmp_path, classifier_dir, capsys):
    arrays = images_folder(tmp_path / "images")
    code, out, err = run(["--model", str(classifier_dir), "--input", str(tmp_path / "images"),
                          "--output", str(tmp_path / "results.csv"), "--batch_size", "3"], capsys)
    assert code == 0, err
    assert "predicted 4, skipped 0" in out
    rows = read_rows(tmp_path / "results.csv")
    assert list(rows[0]) == ["path", *(f"prob/{label}" for label in LABELS), "prediction"]
    names = [row["path"].replace("\\", "/").split("images/")[1] for row in rows]
    assert names == ["img2.png", "img10.png", "scan.dcm", "sub/deep16.png"]  # natural order, recursive
    outputs, processor = direct(classifier_dir, [arrays[n] for n in names])
    expected = torch.sigmoid(outputs.logits).numpy()
    got = np.array([[float(row[f"prob/{label}"]) for label in LABELS] for row in rows])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    for row, probs in zip(rows, expected):
        assert row["prediction"] == "|".join(label for label, p in zip(LABELS, probs) if p >= 0.5)
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["model"] == "etmae_ft/final" and record["model_class"] == "ETMAEForImageClassification"
    assert record["preprocessing"]["size"] == processor.size and record["preprocessing"]["image_std"] == \
        processor.image_std
    assert (record["num_predicted"], record["num_skipped"], record["skipped"]) == (4, 0, [])
    assert record["medmae_version"] and str(tmp_path) not in json.dumps(record)
    # the same images through a CSV list (relative to its folder) and with a threshold
    (tmp_path / "list.csv").write_text("path,note\nimages/img10.png,x\nimages/img2.png,y\n")
    code, _, _ = run(["--model", str(classifier_dir / "final"), "--input", str(tmp_path / "list.csv"),
                      "--output", str(tmp_path / "listed.csv"), "--threshold", "0"], capsys)
    listed = read_rows(tmp_path / "listed.csv")
    assert code == 0 and [r["prediction"] for r in listed] == ["|".join(LABELS)] * 2
    assert [r["prob/Effusion"] for r in listed] == [rows[1]["prob/Effusion"], rows[0]["prob/Effusion"]]


def test_16bit_png_is_not_saturated(tmp_path, classifier_dir, capsys):
    array = (np.add.outer(np.arange(40), np.arange(48)) * 700 + 300).astype(np.uint16)  # up to ~61k
    Image.fromarray(array).save(tmp_path / "deep.png")
    code, _, err = run(["--model", str(classifier_dir), "--input", str(tmp_path / "deep.png"),
                        "--output", str(tmp_path / "r.csv")], capsys)
    assert code == 0, err
    got = np.array([float(read_rows(tmp_path / "r.csv")[0][f"prob/{label}"]) for label in LABELS])
    np.testing.assert_allclose(got, torch.sigmoid(direct(classifier_dir, [array])[0].logits)[0].numpy(), atol=1e-5)
    saturated = torch.sigmoid(direct(classifier_dir, [np.minimum(array, 255).astype(np.uint8)])[0].logits)[0]
    assert np.abs(got - saturated.numpy()).max() > 1e-3  # the check above can tell the two apart


def test_joint_model_writes_masks_at_original_size_and_overlays(tmp_path, joint_dir, capsys):
    shapes = {"a/case.png": (50, 70), "b/case.png": (64, 40)}  # same stem twice
    arrays = {}
    for i, (name, shape) in enumerate(shapes.items()):
        (tmp_path / name).parent.mkdir(parents=True)
        arrays[name] = _gray(shape, 10 + i)
        Image.fromarray(arrays[name]).save(tmp_path / name)
    code, _, err = run(["--model", str(joint_dir), "--input", str(tmp_path / "a"), str(tmp_path / "b"),
                        "--output", str(tmp_path / "out" / "busi.csv"), "--overlay"], capsys)
    assert code == 0, err
    rows = read_rows(tmp_path / "out" / "busi.csv")
    assert list(rows[0]) == ["path", *(f"prob/{d}" for d in DIAGNOSES), "prediction", "mask_path",
                             "mask_foreground_fraction"]
    assert [r["mask_path"] for r in rows] == ["busi_masks/case.png", "busi_masks/case_2.png"]
    outputs, _ = direct(joint_dir, list(arrays.values()))
    probs = torch.softmax(outputs.class_logits, -1).numpy()
    for row, (name, shape), p, logits in zip(rows, shapes.items(), probs, outputs.logits):
        np.testing.assert_allclose([float(row[f"prob/{d}"]) for d in DIAGNOSES], p, atol=1e-5)
        assert row["prediction"] == DIAGNOSES[int(p.argmax())]
        with Image.open(tmp_path / "out" / row["mask_path"]) as image:
            assert image.mode == "L" and image.size == (shape[1], shape[0])
            mask = np.asarray(image)
        expected = torch.nn.functional.interpolate(logits.argmax(0)[None, None].float(), size=shape,
                                                   mode="nearest-exact")[0, 0].numpy().astype(np.uint8)
        np.testing.assert_array_equal(mask, expected)
        assert float(row["mask_foreground_fraction"]) == pytest.approx((mask != 0).mean(), abs=1e-5)
        overlay = tmp_path / "out" / row["mask_path"].replace(".png", "_overlay.png")
        with Image.open(overlay) as image:
            assert image.mode == "RGB" and image.size == (shape[1], shape[0])
    record = json.loads((tmp_path / "out" / "busi.json").read_text())
    assert record["mask_classes"] and record["preprocessing"]["size"] == {"height": 64, "width": 64}


def test_corrupt_file_is_skipped_and_counted(tmp_path, classifier_dir, capsys):
    (tmp_path / "in").mkdir()
    Image.fromarray(_gray((32, 32), 5)).save(tmp_path / "in" / "good.png")
    corrupt_file(tmp_path / "in" / "broken.png")
    code, out, err = run(["--model", str(classifier_dir), "--input", str(tmp_path / "in"),
                          "--output", str(tmp_path / "r.csv")], capsys)
    assert code == 1
    assert "broken.png" in err and "skipped" in err
    assert "predicted 1, skipped 1" in out
    assert [r["path"].endswith("good.png") for r in read_rows(tmp_path / "r.csv")] == [True]
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["num_skipped"] == 1 and record["skipped"][0]["path"].endswith("broken.png")
    assert record["skipped"][0]["reason"]


def test_usage_errors_exit_2(tmp_path, classifier_dir, capsys):
    pretraining = save(ETMAEForPreTraining(ETMAEConfig.from_preset("tiny_test")), tmp_path / "pretrained")
    Image.fromarray(_gray((32, 32), 6)).save(tmp_path / "x.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "list.csv").write_text("file\nx.png\n")
    capsys.readouterr()  # save_pretrained's progress output
    for argv, message in (([str(pretraining), str(tmp_path / "x.png")], "pre-training checkpoint"),
                          ([str(tmp_path / "missing"), str(tmp_path / "x.png")], "model folder not found"),
                          ([str(classifier_dir), str(tmp_path / "empty")], "no input images found"),
                          ([str(classifier_dir), str(tmp_path / "list.csv")], "missing column 'path'")):
        code, _, err = run(["--model", argv[0], "--input", argv[1], "--output", str(tmp_path / "r.csv")], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r.csv").exists()


def test_discover_inputs_order_and_duplicates(tmp_path):
    for name in ("s/x10.jpg", "s/x9.PNG", "s/notes.txt", "s/deeper/a.tif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "s" / "list.csv").write_text("path\nx9.PNG\ndeeper/a.tif\n")
    found = discover_inputs([str(tmp_path / "s" / "list.csv"), str(tmp_path / "s")])
    assert [p.relative_to(tmp_path / "s").as_posix() for p in found] == ["x9.PNG", "deeper/a.tif", "x10.jpg"]


@pytest.mark.parametrize("name", ["SDDAMAEForSemanticSegmentation", "SDDAMAEForImageClassification"])
def test_other_sdda_heads(tmp_path, name, capsys):
    import medmae

    config = SDDAMAEConfig.from_preset("tiny_test", id2label={0: "background", 1: "lesion"})
    save(getattr(medmae, name)(config), tmp_path / "model")
    Image.fromarray(_gray((30, 20), 7)).save(tmp_path / "x.png")
    code, _, err = run(["--model", str(tmp_path / "model"), "--input", str(tmp_path / "x.png"),
                        "--output", str(tmp_path / "r.csv")], capsys)
    assert code == 0, err
    row = read_rows(tmp_path / "r.csv")[0]
    if name == "SDDAMAEForSemanticSegmentation":
        assert list(row) == ["path", "prediction", "mask_path", "mask_foreground_fraction"]
        with Image.open(tmp_path / row["mask_path"]) as image:
            assert image.size == (20, 30)
    else:  # softmax over its id2label classes
        assert list(row) == ["path", "prob/background", "prob/lesion", "prediction"]
        assert float(row["prob/background"]) + float(row["prob/lesion"]) == pytest.approx(1, abs=1e-6)
