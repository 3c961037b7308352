"""``medmae reproduce sdda``: the ablation runner end to end (--quick), continuation, and bad input."""

import json
import shutil

import pytest

from medmae.training import cli, reproduce


@pytest.fixture(scope="module")
def quick_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "sdda"
    result = reproduce.main(["sdda", "--quick", "--output_dir", str(out)])
    return out, result


def test_quick_sweep_writes_the_papers_layout(quick_sweep):
    out, result = quick_sweep
    assert (out / "ablation.md").is_file() and (out / "ablation.json").is_file() and (out / "mask_ratio.png").is_file()
    saved = json.loads((out / "ablation.json").read_text())
    assert list(saved["rows"]) == [name for name, _, _ in reproduce.SDDA_ROWS]
    assert all(len(per["dice"]) == 2 for per in saved["rows"].values())  # two seeds per row
    assert set(saved["mask_ratio"]) == {"0.4", "0.6"} and saved["distance_convention"] == "medpy"
    assert {v["claim"] for v in saved["verdicts"]} == {c for c, _, _ in reproduce.SDDA_CLAIMS}
    assert all(v["status"] for v in saved["verdicts"]) and saved["setting"]["preset"] == "quick"
    text = (out / "ablation.md").read_text()
    assert "Only Encoder (DAT & SD)" in text and "HD95 (medpy)" in text and " ± " in text
    # each pre-training is shared: 2 seeds x (dat, dat_sd at 0.6, dat_sd at 0.4); 2 x (5 rows + 1 ratio) fine-tunings
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert sum(n.startswith("pretrain_") for n in runs) == 6 and sum(n.startswith("finetune_") for n in runs) == 12
    dat = json.loads((out / "runs" / "pretrain_dat_mr60_seed0" / "run_info.json").read_text())
    assert json.loads(dat["hyperparameters"]["config_overrides"])["sd_weight"] == 0.0
    # the rows really differ in their starting weights
    ft = json.loads((out / "runs" / "finetune_dat_sd_encoder_seed1" / "run_info.json").read_text())
    assert ft["transfer"]["transfer"] == "encoder" and ft["seed"] == 1


def test_a_partial_sweep_continues_and_another_sweep_is_refused(quick_sweep, tmp_path):
    out, result = quick_sweep
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "ablation.md").unlink()
    shutil.rmtree(copy / "runs" / "finetune_scratch_seed1")  # as if interrupted before this run
    again = reproduce.main(["sdda", "--quick", "--output_dir", str(copy)])
    assert (copy / "ablation.md").is_file()
    kept = {k: v for k, v in result["rows"].items() if not k.startswith("From scratch")}
    assert {k: v for k, v in again["rows"].items() if not k.startswith("From scratch")} == kept  # read back
    with pytest.raises(ValueError, match="other settings"):
        reproduce.main(["sdda", "--quick", "--sd_weight", "0.5", "--output_dir", str(copy)])


@pytest.mark.parametrize("argv, message", [
    (["sdda", "--dataset", "mnist"], "unknown --dataset 'mnist'"),
    (["sdda", "--dataset", "busi"], "needs --data_root"),
    (["sdda", "--dataset", "busi", "--data_root", "/nonexistent/BUSI"], "no such folder"),
    (["sdda", "--quick", "--mask_ratios"], "--mask_ratios/--mask-ratios: expected at least one argument"),
    (["sdda", "--quick", "--mask_ratios", "0.6", "1.2"], "must lie in (0, 1)"),
    (["sdda", "--quick", "--seeds", "0", "0"], "distinct"),
    (["sdda", "--preset", "huge"], "unknown --preset"),
    (["etmae2"], "unknown method"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert cli.main(["reproduce", *argv, "--output_dir", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
