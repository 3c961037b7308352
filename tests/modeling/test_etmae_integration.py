"""ETMAE and the transformers contract: Auto classes, save/load, remote code, pipeline, Trainer."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    pipeline,
)

from medmae import ETMAEConfig, ETMAEForImageClassification, ETMAEForPreTraining, ETMAEModel, MedMAEImageProcessor
from testing_utils import run_without_medmae

LABELS = ["Atelectasis", "Cardiomegaly", "Effusion"]


def tiny(**overrides):
    return ETMAEConfig.from_preset("tiny_test", **overrides)


def multilabel_classifier():
    config = tiny(num_labels=3, problem_type="multi_label_classification",
                  id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    torch.manual_seed(0)
    model = ETMAEForImageClassification(config).eval()
    with torch.no_grad():  # a visibly non-trivial head, so logits differ between images
        model.classifier.weight.normal_(std=0.5)
    return model


def processor():
    return MedMAEImageProcessor(size={"height": 32, "width": 32})


def test_save_load_round_trip_is_identical(tmp_path):
    model = ETMAEForPreTraining(tiny()).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = ETMAEForPreTraining.from_pretrained(tmp_path).eval()
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    a, b = model(x, noise=noise), reloaded(x, noise=noise)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss)


def test_auto_classes(tmp_path):
    ETMAEForPreTraining(tiny()).save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is ETMAEConfig
    assert type(AutoModel.from_pretrained(tmp_path)) is ETMAEModel
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is ETMAEForPreTraining
    assert type(AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=2)) is ETMAEForImageClassification
    processor().save_pretrained(tmp_path)
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is MedMAEImageProcessor


def test_saved_folder_is_self_contained_remote_code(tmp_path):
    multilabel_classifier().save_pretrained(tmp_path)
    processor().save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert {"configuration_etmae.py", "modeling_etmae.py", "layers.py", "image_processing_medmae.py"} <= set(files)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_etmae.ETMAEForImageClassification"
    assert config["auto_map"]["AutoConfig"] == "configuration_etmae.ETMAEConfig"
    processor_config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert processor_config["auto_map"]["AutoImageProcessor"] == "image_processing_medmae.MedMAEImageProcessor"
    for name in ("modeling_etmae.py", "layers.py", "configuration_etmae.py"):
        source = (tmp_path / name).read_text()
        # layers.py names medmae's Hub push, imported by name only in medmae's own file, never as remote code
        others = source.replace("medmae.modeling", "").replace("medmae.hub_cards", "")
        assert "from .." not in source and "medmae." not in others


def test_remote_code_loads_without_medmae(tmp_path):
    model = multilabel_classifier()
    folder = tmp_path / "etmae-tiny"
    model.save_pretrained(folder)
    processor().save_pretrained(folder)
    image = (np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)
    np.save(tmp_path / "image.npy", image)
    pixel_values = processor()(image, return_tensors="pt")["pixel_values"]
    expected = model(pixel_values).logits
    out = run_without_medmae(
        f"""
        import numpy as np, torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained("{folder}", trust_remote_code=True).eval()
        proc = AutoImageProcessor.from_pretrained("{folder}", trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        pixel_values = proc(np.load("{tmp_path / 'image.npy'}"), return_tensors="pt")["pixel_values"]
        print(repr(model(pixel_values).logits.tolist()))
        """,
        cwd=tmp_path,
    )
    torch.testing.assert_close(torch.tensor(eval(out.strip().splitlines()[-1])), expected, atol=1e-6, rtol=1e-6)


def test_pipeline_multilabel_uses_sigmoid(tmp_path):
    model = multilabel_classifier()
    model.save_pretrained(tmp_path)
    processor().save_pretrained(tmp_path)
    classify = pipeline("image-classification", model=str(tmp_path))
    image = Image.fromarray((np.random.default_rng(1).random((40, 40)) * 255).astype(np.uint8))
    result = classify(image, top_k=None)
    scores = {r["label"]: r["score"] for r in result}
    assert set(scores) == set(LABELS)
    logits = model(processor()(image, return_tensors="pt")["pixel_values"]).logits[0]
    for i, name in enumerate(LABELS):
        assert abs(scores[name] - torch.sigmoid(logits[i]).item()) < 1e-5


def test_feature_extraction_pipeline_pools_with_pooler_output(tmp_path):
    torch.manual_seed(0)
    model = ETMAEModel(tiny(teacher_hidden_size=None)).eval()
    model.save_pretrained(tmp_path)
    processor().save_pretrained(tmp_path)
    image = Image.fromarray((np.random.default_rng(2).random((40, 40)) * 255).astype(np.uint8))
    pixels = processor()(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(pixels)
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[:, 1:].mean(dim=1))
    extract = pipeline("image-feature-extraction", model=str(tmp_path))
    pooled = np.asarray(extract(image, pool=True))
    np.testing.assert_allclose(pooled.reshape(-1), out.pooler_output[0].numpy(), atol=1e-5)
    cls_model = ETMAEModel(tiny(teacher_hidden_size=None, global_pool="cls")).eval()
    with torch.no_grad():
        cls_out = cls_model(pixels)
    torch.testing.assert_close(cls_out.pooler_output, cls_out.last_hidden_state[:, 0])


def test_small_configs_derive_their_align_layers():
    config = ETMAEConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    assert config.student_align_layer == 0 and config.teacher_align_layer is None  # 3/4 of 2 blocks
    assert ETMAEConfig().student_align_layer == 8  # 3/4 of 12, the paper's
    with pytest.raises(ValueError, match="student_align_layer 5 is beyond"):
        ETMAEConfig(num_hidden_layers=4, student_align_layer=5)
    student = ETMAEForPreTraining(tiny(teacher_align_layer=None))
    student.set_teacher(ETMAEModel(tiny(hidden_size=48, intermediate_size=96, num_attention_heads=2,
                                        num_hidden_layers=8)))
    assert student.config.teacher_align_layer == 5  # derived from the teacher's 8 blocks


def test_trainer_fine_tunes_on_an_image_dataset(tmp_path):
    from datasets import Dataset, Features, List, Value
    from datasets import Image as ImageFeature
    from transformers import Trainer, TrainingArguments

    rng = np.random.default_rng(0)
    rows = {"image": [Image.fromarray((rng.random((36, 36)) * 255).astype(np.uint8)) for _ in range(8)],
            "labels": [rng.integers(0, 2, 3).astype(np.float32).tolist() for _ in range(8)]}
    dataset = Dataset.from_dict(rows, features=Features({"image": ImageFeature(), "labels": List(Value("float32"))}))
    proc = processor()

    def transform(batch):
        return {"pixel_values": proc(batch["image"], return_tensors="pt")["pixel_values"],
                "labels": torch.tensor(batch["labels"], dtype=torch.float32)}

    model = multilabel_classifier()
    before = model.classifier.weight.detach().clone()
    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_train_epochs=1,
                             learning_rate=1e-3, report_to="none", use_cpu=True, remove_unused_columns=False,
                             save_strategy="no", logging_steps=1, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=dataset.with_transform(transform))
    result = trainer.train()
    assert result.global_step == 2 and np.isfinite(result.training_loss)
    assert not torch.equal(model.classifier.weight.detach(), before)
    assert ETMAEForImageClassification.accepts_loss_kwargs is False

    def masked(batch):  # CheXpert's "ignore" policy: a label_mask column reaches forward through Trainer
        out = transform(batch)
        out["label_mask"] = torch.ones_like(out["labels"])
        out["label_mask"][:, 0] = 0
        return out

    result = Trainer(model=model, args=args, train_dataset=dataset.with_transform(masked)).train()
    assert result.global_step == 2 and np.isfinite(result.training_loss)


def test_multilabel_loss_masks_ignored_entries_and_refuses_uncertain_targets():
    model = multilabel_classifier()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    flipped = labels.clone()
    flipped[0, 1] = 1.0  # changes only an ignored entry
    with torch.no_grad():
        a = model(x, labels=labels, label_mask=mask).loss
        b = model(x, labels=flipped, label_mask=mask).loss
        c = model(x, labels=flipped).loss
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="must be 0 or 1, got \\[-1.0\\].*uncertainty policy"):
        model(x, labels=torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]]))
