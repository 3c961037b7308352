"""Figures: one validation panel per unit, every logged label shown, every title naming its run."""

import numpy as np
import pytest

from medmae.training import figures


def test_validation_panels_never_mix_units_and_keep_every_label():
    sdda = ["dice", "jaccard", "hd95", "asd", "dice_positive", "accuracy", "precision", "recall", "loss"]
    panels = dict(figures.validation_panels(sdda))
    assert panels["distance (pixels)"] == ["hd95", "asd"] and panels["loss"] == ["loss"]
    assert "hd95" not in panels["score (0-1)"] and "dice" in panels["score (0-1)"]
    labels = ["Atelectasis", "Cardiomegaly", "Effusion", "Mass", "Nodule", "Pneumothorax", "Consolidation", "Edema"]
    etmae = ["mauc", *[f"auc/{name}" for name in labels]]
    assert figures.validation_panels(etmae) == [("score (0-1)", etmae)]  # 0.1 dropped the 9th series (Edema)


@pytest.fixture
def titles(monkeypatch):
    seen = []
    save = figures._save

    def spy(fig, path, title):
        seen.append((title, len(fig.axes)))
        return save(fig, path, title)

    monkeypatch.setattr(figures, "_save", spy)
    return seen


def test_every_figure_names_its_run(tmp_path, titles):
    history = [{"step": s, "epoch": 0, "split": "train", "loss": 1.0 / s} for s in (1, 2)]
    history += [{"step": 2, "epoch": 0, "split": "validation", "dice": 0.5, "hd95": 12.0, "loss": 0.3}]
    figures.loss_curves(history, tmp_path / "l.png", title="run_42: sdda_mae segmentation_classification")
    assert titles[-1] == ("run_42: sdda_mae segmentation_classification", 4)  # train + score + distance + loss
    rng = np.random.default_rng(0)
    figures.roc_curves(rng.random((20, 2)), rng.integers(0, 2, (20, 2)), ["a", "b"], tmp_path / "r.png",
                       title="run_42: etmae")
    images, masks = rng.random((2, 8, 8)), rng.integers(0, 2, (2, 8, 8))
    figures.segmentation_overlays(images, masks, masks, tmp_path / "s.png", title="run_42: sdda")
    figures.mae_reconstructions(images, images, images, tmp_path / "m.png", title="run_42: mae")
    assert all(title.startswith("run_42") for title, _ in titles)
