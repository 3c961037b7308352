"""SDDA-MAE and the transformers contract: Auto classes, save/load, remote code, pipeline, Trainer, attention."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    AutoModelForSemanticSegmentation,
    pipeline,
)

from medmae import (
    MedMAEImageProcessor,
    SDDAMAEConfig,
    SDDAMAEForImageClassification,
    SDDAMAEForPreTraining,
    SDDAMAEForSegmentationAndClassification,
    SDDAMAEForSemanticSegmentation,
    SDDAMAEModel,
)
from testing_utils import run_without_medmae

SEG_LABELS = {0: "background", 1: "tumour", 2: "cyst"}
DIAGNOSES = {0: "normal", 1: "benign", 2: "malignant"}


def tiny(**overrides):
    return SDDAMAEConfig.from_preset("tiny_test", **overrides)


def processor():
    return MedMAEImageProcessor(size={"height": 64, "width": 64})


def segmenter(seed=0):
    torch.manual_seed(seed)
    model = SDDAMAEForSemanticSegmentation(tiny(id2label=SEG_LABELS)).eval()
    with torch.no_grad():  # a visibly non-trivial head, so the predicted map has several classes
        model.segmentation_head.classifier.weight.normal_(std=2.0)
    return model


def test_auto_classes_from_a_pretraining_folder(tmp_path):
    SDDAMAEForPreTraining(tiny()).save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is SDDAMAEConfig
    assert type(AutoModel.from_pretrained(tmp_path)) is SDDAMAEModel
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is SDDAMAEForPreTraining
    assert type(AutoModelForSemanticSegmentation.from_pretrained(tmp_path)) is SDDAMAEForSemanticSegmentation
    assert type(AutoModelForImageClassification.from_pretrained(tmp_path)) is SDDAMAEForImageClassification


def test_save_load_round_trip_is_identical(tmp_path):
    torch.manual_seed(0)
    model = SDDAMAEForSegmentationAndClassification(tiny(id2label=SEG_LABELS, cls_id2label=DIAGNOSES)).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["cls_id2label"] == {"0": "normal", "1": "benign", "2": "malignant"}
    reloaded = SDDAMAEForSegmentationAndClassification.from_pretrained(tmp_path).eval()
    assert reloaded.config.cls_id2label == DIAGNOSES and reloaded.config.id2label == SEG_LABELS
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), reloaded(x)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.class_logits, b.class_logits)


def test_attention_implementation_is_eager_only(tmp_path):
    SDDAMAEForSemanticSegmentation(tiny()).save_pretrained(tmp_path)
    model = SDDAMAEForSemanticSegmentation.from_pretrained(tmp_path, attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
    assert SDDAMAEForSemanticSegmentation.from_pretrained(tmp_path).config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="does not support"):
        SDDAMAEForSemanticSegmentation.from_pretrained(tmp_path, attn_implementation="sdpa")


def test_remote_code_loads_without_medmae(tmp_path):
    seg_folder, pre_folder, joint_folder = tmp_path / "sdda-seg", tmp_path / "sdda-pre", tmp_path / "sdda-joint"
    model = segmenter()
    model.save_pretrained(seg_folder)
    processor().save_pretrained(seg_folder)
    torch.manual_seed(1)
    pretraining = SDDAMAEForPreTraining(tiny()).eval()
    pretraining.save_pretrained(pre_folder)
    joint = SDDAMAEForSegmentationAndClassification(tiny()).eval()
    joint.save_pretrained(joint_folder)
    joint_map = json.loads((joint_folder / "config.json").read_text())["auto_map"]
    assert joint_map["AutoModelForSemanticSegmentation"] == "modeling_sdda_mae.SDDAMAEForSegmentationAndClassification"
    files = {p.name for p in seg_folder.iterdir()}
    assert {"configuration_sdda_mae.py", "modeling_sdda_mae.py", "sdda_layers.py", "layers.py"} <= files
    auto_map = json.loads((seg_folder / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForSemanticSegmentation"] == "modeling_sdda_mae.SDDAMAEForSemanticSegmentation"
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    noise = torch.rand(1, 16, generator=torch.Generator().manual_seed(3))
    torch.save({"x": x, "noise": noise}, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected_seg = model(x).logits
        expected_loss = pretraining(x, noise=noise).loss
        expected_class_logits = joint(x).class_logits
    out = run_without_medmae(
        f"""
        import torch
        from transformers import AutoModelForPreTraining, AutoModelForSemanticSegmentation
        inputs = torch.load("{tmp_path / 'inputs.pt'}")
        seg = AutoModelForSemanticSegmentation.from_pretrained("{seg_folder}", trust_remote_code=True).eval()
        pre = AutoModelForPreTraining.from_pretrained("{pre_folder}", trust_remote_code=True).eval()
        joint = AutoModelForSemanticSegmentation.from_pretrained("{joint_folder}", trust_remote_code=True).eval()
        assert type(seg).__module__.startswith("transformers_modules"), type(seg).__module__
        with torch.no_grad():
            torch.save({{"seg": seg(inputs["x"]).logits, "loss": pre(inputs["x"], noise=inputs["noise"]).loss,
                        "class_logits": joint(inputs["x"]).class_logits}}, "{tmp_path / 'remote.pt'}")
        print(type(seg).__name__, type(pre).__name__, type(joint).__name__)
        """,
        cwd=tmp_path,
    )
    assert out.split() == ["SDDAMAEForSemanticSegmentation", "SDDAMAEForPreTraining",
                           "SDDAMAEForSegmentationAndClassification"]
    remote = torch.load(tmp_path / "remote.pt")
    torch.testing.assert_close(remote["seg"], expected_seg, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(remote["loss"], expected_loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(remote["class_logits"], expected_class_logits, atol=1e-6, rtol=1e-6)


def test_image_segmentation_pipeline(tmp_path):
    model = segmenter()
    model.save_pretrained(tmp_path)
    processor().save_pretrained(tmp_path)
    segment = pipeline("image-segmentation", model=str(tmp_path), trust_remote_code=True)  # local class wins
    image = Image.fromarray((np.random.default_rng(1).random((48, 40)) * 255).astype(np.uint8))
    result = segment(image)
    with torch.no_grad():
        logits = model(processor()(image, return_tensors="pt")["pixel_values"]).logits
    expected = processor().post_process_semantic_segmentation(logits, target_sizes=[(48, 40)])[0]
    assert {r["label"] for r in result} == {SEG_LABELS[int(i)] for i in expected.unique()}
    for entry in result:
        assert entry["mask"].size == (40, 48)  # PIL: (width, height)
        class_id = next(i for i, name in SEG_LABELS.items() if name == entry["label"])
        assert np.array_equal(np.array(entry["mask"]) > 0, (expected == class_id).numpy())


def test_trainer_fine_tunes_the_joint_model_with_two_label_tensors(tmp_path):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature
    from transformers import Trainer, TrainingArguments

    rng = np.random.default_rng(0)
    rows = {
        "image": [Image.fromarray((rng.random((70, 70)) * 255).astype(np.uint8)) for _ in range(8)],
        "mask": [Image.fromarray((rng.random((70, 70)) > 0.7).astype(np.uint8)) for _ in range(8)],
        "diagnosis": rng.integers(0, 3, 8).tolist(),
    }
    features = Features({"image": ImageFeature(), "mask": ImageFeature(), "diagnosis": ClassLabel(names=list(DIAGNOSES.values()))})
    dataset = Dataset.from_dict(rows, features=features)
    proc = processor()

    def transform(batch):
        encoded = proc(batch["image"], segmentation_maps=batch["mask"], return_tensors="pt")
        return {"pixel_values": encoded["pixel_values"], "labels": encoded["labels"],
                "class_labels": torch.tensor(batch["diagnosis"])}

    torch.manual_seed(0)
    pretraining = SDDAMAEForPreTraining(tiny())
    model = SDDAMAEForSegmentationAndClassification.from_pretraining(pretraining, cls_id2label=DIAGNOSES)
    before_seg = model.segmentation_head.classifier.weight.detach().clone()
    before_cls = model.classification_head.classifier.weight.detach().clone()
    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_train_epochs=1,
                             learning_rate=1e-3, report_to="none", use_cpu=True, remove_unused_columns=False,
                             save_strategy="no", logging_steps=1, disable_tqdm=True, per_device_eval_batch_size=4)
    trainer = Trainer(model=model, args=args, train_dataset=dataset.with_transform(transform),
                      eval_dataset=dataset.with_transform(transform))
    assert set(trainer.label_names) == {"labels", "class_labels"}
    result = trainer.train()
    assert result.global_step == 2 and np.isfinite(result.training_loss)
    assert not torch.equal(model.segmentation_head.classifier.weight.detach(), before_seg)
    assert not torch.equal(model.classification_head.classifier.weight.detach(), before_cls)
    prediction = trainer.predict(dataset.with_transform(transform))
    seg_logits, class_logits = prediction.predictions  # partial losses are keys_to_ignore_at_inference
    assert seg_logits.shape == (8, 2, 64, 64) and class_logits.shape == (8, 3)
    assert np.isfinite(prediction.metrics["test_loss"])
