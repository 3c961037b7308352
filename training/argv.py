# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""What the user wrote -- the command-line tokens and a ``--config`` file -- made ready for the parser of
:mod:`medmae.training.args` (which holds the argument dataclasses, :func:`~medmae.training.args.build_parser` and
:func:`~medmae.training.args.parse_args`): ``--num-epochs`` read as ``--num_epochs``, a repeated ``--data_root``
(one folder per source of a combined set) merged into one JSON value, old argument names renamed with a note on
stderr, and the YAML or JSON file of ``--config``. Imports no torch or transformers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence


def read_config_file(path) -> dict[str, Any]:
    """A YAML or JSON file of argument values (a flat mapping of field names)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"argument file not found: {path}")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of argument names to values")
    return values


def _value_of(argv: Sequence[str], flag: str) -> Optional[str]:
    for i, token in enumerate(argv):
        if token == flag and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith(flag + "="):
            return token.split("=", 1)[1]
    return None


def _normalise_flags(argv: Sequence[str]) -> list[str]:
    """Accept ``--num-epochs`` as well as ``--num_epochs`` (HfArgumentParser registers both for most,
    but not for every field type)."""
    out = []
    for token in argv:
        if token.startswith("--") and not token.startswith("---"):
            name, sep, value = token[2:].partition("=")
            token = "--" + name.replace("-", "_") + sep + value
        out.append(token)
    return _merge_data_roots(out)


def _merge_data_roots(argv: list[str]) -> list[str]:
    """``--data_root chestxray14=DIR1 --data_root chexpert=DIR2`` (a combined dataset, one folder per source) ->
    one ``--data_root`` holding the JSON object ``{"chestxray14": DIR1, "chexpert": DIR2}``; one value stays as is."""
    values, rest, i = [], [], 0
    while i < len(argv):
        token = argv[i]
        if token == "--data_root" and i + 1 < len(argv):
            values.append(argv[i + 1])
            i += 2
            continue
        if token.startswith("--data_root="):
            values.append(token.split("=", 1)[1])
        else:
            rest.append(token)
        i += 1
    if len(values) <= 1:
        return argv
    bad = [v for v in values if "=" not in v]
    if bad:
        raise ValueError(f"--data_root given {len(values)} times: each must be SOURCE=DIR (a combined dataset such as "
                         f"chestxray14+chexpert), got {bad}")
    pairs = dict(v.split("=", 1) for v in values)
    return [*rest, "--data_root", json.dumps(pairs)]


def _deprecated(script: str, old: str, new: str, where: str = "") -> None:
    print(f"medmae {script}: {where}{old} is deprecated, use {new} (the old name is accepted until the next release)",
          file=sys.stderr)


def _rename_flags(argv: list[str], renamed: dict[str, str], script: str) -> list[str]:
    out = []
    for token in argv:
        name, sep, value = token.partition("=")
        if name.startswith("--") and name[2:] in renamed:
            _deprecated(script, name, "--" + renamed[name[2:]])
            token = "--" + renamed[name[2:]] + sep + value
        out.append(token)
    return out


def _rename_keys(values: dict, renamed: dict[str, str], script: str, source: str) -> dict:
    for old in [key for key in values if key in renamed]:
        _deprecated(script, old, renamed[old], f"{source}: ")
        values[renamed[old]] = values.pop(old)
    return values
