"""Exact resume after SIGKILL mid-epoch, and a real 2-process CPU run (torchrun + ACCELERATE_USE_CPU)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from medmae.training import finetune, pretrain
from testing_utils import free_port

# 64 training images, batch 8 -> 8 steps per epoch, 3 epochs = 24 steps; checkpoints every 5 steps (mid-epoch).
# Random resized crops, flips and MAE masking all draw from the RNG streams a checkpoint must restore.
ARGS = ["--preset", "demo_etmae_teacher", "--dataset", "synthetic_cxr", "--dataset_kwargs",
        '{"num_images": 80, "image_size": 32}', "--num_train_epochs", "3", "--per_device_train_batch_size", "8",
        "--save_steps", "5",
        "--crop_scale_min", "0.5", "--report_to", "none", "--figures", "False", "--progress_bar", "False",
        "--seed", "3", "--save_total_limit", "5"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_resume_after_sigkill_mid_epoch_matches_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    pretrain.main([*ARGS, "--output_dir", str(reference)])

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "medmae.training.pretrain", *ARGS, "--output_dir", str(killed),
                                "--debug_step_delay", "0.25"], env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    marker = killed / "checkpoints" / "step_10" / "trainer_state.json"
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL and not (killed / "final").exists()
    state = json.loads(marker.read_text())
    assert state["epoch"] == 1 and 0 < state["batches_in_epoch"] < 8  # mid-epoch

    info = pretrain.main([*ARGS, "--output_dir", str(killed), "--resume_from_checkpoint", "latest"])
    assert info["resumed_from"].startswith("step_")
    expected = load_file(str(reference / "final" / "model.safetensors"))
    resumed = load_file(str(killed / "final" / "model.safetensors"))
    assert expected.keys() == resumed.keys()
    worst = max(float((expected[k].double() - resumed[k].double()).abs().max()) for k in expected)
    assert worst <= 1e-6, f"resumed weights differ by {worst}"


def test_two_process_cpu_run_with_torchrun(tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "-m", "medmae.training.finetune", "--preset", "demo_etmae", "--dataset",
               "synthetic_cxr", "--dataset_kwargs", '{"num_images": 90, "image_size": 32}', "--num_train_epochs", "1",
               "--per_device_train_batch_size", "4", "--report_to", "none", "--figures", "False", "--progress_bar",
               "False",
               "--from_scratch", "--output_dir", str(out)]
    result = subprocess.run(command, env={**_env(), "ACCELERATE_USE_CPU": "true"}, capture_output=True, text=True,
                            timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (out / ".medmae.lock").exists()  # taken by rank 0 only, released at the end
    info = json.loads((out / "run_info.json").read_text())
    assert info["num_processes"] == 2  # really two processes (not accelerate's silent single-process fallback)
    # 9 test images over 2 processes x batch 4 pads the last batch; gather_for_metrics drops the duplicates
    assert info["eval_split"] == "test" and info["eval_num_items"] == 9
    assert info["hyperparameters"]["steps_per_epoch"] == 72 // (4 * 2)
    assert (out / "final" / "model.safetensors").is_file()


def test_two_process_sdda_pretraining_needs_no_unused_parameter_search(tmp_path):
    """The frozen teacher head is not a trainable parameter, so DDP runs without find_unused_parameters."""
    out = tmp_path / "ddp_sdda"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "-m", "medmae.training.pretrain", "--preset", "demo", "--dataset",
               "synthetic_ultrasound", "--dataset_kwargs", '{"num_images": 48, "image_size": 32}', "--image_size",
               "32", "--max_steps", "4", "--per_device_train_batch_size", "4", "--report_to", "none", "--figures",
               "False",
               "--progress_bar", "False", "--logging_steps", "1", "--output_dir", str(out)]
    result = subprocess.run(command, env={**_env(), "ACCELERATE_USE_CPU": "true"}, capture_output=True, text=True,
                            timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((out / "run_info.json").read_text())
    assert info["num_processes"] == 2 and info["hyperparameters"]["total_steps"] == 4
    state = json.loads(sorted((out / "checkpoints").glob("step_*"))[-1].joinpath("trainer_state.json").read_text())
    assert all(h["sd_teacher_information"] > 0.05 for h in state["history"] if h["split"] == "train")


def _standardize_worker(rank, world, port, x, queue):
    import torch.distributed as dist

    from medmae.modeling.modeling_sdda_mae import BatchStandardize

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    norm = BatchStandardize(x.shape[1]).train()
    half = x.shape[0] // world
    out = norm(x[rank * half:(rank + 1) * half])
    queue.put((rank, out.numpy().copy(), norm.running_mean.numpy().copy(), norm.running_var.numpy().copy()))
    dist.destroy_process_group()


def test_teacher_standardisation_uses_the_global_batch_under_ddp():
    import torch
    import torch.multiprocessing as mp

    from medmae.modeling.modeling_sdda_mae import BatchStandardize

    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(0)) * 2 + 1
    single = BatchStandardize(5).train()
    expected = single(x)
    ctx = mp.get_context("spawn")
    queue, port = ctx.Queue(), free_port()
    processes = [ctx.Process(target=_standardize_worker, args=(r, 2, port, x, queue)) for r in range(2)]
    for p in processes:
        p.start()
    results = sorted((queue.get(timeout=120) for _ in processes), key=lambda r: r[0])
    for p in processes:
        p.join(timeout=60)
    results = [(rank, *(torch.from_numpy(a) for a in arrays)) for rank, *arrays in results]
    torch.testing.assert_close(torch.cat([r[1] for r in results]), expected, atol=1e-5, rtol=1e-5)
    for _, _, mean, var in results:
        torch.testing.assert_close(mean, single.running_mean, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(var, single.running_var, atol=1e-6, rtol=1e-5)


def test_two_process_sdda_joint_fine_tuning_runs_past_step_2(tmp_path):
    """0.1 crashed at step 2 ("Parameter indices which did not receive grad"): the unused fine-tuning mask token."""
    data = ["--dataset", "synthetic_ultrasound", "--dataset_kwargs", '{"num_images": 48, "image_size": 32}',
            "--image_size", "32", "--per_device_train_batch_size", "4", "--report_to", "none", "--figures", "False",
            "--progress_bar",
            "False"]
    pretrain.main(["--preset", "demo", *data, "--max_steps", "2", "--output_dir", str(tmp_path / "pre")])
    out = tmp_path / "ft"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "-m", "medmae.training.finetune", "--preset", "demo", *data, "--max_steps", "4",
               "--init_from", str(tmp_path / "pre"), "--output_dir", str(out)]
    result = subprocess.run(command, env={**_env(), "ACCELERATE_USE_CPU": "true"}, capture_output=True, text=True,
                            timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((out / "run_info.json").read_text())
    assert info["num_processes"] == 2 and info["hyperparameters"]["total_steps"] == 4


SHORT = [*ARGS[:ARGS.index("--num_train_epochs")], "--num_train_epochs", "1",
         *ARGS[ARGS.index("--num_train_epochs") + 2:]]


def test_checkpoints_hold_no_pickle_and_a_planted_one_is_refused_before_loading(tmp_path):
    out = tmp_path / "run"
    pretrain.main([*SHORT, "--output_dir", str(out)])
    step = sorted((out / "checkpoints").iterdir())[-1]
    assert {p.name for p in step.iterdir()} == {"model.safetensors", "optimizer.pt", "scheduler.json",
                                                 "trainer_state.json", "rng_state_0.json", "rng_state_0.safetensors"}
    import torch

    torch.load(step / "optimizer.pt", weights_only=True)  # plain tensors and numbers only

    class Payload:  # what an attacker plants: unpickling it would create this file
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    import pickle

    (step / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="custom_checkpoint_0.pkl"):
        pretrain.main([*SHORT, "--output_dir", str(out), "--resume_from_checkpoint", "latest"])
    assert not (tmp_path / "pwned").exists()


def test_resume_with_changed_hyperparameters_is_refused_naming_them(tmp_path):
    out = tmp_path / "run"
    pretrain.main([*SHORT, "--output_dir", str(out), "--max_steps", "5"])
    with pytest.raises(ValueError, match=r"--blr: checkpoint .*, now 0\.15.*--seed: checkpoint 3, now 4"):
        pretrain.main([*SHORT, "--output_dir", str(out), "--max_steps", "5", "--resume_from_checkpoint", "latest",
                      "--blr", "0.15",
                       "--seed", "4"])
    # what only changes how the run is shown or stored may change
    info = pretrain.main([*SHORT, "--output_dir", str(out), "--max_steps", "5", "--resume_from_checkpoint", "latest",
                          "--save_total_limit", "1", "--num_threads", "1"])
    assert info["resumed_from"] == "step_5"


def _torchrun(module: str, args: list, timeout: int = 280) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "-m", module, *args]
    result = subprocess.run(command, env={**_env(), "ACCELERATE_USE_CPU": "true"}, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_two_process_etmae_fine_tuning_matches_one_process_at_the_same_global_batch(tmp_path):
    """Two processes x batch 4 see the same 8 images per step as one process x batch 8 (per-item augmentation seeds,
    sharded batches), and DDP averages the two means: the weights after 3 steps must agree to float rounding."""
    common = ["--preset", "demo_etmae", "--dataset", "synthetic_cxr", "--dataset_kwargs",
              '{"num_images": 80, "image_size": 32}', "--max_steps", "3", "--save_steps", "1", "--drop_path_rate",
              "0", "--report_to", "none", "--figures", "False", "--progress_bar", "False", "--from_scratch",
              "--seed", "5", "--save_total_limit", "3", "--learning_rate", "0.01", "--warmup_ratio", "0"]
    finetune.main([*common, "--per_device_train_batch_size", "8", "--output_dir", str(tmp_path / "one")])
    _torchrun("medmae.training.finetune", [*common, "--per_device_train_batch_size", "4", "--output_dir",
              str(tmp_path / "two")])
    assert json.loads((tmp_path / "two" / "run_info.json").read_text())["num_processes"] == 2
    weights = {(run, step): load_file(str(tmp_path / run / "checkpoints" / f"step_{step}" / "model.safetensors"))
               for run in ("one", "two") for step in (1, 3)}

    def largest_difference(a, b):
        return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)

    assert weights["one", 3].keys() == weights["two", 3].keys()
    assert largest_difference(weights["one", 1], weights["one", 3]) > 1e-3  # training moved the weights
    worst = largest_difference(weights["one", 3], weights["two", 3])
    assert worst <= 5e-5, f"one vs two processes differ by {worst}"  # measured 6.2e-6; weights moved > 1e-3


def test_two_process_etmae_teacher_pretraining_and_distillation(tmp_path):
    """The ETMAE teacher pre-training and the student's distillation both run under 2-process DDP (the frozen
    teacher stays outside the DDP module: no unused-parameter search, identical on both ranks)."""
    data = ["--dataset", "synthetic_cxr", "--dataset_kwargs", '{"num_images": 48, "image_size": 32}',
            "--per_device_train_batch_size", "4", "--max_steps", "3", "--logging_steps", "1", "--report_to", "none",
            "--figures",
            "False", "--progress_bar", "False"]
    _torchrun("medmae.training.pretrain", ["--preset", "demo_etmae_teacher", *data,
                                           "--output_dir", str(tmp_path / "teacher")])
    _torchrun("medmae.training.pretrain", ["--preset", "demo_etmae_teacher", *data, "--teacher",
                                           str(tmp_path / "teacher"), "--output_dir", str(tmp_path / "student")])
    for name, task in (("teacher", "pretraining"), ("student", "distillation")):
        info = json.loads((tmp_path / name / "run_info.json").read_text())
        assert info["num_processes"] == 2 and info["task"] == task, info
    state = json.loads(sorted((tmp_path / "student" / "checkpoints").glob("step_*"))[-1]
                       .joinpath("trainer_state.json").read_text())
    train = [h for h in state["history"] if h["split"] == "train"]
    assert train and all(0 < h["distillation_loss"] < 10 for h in train), train


def test_two_processes_build_a_missing_prepared_folder_once_and_both_read_it(tmp_path):
    """``--dataset_path PREP --data_root DIR`` under 2-process DDP: the main process prepares PREP (accelerate's
    ``main_process_first``), the other waits and loads it; one fingerprint, no leftover temporary folder, and both
    ranks train on the same splits (the run completes: DDP would hang or fail on unequal batch counts)."""
    from medmae.training.prepared import FINGERPRINT_FILE

    from .fixtures import build_busi

    build_busi(tmp_path / "busi")
    prep = tmp_path / "busi-32"
    result = _torchrun("medmae.training.pretrain", [
        "--preset", "busi", "--dataset", "busi", "--model_preset", "tiny_test", "--image_size", "32",
        "--data_root", str(tmp_path / "busi"), "--dataset_path", str(prep), "--per_device_train_batch_size", "2",
        "--max_steps", "2", "--report_to", "none", "--figures", "False", "--progress_bar", "False",
        "--output_dir", str(tmp_path / "run")])
    fingerprint = json.loads((prep / FINGERPRINT_FILE).read_text())
    assert fingerprint["image_size"] == 32 and fingerprint["dataset"] == "busi"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busi", "busi-32", "run"], result.stdout[-2000:]
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["num_processes"] == 2 and info["hyperparameters"]["dataset_path"] == "busi-32"
