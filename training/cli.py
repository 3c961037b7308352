# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""The ``medmae`` command.

    medmae demo [--quick]                       the whole method on synthetic data, on a laptop
    medmae reproduce sdda ARGS                  the SDDA-MAE ablation (Tables 1-4, Figures 2/3) over seeds
    medmae pretrain|finetune|evaluate ARGS      the Accelerate scripts (``--help``, ``--list_presets``)
    medmae prepare --dataset NAME --data_root DIR --image_size N --output_dir PREP [--num_proc N]
                                                a dataset indexed once, images resized, for --dataset_path PREP
    medmae predict --model RUN --input PATH...  a fine-tuned model on your images: results.csv (+ mask PNGs)
    medmae convert mae|vit-mae|timm SRC OUT     convert a MAE / medical_mae .pth, a transformers ViTMAE folder or a
                                                timm ViT checkpoint into a medmae folder (+ image processor)
    medmae export|push|verify ARGS              Hub-ready folders (medmae.hub_cards)
    medmae synthetic ARGS                       example grids of the synthetic sets
    medmae benchmark ARGS                       benchmarks/ (source checkout only)

Exit codes: 0 success, 1 a run that failed (e.g. a non-finite loss), 2 a usage error (unknown preset, missing
dataset folder, bad argument), each with a one-line message.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Optional, Sequence

from .. import _script_help_only
from .args import build_parser

COMMANDS = {
    "pretrain": ("medmae.training.pretrain", "main", "pre-training: SDDA-MAE, ETMAE teacher MAE, ETMAE distillation"),
    "finetune": ("medmae.training.finetune", "main", "fine-tuning: SDDA-MAE seg+cls, ETMAE multi-label"),
    "evaluate": ("medmae.training.evaluate", "main", "the papers' metrics of a fine-tuned model on a split"),
    "prepare": ("medmae.training.prepare", "main",
                "index a dataset once and store its images resized (--dataset_path for the scripts)"),
    "predict": ("medmae.training.predict", "main",
                "predict a fine-tuned model on images / folders / CSV lists: probabilities CSV, mask PNGs"),
    "demo": ("medmae.training.demo", "main", "the end-to-end demo on synthetic data (--quick: 1 minute)"),
    "reproduce": ("medmae.training.reproduce", "main", "re-run a paper's ablation over seeds: reproduce sdda"),
    "convert": ("medmae.training.cli", "convert_main", "convert MAE / ViTMAE / timm checkpoints"),
    "export": ("medmae.hub_cards.export", "main_export", "write a Hub-ready folder from a run"),
    "push": ("medmae.hub_cards.push", "main_push", "push a Hub-ready folder"),
    "verify": ("medmae.hub_cards.verify", "main_verify", "verify a Hub folder loads and reproduces"),
    "synthetic": ("medmae.training.synthetic", "main", "generate synthetic examples"),
    "benchmark": ("benchmarks.run", "main", "run the benchmarks (source checkout)"),
}


def _resolve(command: str) -> Callable:
    module_name, func_name, _ = COMMANDS[command]
    candidates = [module_name] + (["medmae.benchmarks.run"] if command == "benchmark" else [])
    errors = []
    for name in candidates:
        try:
            return getattr(importlib.import_module(name), func_name)
        except (ImportError, AttributeError) as error:
            errors.append(f"{name}.{func_name}: {error}")
    hint = " (the benchmarks live in a source checkout: run from the repository root)" if command == "benchmark" else ""
    raise RuntimeError(f"'medmae {command}' is not available{hint}: " + "; ".join(errors))


def convert_main(argv: Optional[Sequence[str]] = None) -> int:
    """``medmae convert mae|vit-mae|timm SRC OUT_DIR [--num-heads N] [--num-channels 1]``."""
    parser = argparse.ArgumentParser(prog="medmae convert", description=convert_main.__doc__)
    parser.add_argument("source_format", choices=["mae", "vit-mae", "timm"],
                        help="mae: facebookresearch/mae or medical_mae .pth; vit-mae: transformers ViTMAE folder; "
                             "timm: timm ViT classifier checkpoint")
    parser.add_argument("source")
    parser.add_argument("out_dir")
    parser.add_argument("--num-heads", type=int, default=None, help="encoder heads (default by width)")
    parser.add_argument("--num-channels", type=int, default=None, choices=[1, 3], help="1: grayscale model")
    parser.add_argument("--normalization", default=None, help="imagenet | cxr | half: statistics of the weights")
    args = parser.parse_args(argv)
    # lazy, as every import of the command table below: `medmae --help` and each script's --help answer in < 1 s
    from ..modeling import convert
    from ..modeling.image_processing_medmae import NORMALIZATION_PRESETS, processor_for_config

    if args.source_format == "mae":
        model = convert.from_mae_checkpoint(args.source, num_heads=args.num_heads, num_channels=args.num_channels)
    elif args.source_format == "vit-mae":
        model = convert.from_vit_mae(args.source)
    else:
        model = convert.from_timm_vit(args.source, num_heads=args.num_heads, num_channels=args.num_channels)
    if args.normalization:
        mean, std = NORMALIZATION_PRESETS[args.normalization]
        model.config.image_mean = mean[: model.config.num_channels]
        model.config.image_std = std[: model.config.num_channels]
    model.save_pretrained(args.out_dir)
    processor_for_config(model.config).save_pretrained(args.out_dir)
    source = args.source
    digest = convert.file_sha256(source) if __import__("os").path.isfile(source) else None
    print(f"converted {args.source_format} checkpoint -> {type(model).__name__} "
          f"({sum(p.numel() for p in model.parameters()):,} parameters) in {args.out_dir}"
          + (f"\nsource sha256 {digest}" if digest else ""))
    return 0


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name.ljust(width)}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "usage: medmae COMMAND [ARGS]\n\ncommands:\n" + "\n".join(lines) + "\n\n`medmae COMMAND --help` for a command's arguments."


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from .. import __version__  # lazy: the version without importing torch

        print(f"medmae {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"medmae: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if _script_help_only(argv):  # before the script's module (torch, transformers) is imported: help in < 1 s
        build_parser(command).print_help()
        return 0
    from .engine import NonFiniteLossError  # lazy: after the help-only paths, which must not import torch
    from .output_folder import DiskFullError

    try:
        func = _resolve(command)
        result = func(rest)
    except SystemExit as exit_:  # argparse / HfArgumentParser usage errors and --help
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    except (NonFiniteLossError, DiskFullError) as error:
        print(f"medmae {command}: error: {error}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as error:  # user errors; an internal KeyError keeps its traceback
        print(f"medmae {command}: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        if "is not available" in str(error):
            print(f"medmae: error: {error}", file=sys.stderr)
            return 2
        raise
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
