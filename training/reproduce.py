# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""``medmae reproduce sdda|etmae``: re-run a paper's ablation over seeds and write its tables with verdicts.

    medmae reproduce sdda --dataset synthetic_ultrasound --seeds 0 1 2 --output_dir ablation_sdda
    medmae reproduce etmae --dataset synthetic_cxr --teachers S B --seeds 0 1 2 --output_dir ablation_etmae

Each method's sweep lives in its own module (``reproduce_sdda``, ``reproduce_etmae``); ``sweep`` holds what they
share (continuation, one sweep per folder, atomic tables, verdicts).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from . import reproduce_etmae, reproduce_sdda

METHODS = {"sdda": reproduce_sdda, "etmae": reproduce_etmae}


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """``medmae reproduce METHOD ARGS``."""
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: medmae reproduce {{{','.join(METHODS)}}} [--help] ARGS\n\n{__doc__.splitlines()[0]}\n"
              + "\n".join(f"  {name}: {module.__doc__.splitlines()[0]}" for name, module in METHODS.items()))
        return {}
    if argv[0] not in METHODS:
        raise ValueError(f"medmae reproduce: unknown method {argv[0]!r}; choose one of {', '.join(METHODS)}")
    module = METHODS[argv[0]]
    parser = HfArgumentParser(module.Arguments, prog=f"medmae reproduce {argv[0]}",
                              description=module.__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(argv[1:])
    import transformers

    transformers.utils.logging.set_verbosity_error()
    return module.reproduce(args, "medmae reproduce " + " ".join(argv))


if __name__ == "__main__":
    main()
