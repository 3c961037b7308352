# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""Write the self-contained remote code of a medmae model next to its weights.

transformers' own ``save_pretrained`` copies only sibling modules imported as ``from .name import X``,
but medmae keeps configurations in ``medmae/configuration`` and models in ``medmae/modeling``. This
module flattens the import graph of a model class into one folder (``from ..configuration.x import``
becomes ``from .x import``), refuses any import a collaborator would not have (only torch,
transformers, numpy and the standard library are allowed), and writes ``auto_map`` into
``config.json``. ``MedMAEPreTrainedModel.save_pretrained`` calls it (by name, inside medmae); it is
never shipped itself.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Iterable

from . import AUTO_REGISTRY  # the one table that also drives Auto registration

# Modules a remote-code file may import by absolute name: transformers' own hard dependencies.
ALLOWED_ABSOLUTE_IMPORTS = {"torch", "transformers", "numpy", "__future__"} | set(sys.stdlib_module_names)

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _relative_imports(path: Path) -> list[tuple[int, int, str, Path]]:
    """Return (line, level, dotted module, resolved file) for each relative import of ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                top = (node.module or "").split(".")[0]
                if top not in ALLOWED_ABSOLUTE_IMPORTS:
                    raise ValueError(
                        f"{path.name} imports '{node.module}', which a collaborator without medmae may not have; "
                        "files shipped as remote code may import only torch, transformers and numpy"
                    )
                continue
            if node.module is None:
                raise ValueError(f"{path.name}: 'from . import x' is not followed by transformers; import names from modules")
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            target = base.joinpath(*node.module.split(".")).with_suffix(".py")
            if not target.is_file():
                raise FileNotFoundError(f"{path.name}: relative import '{'.' * node.level}{node.module}' not found")
            found.append((node.lineno, node.level, node.module, target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in ALLOWED_ABSOLUTE_IMPORTS:
                    raise ValueError(f"{path.name} imports '{alias.name}', which is not allowed in remote code")
    return found


def collect_remote_files(entry_files: Iterable[Path]) -> dict[str, str]:
    """Flatten the import graph rooted at ``entry_files`` into {file name: rewritten source}."""
    sources: dict[str, str] = {}
    origins: dict[str, Path] = {}
    stack = [Path(p).resolve() for p in entry_files]
    while stack:
        path = stack.pop()
        if path.name in sources:
            if origins[path.name] != path:
                raise ValueError(f"two remote-code files share the name {path.name}: {origins[path.name]} and {path}")
            continue
        lines = path.read_text().splitlines(keepends=True)
        for lineno, level, module, target in _relative_imports(path):
            prefix = "." * level + module
            line = lines[lineno - 1]
            if f"from {prefix} import" not in line:
                raise ValueError(f"{path.name}:{lineno}: write relative imports on one line as 'from {prefix} import ...'")
            lines[lineno - 1] = line.replace(f"from {prefix} import", f"from .{target.stem} import", 1)
            stack.append(target)
        sources[path.name] = "".join(lines)
        origins[path.name] = path
    return sources


def auto_map_for(model_type: str) -> tuple[dict[str, str], list[Path]]:
    """The ``auto_map`` of a registered medmae model type and the source files it needs."""
    entries = [(auto_name, cls) for auto_name, config_cls, cls in AUTO_REGISTRY if config_cls.model_type == model_type]
    if not entries:
        raise ValueError(f"model type '{model_type}' is not a medmae model")
    config_cls = next(c for _, c, _ in AUTO_REGISTRY if c.model_type == model_type)
    auto_map = {"AutoConfig": f"{Path(sys.modules[config_cls.__module__].__file__).stem}.{config_cls.__name__}"}
    files = [Path(sys.modules[config_cls.__module__].__file__)]
    for auto_name, cls in entries:
        module_file = Path(sys.modules[cls.__module__].__file__)
        auto_map[auto_name] = f"{module_file.stem}.{cls.__name__}"
        files.append(module_file)
    return auto_map, files


def write_remote_code(model, save_directory) -> list[str]:
    """Write the flat remote code of ``model``'s family into ``save_directory`` and add ``auto_map``.

    Returns the names of the files written. Called by ``MedMAEPreTrainedModel.save_pretrained``.
    """
    save_directory = Path(save_directory)
    auto_map, files = auto_map_for(model.config.model_type)
    own_slot = getattr(type(model), "remote_auto_class", None)
    if own_slot is not None:
        # A model class outside the Auto registry (e.g. the joint segmentation + classification model) takes the
        # slot of its pipeline task in its own folders, so trust_remote_code loading returns the class that was saved.
        module_file = Path(sys.modules[type(model).__module__].__file__)
        auto_map[own_slot] = f"{module_file.stem}.{type(model).__name__}"
        files.append(module_file)
    written = []
    for name, source in sorted(collect_remote_files(files).items()):
        (save_directory / name).write_text(source)
        written.append(name)
    config_path = save_directory / "config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = auto_map
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return written
