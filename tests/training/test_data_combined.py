"""ETMAE's pre-training set: NIH ChestX-ray14 + CheXpert together (format-exact fixtures of both)."""

import json

import numpy as np
import pytest

from medmae.training import data, registry
from medmae.training.args import parse_args

from .fixtures import build_chexpert, build_nih


@pytest.fixture
def roots(tmp_path):
    nih, chexpert = tmp_path / "NIH", tmp_path / "CheXpert"
    nih.mkdir()
    chexpert.mkdir()
    return {"chestxray14": nih, "chexpert": chexpert}, build_nih(nih), build_chexpert(chexpert)


def test_combined_set_keeps_each_sources_split_and_says_where_rows_come_from(roots, tmp_path):
    folders, nih_truth, chexpert_truth = roots
    combined = registry.load_dataset_by_name("chestxray14+chexpert", root=folders, seed=0)
    nih = data.load_chestxray14(folders["chestxray14"], seed=0)
    chexpert = data.load_chexpert(folders["chexpert"], seed=0)
    assert set(combined) == {"train", "validation", "test"}
    assert combined["train"].column_names == ["image", "image_id", "patient_id", "source"]
    for split in combined:
        rows = combined[split]
        expected = [f"chestxray14:{i}" for i in nih[split]["image_id"]] + \
                   [f"chexpert:{i}" for i in chexpert[split]["image_id"]]
        assert rows["image_id"] == expected
        assert [s for s in rows["source"]] == [i.split(":")[0] for i in expected]
    first = combined["test"][0]
    np.testing.assert_array_equal(np.asarray(first["image"]), np.asarray(nih["test"][0]["image"]))
    # patient-disjoint validation within each source
    for source in ("chestxray14", "chexpert"):
        patients = {split: {p for p, s in zip(combined[split]["patient_id"], combined[split]["source"]) if s == source}
                    for split in ("train", "validation")}
        assert not patients["train"] & patients["validation"]
    # the manifest covers both sources and rebuilds them exactly
    path = data.write_split_manifest(combined, tmp_path / "manifest.json")
    info = json.loads(path.read_text())["info"]
    assert info["dataset"] == "chestxray14+chexpert" and set(info["sources"]) == {"chestxray14", "chexpert"}
    rebuilt = registry.load_dataset_by_name("chestxray14+chexpert", root=folders, manifest=path, seed=123)
    assert {s: rebuilt[s]["image_id"] for s in rebuilt} == {s: combined[s]["image_id"] for s in combined}


def test_one_data_root_per_source_on_the_command_line(roots):
    folders, _, _ = roots
    _, args, _, _ = parse_args("pretrain", ["--dataset", "chestxray14+chexpert",
                                            "--data_root", f"chestxray14={folders['chestxray14']}",
                                            "--data_root", f"chexpert={folders['chexpert']}"])
    assert json.loads(args.data_root) == {k: str(v) for k, v in folders.items()}
    loaded = registry.load_dataset_by_name(args.dataset, args.data_root)
    assert set(loaded["train"]["source"]) == {"chestxray14", "chexpert"}
    with pytest.raises(ValueError, match="each must be SOURCE=DIR"):
        parse_args("pretrain", ["--data_root", "a", "--data_root", "b"])


def test_missing_or_wrong_roots_are_named(roots, tmp_path):
    folders, _, _ = roots
    with pytest.raises(ValueError, match=r"no folder for source\(s\) \['chexpert'\]"):
        registry.load_dataset_by_name("chestxray14+chexpert", root={"chestxray14": folders["chestxray14"]})
    with pytest.raises(FileNotFoundError, match="the chexpert folder .*nowhere does not exist"):
        registry.load_dataset_by_name("chestxray14+chexpert", root={**folders, "chexpert": tmp_path / "nowhere"})
    with pytest.raises(ValueError, match="unknown source"):
        registry.load_dataset_by_name("chestxray14+chexpert", root={**folders, "mimic": tmp_path})
    with pytest.raises(ValueError, match="one folder per source"):
        registry.load_dataset_by_name("chestxray14+chexpert", root=str(folders["chestxray14"]))
