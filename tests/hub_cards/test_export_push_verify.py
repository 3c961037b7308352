"""Export a training run to a Hub-ready folder, push it through a fake Hub, load it back (with medmae, with the
pipelines, and without medmae), and verify the reference outputs."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, constants
from huggingface_hub.errors import EntryNotFoundError
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from medmae import ETMAEConfig, ETMAEForImageClassification, ETMAEForPreTraining, MedMAEImageProcessor
from medmae.hub_cards.export import export_folder, main_export
from medmae.hub_cards.layout import ExportError, file_digests, write_manifest
from medmae.hub_cards.push import HubPushError, main_push, push_folder, push_model
from medmae.hub_cards.run_records import find_leaks
from medmae.hub_cards.verify import load_for_verify, main_verify, verify
from testing_utils import run_without_medmae

LABELS = ["Atelectasis", "Cardiomegaly", "Effusion"]
TRAIN_IDS = ["00000013_005.png", "00000032_012.png", "00030805_000.png"]  # NIH-style file names
EXPORTED = {"README.md", "config.json", "model.safetensors", "preprocessor_config.json",
            "reference_sample.safetensors", "configuration_etmae.py", "modeling_etmae.py", "layers.py",
            "statistics.py", "image_processing_medmae.py", "medmae_manifest.json"}


def classifier():
    config = ETMAEConfig.from_preset("tiny_test", num_labels=3, problem_type="multi_label_classification",
                                     id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    torch.manual_seed(0)
    model = ETMAEForImageClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(std=0.5)
    return model


def processor():
    return MedMAEImageProcessor(size={"height": 32, "width": 32})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A training run as the training scripts write it, next to a dataset folder and run leftovers."""
    root = tmp_path_factory.mktemp("runs")
    data = root / "datasets" / "nih"
    (data / "images").mkdir(parents=True)
    for name in TRAIN_IDS:
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(data / "images" / name)
    run = root / "etmae-ft-nih14"
    classifier().save_pretrained(run / "final")
    processor().save_pretrained(run / "final")
    (run / "optimizer.pt").write_bytes(b"optimizer state")
    (run / "checkpoint-2").mkdir()
    (run / "split_manifest.json").write_text(json.dumps(
        {"format": "medmae-split-manifest/1", "info": {"root": str(data)}, "counts": {"train": 2, "test": 1},
         "splits": {"train": TRAIN_IDS[:2], "test": TRAIN_IDS[2:]}}))
    (run / "run_info.json").write_text(json.dumps({
        "family": "etmae", "task": "multilabel_classification", "dataset": "chestxray14",
        "split": {"kind": "official"}, "uncertainty_policy": None, "eval_split": "test",
        "hyperparameters": {"lr": 1e-3, "epochs": 2, "batch_size": 4, "data_root": str(data),
                            "output_dir": str(run), "train_list": str(data / "train_val_list.txt")},
        "metrics": {"macro_auroc": 0.61}, "base_model": "medmae/etmae-vit-tiny", "git_commit": "f1aa8bf",
        "teacher": "medmae/etmae-vit-small-teacher", "teacher_sha256": "b" * 64, "seed": 0,
    }))
    return run


@pytest.fixture(scope="module")
def exported(run_dir):
    # provenance links are Hub ids given to export explicitly (the run's own records name local folders)
    return export_folder(run_dir, run_dir.parent / "export" / "etmae-vit-tiny-p16-32-ft-nih14",
                         repo_id="medmae/etmae-vit-tiny-p16-32-ft-nih14",
                         run_info={"base_model": "medmae/etmae-vit-tiny", "teacher": "medmae/etmae-vit-small-teacher"})


class FakeHub:
    """Replaces HfApi.create_repo / create_branch / create_commit: commits land in a local folder."""

    def __init__(self, root: Path):
        self.root, self.repos, self.commits = root, {}, []

    def folder(self, repo_id, revision=None):
        return self.root / repo_id / (revision or "main")

    def install(self, monkeypatch):
        hub = self

        def create_repo(api, repo_id, *, private=None, exist_ok=False, token=None, **kw):
            hub.repos[repo_id] = {"private": private, "token": token if token is not None else api.token}
            return SimpleNamespace(repo_id=repo_id)

        def create_branch(api, repo_id, *, branch, exist_ok=False, **kw):
            hub.folder(repo_id, branch).mkdir(parents=True, exist_ok=True)

        def create_commit(api, repo_id, operations, *, commit_message, revision=None, **kw):
            target = hub.folder(repo_id, revision)
            target.mkdir(parents=True, exist_ok=True)
            names = []
            for op in operations:
                source = op.path_or_fileobj
                data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
                (target / op.path_in_repo).write_bytes(data)
                names.append(op.path_in_repo)
            hub.commits.append(dict(repo_id=repo_id, files=names, message=commit_message, revision=revision))
            return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0", oid="0")

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_branch", create_branch)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
        # transformers' push_to_hub looks for an existing card on the Hub first
        monkeypatch.setattr("transformers.utils.hub.ModelCard.load",
                            lambda *a, **k: (_ for _ in ()).throw(EntryNotFoundError("no README")))
        return self


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    return FakeHub(tmp_path / "hub").install(monkeypatch)


# ---- export ------------------------------------------------------------------------------------------
def test_export_writes_only_the_allow_list_with_provenance(exported, run_dir):
    assert {p.name for p in exported.iterdir()} == EXPORTED
    with safe_open(str(exported / "model.safetensors"), "pt") as handle:
        meta = handle.metadata()
    assert meta["format"] == "pt" and meta["medmae_version"] and meta["git_commit"] == "f1aa8bf"
    assert meta["teacher"] == "medmae/etmae-vit-small-teacher" and meta["teacher_sha256"] == "b" * 64
    assert meta["dataset"] == "chestxray14" and len(meta["split_manifest_sha256"]) == 64
    config = json.loads((exported / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_etmae.ETMAEForImageClassification"
    reference = load_file(str(exported / "reference_sample.safetensors"))
    assert reference["sample_image"].dtype == torch.uint8 and tuple(reference["pixel_values"].shape) == (1, 3, 32, 32)
    torch.testing.assert_close(reference["output.logits"],
                               classifier()(reference["pixel_values"]).logits, atol=0, rtol=0)
    assert (exported / "reference_sample.safetensors").stat().st_size < 64_000


def test_export_leaks_no_path_dataset_root_or_training_file_name(exported, run_dir):
    card = ModelCard.load(exported / "README.md")
    assert card.data.eval_results[0].metric_value == 0.61
    for path in exported.iterdir():
        data = path.read_bytes()
        for forbidden in (str(run_dir.parent), str(run_dir), "datasets/nih", *TRAIN_IDS, "train_val_list"):
            assert forbidden.encode() not in data, (path.name, forbidden)
    assert "hyperparameters.data_root" in card.text and "| `lr` | 0.001 |" in card.text
    assert find_leaks(exported, [str(run_dir)]) == []


def test_local_folder_and_file_names_never_ship(tmp_path):
    """A run whose folders and files are named after a patient: no name reaches any exported file."""
    run = tmp_path / "pt_MRN4711_DOE_finetune"
    classifier().save_pretrained(run / "final")
    processor().save_pretrained(run / "final")
    (run / "run_info.json").write_text(json.dumps({
        "family": "etmae", "task": "multilabel_classification", "dataset": "synthetic_cxr", "eval_split": "test",
        "metrics": {"mauc": 0.61}, "base_model": "pt_MRN4711_DOE", "source_checkpoint_sha256": "a" * 64,
        "teacher": "runs/MRN4711_teacher", "teacher_sha256": "b" * 64,
        "hyperparameters": {"init_from": "pt_MRN4711_DOE", "teacher": "MRN4711_teacher", "config": "MRN4711_recipe.yaml",
                            "resume": "step_10", "output_dir": "pt_MRN4711_DOE_finetune", "lr": 1e-3},
    }))
    out = export_folder(run, tmp_path / "shared")
    for path in out.iterdir():
        assert b"MRN4711" not in path.read_bytes(), path.name
    card = (out / "README.md").read_text()
    assert "a" * 64 in card and "b" * 64 in card  # provenance stays, as SHA-256
    assert "huggingface.co/pt_" not in card and "hyperparameters.init_from" in card  # named as redacted
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)  # a collaborator can read it
    assert all(p.stat().st_mode & 0o044 for p in out.iterdir())


def test_export_refuses_a_folder_that_would_leak(tmp_path):
    model = classifier()
    model.config.teacher_checkpoint = "/home/alice/teachers/vit-s.pth"  # a path written into config.json
    with pytest.raises(ExportError, match="local paths"):
        export_folder(model, tmp_path / "out")
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []  # nothing half-written


def test_export_cli_from_a_saved_folder(tmp_path, capsys):
    model = classifier()
    model.save_pretrained(tmp_path / "saved")
    assert main_export([str(tmp_path / "saved"), str(tmp_path / "out"), "--repo-id", "medmae/x"]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "out").iterdir()} == EXPORTED
    assert main_export([str(tmp_path / "saved"), str(tmp_path / "out")]) == 2  # exists: no silent overwrite


# ---- verify ------------------------------------------------------------------------------------------
def test_verify_passes_with_medmae_and_with_the_shipped_code(exported, capsys):
    report = verify(exported)
    assert report.passed and report.loaded_with.startswith("medmae")
    shipped = sorted(EXPORTED - {"medmae_manifest.json"})
    assert [c.name for c in report.checks] == [*(f"file {n}" for n in shipped), "card metadata medmae_files_sha256",
                                               "preprocessing: pixel_values", "output.logits"]
    remote = verify(exported, remote_code=True)
    assert remote.passed and remote.loaded_with.startswith("the remote code")
    model, proc, _ = load_for_verify(exported, remote_code=True)
    assert type(model).__module__.startswith("transformers_modules")
    assert type(proc).__module__.startswith("transformers_modules")
    assert main_verify([str(exported)]) == 0 and "PASSED" in capsys.readouterr().out


def test_verify_detects_different_outputs(exported, tmp_path, capsys):
    tampered = tmp_path / "tampered"
    shutil.copytree(exported, tampered)
    reference = load_file(str(tampered / "reference_sample.safetensors"))
    reference["output.logits"] = reference["output.logits"] + 1e-2
    save_file(reference, str(tampered / "reference_sample.safetensors"))
    report = verify(tampered)  # the manifest catches the edit before anything is loaded
    assert not report.passed and [c.name for c in report.checks if not c.ok] == ["file reference_sample.safetensors"]
    assert report.loaded_with.startswith("nothing")
    rewrite_manifests(tampered)  # with both manifests redone, the outputs themselves catch it
    report = verify(tampered)
    outputs = [c for c in report.checks if not c.name.startswith(("file ", "card "))]
    assert not report.passed and [c.ok for c in outputs] == [True, False]
    assert main_verify([str(tampered)]) == 1 and "FAIL" in capsys.readouterr().out


def rewrite_manifests(folder):
    """What someone who edits files and then both manifests does."""
    from huggingface_hub.repocard import metadata_load, metadata_save

    metadata = metadata_load(folder / "README.md")
    metadata["medmae_files_sha256"] = file_digests(folder, exclude=("README.md", "medmae_manifest.json"))
    metadata_save(folder / "README.md", metadata)
    write_manifest(folder)


def test_verify_fails_tampered_weights_labels_and_code_naming_each_file(exported, tmp_path, capsys):
    tampered = tmp_path / "weights"
    shutil.copytree(exported, tampered)
    weights = load_file(str(tampered / "model.safetensors"))
    weights["classifier.bias"] = weights["classifier.bias"] + 1.0
    save_file(weights, str(tampered / "model.safetensors"), metadata={"format": "pt"})
    reference = load_file(str(tampered / "reference_sample.safetensors"))
    save_file({k: v for k, v in reference.items() if not k.startswith("output.")},
              str(tampered / "reference_sample.safetensors"))
    failed = [c.name for c in verify(tampered).checks if not c.ok]
    assert failed == ["file model.safetensors", "file reference_sample.safetensors"]
    rewrite_manifests(tampered)
    assert [c.detail for c in verify(tampered).checks if not c.ok] == [
        "holds no reference outputs (output.*): nothing to verify"]

    labels = tmp_path / "labels"
    shutil.copytree(exported, labels)
    config = json.loads((labels / "config.json").read_text())
    config["id2label"] = {"0": LABELS[1], "1": LABELS[0], "2": LABELS[2]}
    (labels / "config.json").write_text(json.dumps(config))
    assert [c.name for c in verify(labels).checks if not c.ok] == ["file config.json"]

    code = tmp_path / "code"
    shutil.copytree(exported, code)
    marker = tmp_path / "payload_ran"
    with open(code / "modeling_etmae.py", "a") as handle:
        handle.write(f"\nimport pathlib; pathlib.Path({str(marker)!r}).touch()\n")
    report = verify(code, remote_code=True)
    assert [c.name for c in report.checks if not c.ok] == ["file modeling_etmae.py"] and not marker.exists()
    assert main_verify([str(code), "--remote-code"]) == 1 and "modeling_etmae.py" in capsys.readouterr().out

    rewrite_manifests(labels)  # a consistent forgery passes the manifests, not a pinned manifest digest
    pinned = file_digests(exported)["medmae_manifest.json"]
    assert verify(labels).passed
    assert [c.name for c in verify(labels, manifest_sha256=pinned).checks if not c.ok] == [
        "medmae_manifest.json sha256"]
    assert verify(exported, manifest_sha256=pinned).passed


# ---- push --------------------------------------------------------------------------------------------
def test_push_uploads_one_commit_that_loads_back_identically(exported, fake_hub, capsys):
    assert main_push([str(exported), "medmae/etmae-tiny-test", "--private", "--revision", "v1"]) == 0
    assert "pushed" in capsys.readouterr().out
    assert fake_hub.repos["medmae/etmae-tiny-test"] == {"private": True, "token": "hf_fake_token_for_tests"}
    [commit] = fake_hub.commits
    assert commit["revision"] == "v1" and commit["files"][-1] == "README.md"  # the card is written last
    assert set(commit["files"]) == EXPORTED
    hub_folder = fake_hub.folder("medmae/etmae-tiny-test", "v1")
    for name in EXPORTED:
        assert (hub_folder / name).read_bytes() == (exported / name).read_bytes(), name

    original = classifier()
    loaded = AutoModelForImageClassification.from_pretrained(hub_folder).eval()
    proc = AutoImageProcessor.from_pretrained(hub_folder)
    image = Image.fromarray((np.random.default_rng(3).random((48, 40)) * 255).astype(np.uint8))
    pixel_values = proc(image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(loaded(pixel_values).logits, original(pixel_values).logits, atol=0, rtol=0)
    scores = {r["label"]: r["score"] for r in pipeline("image-classification", model=str(hub_folder))(image, top_k=None)}
    expected = torch.sigmoid(original(pixel_values).logits[0])
    assert scores == pytest.approx({name: expected[i].item() for i, name in enumerate(LABELS)}, abs=1e-6)


def test_push_refuses_offline_without_token_unreachable_or_unlisted_files(exported, fake_hub, monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubPushError, match="HF_HUB_OFFLINE"):
        push_folder(exported, "medmae/x", verify_first=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(HubPushError, match="no Hugging Face token"):
        push_folder(exported, "medmae/x", verify_first=False)
    assert main_push([str(exported), "medmae/x", "--skip-verify"]) == 2
    dirty = tmp_path / "dirty"
    shutil.copytree(exported, dirty)
    (dirty / "optimizer.pt").write_bytes(b"state")
    with pytest.raises(ExportError, match="optimizer.pt"):
        push_folder(dirty, "medmae/x", token="hf_x", verify_first=False)
    assert fake_hub.commits == [] and fake_hub.repos == {}
    monkeypatch.undo()  # the real HfApi against a closed local port: a clear error, nothing committed
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(HubPushError, match="cannot reach the Hub|refused"):
        push_folder(exported, "medmae/x", token="hf_x", verify_first=False, endpoint="http://127.0.0.1:9")
    class TransportError(Exception):  # httpx's hierarchy (huggingface_hub >= 1.0 uses httpx), not OSError
        pass

    class ReadTimeout(TransportError):
        pass

    def timeout(*args, **kwargs):
        raise ReadTimeout("The read operation timed out")

    monkeypatch.setattr(HfApi, "create_repo", timeout)
    with pytest.raises(HubPushError, match="cannot reach the Hub .*ReadTimeout.*no files were committed"):
        push_folder(exported, "medmae/x", token="hf_x", verify_first=False)


def test_push_model_equals_export_and_push_to_hub_ships_loadable_code(fake_hub, tmp_path):
    model = classifier()
    run_info = {"dataset": "synthetic_cxr", "metrics": {"macro_auroc": 0.5}, "eval_split": "test"}
    push_model(model, "medmae/full", processor=processor(), run_info=run_info)
    reference = export_folder(model, tmp_path / "full", processor=processor(), run_info=run_info, repo_id="medmae/full")
    full = fake_hub.folder("medmae/full")
    assert {p.name for p in full.iterdir()} == EXPORTED
    for name in EXPORTED:  # push_model pushes exactly what export_folder writes
        assert (full / name).read_bytes() == (reference / name).read_bytes(), name

    model.push_to_hub("medmae/plain", processor=processor())  # medmae routes push_to_hub to push_model
    plain = fake_hub.folder("medmae/plain")
    assert {p.name for p in plain.iterdir()} == EXPORTED
    assert "auto_map" in json.loads((plain / "config.json").read_text())
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(ETMAEForImageClassification.from_pretrained(plain)(x).logits, model(x).logits)


def test_remote_code_copy_pushes_as_transformers_does_even_with_medmae_installed(fake_hub, exported):
    model, _, _ = load_for_verify(exported, remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    model.push_to_hub("medmae/remote")  # transformers' push_to_hub: save_pretrained output and a generic card
    names = {p.name for p in fake_hub.folder("medmae/remote").iterdir()}
    assert {"config.json", "model.safetensors", "README.md"} <= names
    assert not names & {"reference_sample.safetensors", "medmae_manifest.json", "preprocessor_config.json"}


# ---- collaborator without medmae ---------------------------------------------------------------------
def test_collaborator_without_medmae_loads_the_export(exported, tmp_path):
    reference = load_file(str(exported / "reference_sample.safetensors"))
    out = run_without_medmae(
        f"""
        import torch
        from safetensors.torch import load_file
        from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline
        folder = "{exported}"
        model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
        proc = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        ref = load_file(folder + "/reference_sample.safetensors")
        pixel_values = proc(ref["sample_image"].numpy(), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            logits = model(pixel_values).logits
        pipe = pipeline("image-classification", model=folder, trust_remote_code=True)
        scores = pipe(ref["sample_image"].numpy(), top_k=None)
        model.save_pretrained("{tmp_path / 'resaved'}")  # transformers' save_pretrained: medmae is absent
        print(repr([pixel_values.tolist(), logits.tolist(), sorted((s["label"], s["score"]) for s in scores)]))
        """,
        cwd=tmp_path,
    )
    pixel_values, logits, scores = eval(out.strip().splitlines()[-1])
    assert (tmp_path / "resaved" / "model.safetensors").is_file()
    torch.testing.assert_close(torch.tensor(pixel_values), reference["pixel_values"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(torch.tensor(logits), reference["output.logits"], atol=1e-6, rtol=1e-6)
    expected = torch.sigmoid(reference["output.logits"][0])
    assert [s for _, s in scores] == pytest.approx([expected[LABELS.index(n)].item() for n, _ in scores], abs=1e-6)


def test_sdda_mae_export_verifies(tmp_path):
    import medmae

    if not hasattr(medmae, "SDDAMAEForSegmentationAndClassification"):
        pytest.skip("SDDA-MAE is not importable yet")
    config = medmae.SDDAMAEConfig.from_preset("tiny_test", cls_id2label={0: "normal", 1: "benign", 2: "malignant"})
    torch.manual_seed(0)
    for cls, task in ((medmae.SDDAMAEForPreTraining, "pretraining"),
                      (medmae.SDDAMAEForSegmentationAndClassification, "segmentation_classification")):
        folder = export_folder(cls(config), tmp_path / task, run_info={"task": task, "dataset": "busi"})
        reference = load_file(str(folder / "reference_sample.safetensors"))
        assert ("input.noise" in reference) == (task == "pretraining")  # masking noise is stored, not redrawn
        assert verify(folder).passed and verify(folder, remote_code=True).passed
