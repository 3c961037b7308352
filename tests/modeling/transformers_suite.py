"""transformers' own common model tests, taken from the source distribution of the installed transformers.

A third-party model repository runs ``tests/test_modeling_common.py`` (``ModelTesterMixin``) and
``tests/test_configuration_common.py`` (``ConfigTester``) of the transformers version it runs against. The source
distribution on the package index carries those files but not three sibling test packages they import; the
missing names are supplied here, each with what it means for coverage:

- ``exporters.test_export.ExportTesterMixin`` (base class of ``ModelTesterMixin``: its ``torch.export`` tests):
  an empty class, so those tests are not run (listed as not run in the closing note of issue #11);
- ``generation.test_utils.GenerationTesterMixin``: an empty class; medmae models cannot ``generate``, and the common
  suite asserts that a tester of such a model does not inherit it;
- ``utils.test_configuration_utils.config_common_kwargs``: the attributes every ``PreTrainedConfig`` accepts, each
  set to a non-default value (what ``ConfigTester.check_config_arguments_init`` checks).

The archive is found at ``$MEDMAE_TRANSFORMERS_SDIST`` or in ``~/.cache/medmae/``, else fetched once with
``pip download transformers==<installed> --no-binary :all:`` (the package index, never the Hugging Face Hub).
Nothing of transformers' test code is stored in this repository.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

PACKAGE = "transformers_common_tests"
NEEDED = ("test_modeling_common.py", "test_configuration_common.py", "test_backbone_common.py")
SHIMS = {
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    "utils/test_configuration_utils.py": (
        "config_common_kwargs = {\n"
        "    'return_dict': False, 'output_hidden_states': True, 'output_attentions': True, 'dtype': 'float16',\n"
        "    'chunk_size_feed_forward': 5, 'architectures': ['BertModel'], 'id2label': {0: 'label'},\n"
        "    'label2id': {'label': '0'}, 'problem_type': 'regression',\n"
        "}\n"
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("MEDMAE_CACHE", Path.home() / ".cache" / "medmae"))


def sdist_path() -> Path:
    """The transformers source archive of the installed version, downloaded once from the package index."""
    version = transformers.__version__
    given = os.environ.get("MEDMAE_TRANSFORMERS_SDIST")
    if given:
        path = Path(given)
        if not path.name.startswith(f"transformers-{version}."):
            raise RuntimeError(f"MEDMAE_TRANSFORMERS_SDIST={given} is not the source of the installed transformers "
                               f"{version}")
        return path
    path = cache_dir() / f"transformers-{version}.tar.gz"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        command = [sys.executable, "-m", "pip", "download", f"transformers=={version}", "--no-deps",
                   "--no-binary", ":all:", "-q", "-d", tmp]
        result = subprocess.run(command, capture_output=True, text=True)
        fetched = Path(tmp) / path.name
        if result.returncode or not fetched.exists():
            raise RuntimeError(f"could not fetch the transformers {version} source distribution for its common model "
                               f"tests ({' '.join(command)}): {result.stderr.strip()[-500:]}; download it and set "
                               "MEDMAE_TRANSFORMERS_SDIST to its path")
        os.replace(fetched, path)  # atomic: parallel test workers never see half an archive
    return path


def extract_suite() -> Path:
    """Unpack the needed test modules as the package ``transformers_common_tests``; returns its parent folder."""
    version = transformers.__version__
    root = cache_dir() / f"transformers-{version}-common-tests"
    package = root / PACKAGE
    if (package / "__init__.py").exists():
        return root
    archive_path = sdist_path()
    with tempfile.TemporaryDirectory(dir=archive_path.parent) as tmp:
        staging = Path(tmp) / PACKAGE
        staging.mkdir()
        with tarfile.open(archive_path) as archive:
            for name in NEEDED:
                member = archive.getmember(f"transformers-{version}/tests/{name}")
                (staging / name).write_bytes(archive.extractfile(member).read())
        for relative, text in SHIMS.items():
            target = staging / relative
            target.parent.mkdir(exist_ok=True)
            (target.parent / "__init__.py").touch()
            target.write_text(text)
        (staging / "__init__.py").write_text(f"# transformers {version} tests/, unpacked by medmae's test suite\n")
        root.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staging, package)
        except OSError:  # another worker unpacked it first
            if not (package / "__init__.py").exists():
                raise
    return root


def load(module: str):
    """Import ``transformers_common_tests.<module>`` (e.g. ``test_modeling_common``)."""
    root = str(extract_suite())
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"{PACKAGE}.{module}")
