# Copyright 2026 The medmae authors. Licensed under the Apache License, Version 2.0.
"""``medmae push``: upload an exported folder to the Hugging Face Hub in one commit.

``push_folder`` checks the folder first (the export allow-list, no local paths, a card and a reference
sample present, and by default ``medmae verify``), refuses to start without a token or in offline mode, then
creates the repository and uploads every file in a single ``create_commit`` (all-or-nothing on the Hub side),
the card last.

``push_model`` is what ``push_to_hub`` of every medmae model runs (``MedMAEPreTrainedModel.push_to_hub``):
where transformers' ``push_to_hub`` uploads ``save_pretrained`` output (weights, config + ``auto_map`` and the
remote code) with a generic card, ``push_model`` exports the complete folder (processor, reference sample and
outputs, provenance metadata, medmae card) with ``export_folder`` and pushes that. Its signature accepts every
argument of ``PushToHubMixin.push_to_hub``. A remote-code copy of a medmae model keeps transformers' ``push_to_hub``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from .. import __version__
from .export import export_folder
from .layout import CARD_FILE, MANIFEST_FILE, REFERENCE_FILE, ExportError, check_allowed_files
from .run_records import find_leaks
from .verify import verify


class HubPushError(RuntimeError):
    """The folder was not uploaded (the message says why and what to do)."""


def check_folder(folder) -> list[str]:
    """The files to upload, card last; ExportError when the folder is not a complete, clean medmae export."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder} is not a folder")
    names = check_allowed_files(folder)
    missing = [name for name in ("config.json", "model.safetensors", CARD_FILE, REFERENCE_FILE, MANIFEST_FILE)
               if name not in names]
    if missing:
        raise ExportError(f"{folder} is not a complete medmae export (missing {', '.join(missing)}); "
                          "create it with `medmae export`")
    leaks = find_leaks(folder, [str(folder.resolve().parent)])
    if leaks:
        raise ExportError(f"{folder} contains local paths: {'; '.join(f'{n}: {t!r}' for n, t in leaks[:5])}")
    return [name for name in names if name != CARD_FILE] + [CARD_FILE]


def push_folder(
    folder,
    repo_id: str,
    private: bool = False,
    revision: Optional[str] = None,
    token: Optional[str] = None,
    commit_message: Optional[str] = None,
    commit_description: Optional[str] = None,
    create_pr: bool = False,
    verify_first: bool = True,
    endpoint: Optional[str] = None,
):
    """Upload the exported ``folder`` to ``repo_id`` in one commit; returns the ``CommitInfo``.

    token: defaults to the usual places (``HF_TOKEN``, ``hf auth login``). revision: a branch (created when
    missing). verify_first: run ``medmae verify`` on the folder before uploading. Raises HubPushError (nothing
    uploaded) without a token, in offline mode (``HF_HUB_OFFLINE=1``), or when the Hub cannot be reached.
    """
    folder = Path(folder)
    files = check_folder(folder)
    if constants.is_offline_mode():
        raise HubPushError("offline mode is on (HF_HUB_OFFLINE=1): nothing was uploaded. Unset HF_HUB_OFFLINE "
                           "to push.")
    token = token or get_token()
    if not token:
        raise HubPushError("no Hugging Face token found: run `hf auth login` or set HF_TOKEN (a token with write "
                           "access to the organisation); nothing was uploaded.")
    if verify_first:
        report = verify(folder)
        if not report.passed:
            raise HubPushError(f"{folder} does not reproduce its own reference outputs; nothing was uploaded.\n"
                               f"{report.to_text()}")
    api = HfApi(endpoint=endpoint, token=token, library_name="medmae", library_version=__version__)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in files]
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision is not None and not revision.startswith("refs/pr/"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.create_commit(
            repo_id, operations, commit_message=commit_message or f"Upload {repo_id.split('/')[-1]} (medmae export)",
            commit_description=commit_description, revision=revision, create_pr=create_pr,
        )
    except OfflineModeIsEnabled as error:
        raise HubPushError(f"offline mode is on: nothing was uploaded ({error})") from error
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        hint = " Check that the token has write access to the organisation." if status in (401, 403) else ""
        raise HubPushError(f"the Hub refused the upload to {repo_id} (HTTP {status}): no files were committed.{hint}\n"
                           f"{error}") from error
    except (OSError, ConnectionError) as error:
        raise HubPushError(f"cannot reach the Hub at {api.endpoint}: no files were committed ({error})") from error
    except Exception as error:  # httpx transport errors (connect, timeout, protocol) do not derive from OSError
        kinds = " ".join(cls.__name__.lower() for cls in type(error).__mro__)
        if any(word in kinds for word in ("connect", "transport", "timeout", "network", "protocol")):
            raise HubPushError(f"cannot reach the Hub at {api.endpoint} ({type(error).__name__}: {error}): no files "
                               "were committed; try again when the connection is back") from error
        raise


def push_model(
    model,
    repo_id: str,
    *,
    processor=None,
    run_info: Optional[Mapping[str, Any]] = None,
    commit_message: Optional[str] = None,
    commit_description: Optional[str] = None,
    private: Optional[bool] = None,
    token: Optional[str] = None,
    revision: Optional[str] = None,
    create_pr: bool = False,
    max_shard_size=None,
    tags: Optional[list[str]] = None,
    verify_first: bool = True,
    endpoint: Optional[str] = None,
):
    """Export ``model`` as a complete zoo folder (``export_folder``) and push it with ``push_folder``.

    ``max_shard_size`` is accepted for ``push_to_hub`` compatibility (medmae exports one weights file);
    ``tags`` are added to the card's tags.
    """
    with tempfile.TemporaryDirectory(prefix="medmae-push-") as tmp:
        folder = export_folder(model, Path(tmp) / repo_id.split("/")[-1], run_info=run_info, processor=processor,
                               repo_id=repo_id)
        if tags:
            card = ModelCard.load(folder / CARD_FILE)
            card.data.tags = list(dict.fromkeys([*(card.data.tags or []), *tags]))
            card.save(folder / CARD_FILE)
        return push_folder(folder, repo_id, private=bool(private), revision=revision, token=token,
                           commit_message=commit_message, commit_description=commit_description, create_pr=create_pr,
                           verify_first=verify_first, endpoint=endpoint)


def main_push(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="medmae push",
                                     description="Upload a folder written by `medmae export` to the Hub in one commit.")
    parser.add_argument("folder", help="exported folder")
    parser.add_argument("repo_id", help="target repository, e.g. medmae/etmae-vit-tiny")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", help="branch to commit to (created when missing)")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the `hf auth login` token)")
    parser.add_argument("--commit-message")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--skip-verify", action="store_true", help="do not run `medmae verify` before uploading")
    args = parser.parse_args(argv)
    try:
        info = push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision, token=args.token,
                           commit_message=args.commit_message, create_pr=args.create_pr,
                           verify_first=not args.skip_verify)
    except (HubPushError, ExportError) as error:
        print(f"medmae push: error: {error}", file=sys.stderr)
        return 2
    print(f"pushed {args.folder} to {args.repo_id}: {getattr(info, 'commit_url', info)}")
    return 0


if __name__ == "__main__":
    sys.exit(main_push())
