"""What the README tells users about pipelines and folders, checked as they would run it."""

import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers import AutoModel
from transformers.image_utils import load_image

from medmae import ETMAEConfig, ETMAEForImageClassification
from medmae.modeling.image_processing_medmae import processor_for_config

LABELS = [f"finding_{k}" for k in range(7)]  # more than the pipeline's default top_k of 5


def classifier_folder(tmp_path):
    config = ETMAEConfig.from_preset("tiny_test", num_labels=7, problem_type="multi_label_classification",
                                     id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    folder = tmp_path / "clf"
    ETMAEForImageClassification(config).save_pretrained(folder)
    processor_for_config(config).save_pretrained(folder)
    return folder


def test_pipeline_with_medmae_installed_does_not_prompt_and_returns_every_label(tmp_path):
    folder = classifier_folder(tmp_path)
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    script = (
        "import medmae\nfrom transformers import pipeline\n"
        f"classify = pipeline('image-classification', model={str(folder)!r}, trust_remote_code=False)\n"
        f"print('LABELS', len(classify({str(tmp_path / 'x.png')!r}, top_k=classify.model.config.num_labels)),\n"
        f"      len(classify({str(tmp_path / 'x.png')!r}, top_k=None)))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "run the custom code" not in result.stdout + result.stderr
    assert "LABELS 7 5" in result.stdout  # top_k=num_labels: every finding; top_k=None: only 5


def test_automodel_on_a_classifier_folder_is_the_encoder_with_a_new_final_norm(tmp_path):
    encoder, info = AutoModel.from_pretrained(classifier_folder(tmp_path), output_loading_info=True)
    assert type(encoder).__name__ == "ETMAEModel" and set(info["missing_keys"]) == {"norm.weight", "norm.bias"}


def test_transformers_load_image_saturates_16_bit_pngs(tmp_path):
    """Why the README says to read 16-bit files yourself (or use medmae predict)."""
    values = (np.arange(1600).reshape(40, 40) * 2).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "x16.png")
    assert np.asarray(Image.open(tmp_path / "x16.png")).max() == 3198
    assert np.asarray(load_image(str(tmp_path / "x16.png"))).max() == 255


def readme_python_block(heading: str) -> str:
    """The first ```python block after ``heading`` in README.md."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index(heading):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("```", start)]


@pytest.mark.parametrize("heading", ["## Quick start", "### Encoders as backbones for dense heads"])
def test_readme_python_blocks_run_as_written(heading, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_python_block(heading), f"README.md ({heading})", "exec"), {})


def readme_commands(heading: str) -> list[list[str]]:
    """The ``medmae ...`` command lines of the first ```bash block after ``heading`` (continuations joined)."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index(heading):]
    start = section.index("```bash\n") + len("```bash\n")
    block = section[start:section.index("```", start)].replace("\\\n", " ")
    return [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("medmae ")]


def test_real_dataset_commands_parse_with_the_scripts_own_parsers():
    """Every command of *Training on the real datasets* is accepted by its script's parser (the data is not here)."""
    from medmae.training.args import parse_args
    from medmae.training.prepare import PrepareArguments

    commands = readme_commands("### Training on the real datasets")
    assert [c[0] for c in commands].count("prepare") == 3 and [c[0] for c in commands].count("export") == 2
    for command, *argv in commands:
        if command == "prepare":
            parse_args("prepare", argv, (PrepareArguments,))
        elif command == "export":
            assert len([a for a in argv if not a.startswith("-")]) == 2  # SOURCE OUT_DIR
        else:
            parse_args(command, argv)
