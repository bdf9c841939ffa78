"""Pushes to the Hugging Face Hub: a finished training run as a model repo (`hf-skin push`, `hf-skin train
--push_to_hub`) in one commit, and the token and repo-id checks every push uses (a prepared dataset's push,
`hf-skin prepare --push_to_hub`, is in `hf_skin.preparation`).

The cards are built elsewhere (`hf_skin.model_card`, `hf_skin.dataset_card`); this module decides what a push
uploads and deletes, says so before it does (`plan_run_push`, `--dry_run`), and does it. The token is never an
argument that gets logged or written: it comes from `HF_TOKEN`, `hf auth login` or an explicit `token=`, and goes
only into the HTTP headers of `huggingface_hub`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, ModelCard, get_token
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalTokenNotFoundError,
    RepositoryNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from .model_card import EditedCardError, card_is_edited, edited_card_message, model_card, save_model_card
from .runs import CARD_FILE, RunFolder

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Tokens and repo ids


def hub_token(token: str | None = None) -> str:
    """`token`, else `HF_TOKEN`, else the `hf auth login` token; a clear error when there is none."""
    token = token or get_token()
    if not token:
        raise LocalTokenNotFoundError(
            "no Hugging Face token found: set HF_TOKEN to a write token (https://huggingface.co/settings/tokens) or "
            "run `hf auth login`, then push again"
        )
    return token


def check_repo_id(repo_id: str) -> str:
    """`repo_id` if it is a valid Hub repo id (`user/name`, `org/name` or `name`), else a clear `ValueError`."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(
            f"{repo_id!r} is not a valid Hub repo id: {err} Use 'user/name' or 'org/name' (letters, digits, '-', '_' "
            "and '.'; at most 96 characters)."
        ) from err
    return repo_id


def _full_repo_id(api: HfApi, repo_id: str) -> str:
    """`owner/name`: a bare `name` belongs to the token's user, as `create_repo` would put it."""
    check_repo_id(repo_id)
    return repo_id if "/" in repo_id else f"{api.whoami()['name']}/{repo_id}"


def remote_files(api: HfApi, repo_id: str, repo_type: str = "model") -> list[str] | None:
    """The files of the repo's main branch, `None` when the repo does not exist (or is not visible to the token)."""
    try:
        return api.list_repo_files(repo_id, repo_type=repo_type)
    except RepositoryNotFoundError:
        return None


# ----------------------------------------------------------------------------------------------------------------
# Pushing a training run


def read_run(run_dir: str | os.PathLike) -> RunFolder:
    """The finished run in `run_dir` (saved model, test metrics), or an error that says what the folder lacks."""
    return RunFolder(run_dir).require_finished()


@dataclass
class PushPlan:
    """What a push of a run does to its repo: the files it uploads and those it deletes, in one commit."""

    run_dir: Path
    repo_id: str
    repo_exists: bool | None  # None: unknown (a dry run without a token or without the Hub)
    uploads: list[str]
    deletions: list[str] | None  # files of the repo that the run does not have (.gitattributes is kept); None: unknown
    card: str  # what happens to README.md, in words
    card_text: str = ""  # the README.md the push would publish
    unknown_because: str | None = None  # why the Hub was not asked (a dry run), in words: no token, or no Hub

    def describe(self) -> str:
        owner = "" if "/" in self.repo_id else " (a repo of the token's user)"
        repo = {True: " (an existing repo)", False: " (a new repo)", None: owner}[self.repo_exists]
        lines = [
            f"Pushing {self.run_dir} to {self.repo_id}{repo} in one commit:",
            f"  upload {len(self.uploads)} files:",
            *(f"    {name}" for name in self.uploads),
        ]
        if self.deletions is None:
            lines.append("  delete the repo's files that the run does not have: which ones is unknown offline")
        elif self.deletions:
            lines.append(f"  delete {len(self.deletions)} files the run does not have:")
            lines += [f"    {name}" for name in self.deletions]
        else:
            lines.append("  delete nothing")
        lines.append(f"  {self.card}")
        if self.unknown_because:
            lines.append(
                f"Unknown offline, {self.unknown_because}: whether {self.repo_id} exists, and which of its files the "
                "push would delete."
            )
        return "\n".join(lines)


def _card_for_push(
    run: RunFolder, repo_id: str, *, overwrite_card: bool, keep_card: bool
) -> tuple[ModelCard | None, str]:
    """(the card to write into the run folder, or `None` to publish its README.md as it is; what happens, in words).

    A README.md that is not the card hf-skin last wrote there (edited by hand) is an `EditedCardError` unless
    `overwrite_card` or `keep_card` says what to do with it.
    """
    if overwrite_card and keep_card:
        raise ValueError("overwrite_card and keep_card exclude each other: replace README.md, or keep it")
    readme = run.path / CARD_FILE
    if keep_card and readme.is_file():
        return None, f"{CARD_FILE}: published as it is in the run folder (keep_card)"
    card = model_card(run.path, repo_id=repo_id)
    if not readme.is_file():
        return card, f"{CARD_FILE}: the generated model card"
    if card_is_edited(run.path, card):
        if not overwrite_card:
            raise EditedCardError(edited_card_message(run.path))
        return card, f"{CARD_FILE}: the generated model card, replacing the hand-edited one (overwrite_card)"
    return card, f"{CARD_FILE}: the generated model card, replacing the one hf-skin wrote before"


def _run_push_plan(
    run: RunFolder, repo_id: str, remote: list[str] | None, card_text: str, unknown_because: str | None = None
) -> PushPlan:
    """The plan against the repo's files `remote` (`None`: no such repo); with `unknown_because`, the Hub was not
    asked (why, in words)."""
    uploads = sorted({*run.published_files(), CARD_FILE})
    if unknown_because:
        return PushPlan(run.path, repo_id, None, uploads, None, card_text, unknown_because=unknown_because)
    deletions = sorted(set(remote or []) - set(uploads) - {".gitattributes"})
    return PushPlan(run.path, repo_id, remote is not None, uploads, deletions, card_text)


def plan_run_push(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    overwrite_card: bool = False,
    keep_card: bool = False,
) -> PushPlan:
    """What `push_run_to_hub` with these arguments would upload and delete (`hf-skin push --dry_run`).

    Changes nothing: no repo is created, no commit made, and the run folder's README.md is left as it is. It fails
    where the push would fail before changing anything (an unfinished run, a hand-edited card, a bad repo id). It
    needs neither a token nor the Hub: without them, whether the repo exists and which of its files would be
    deleted are `None` (unknown), and a bare repo name stays bare (the token's user would own it).
    """
    from .locations import hub_reachable

    run = read_run(run_dir)
    check_repo_id(repo_id)
    token = token or get_token()
    if not token:
        unknown_because = "with no token to ask the Hub (HF_TOKEN or `hf auth login`)"
    elif not hub_reachable():
        unknown_because = "as the Hub is not reachable (HF_HUB_OFFLINE=1, or no network)"
    else:
        unknown_because = None
    remote = None
    if unknown_because is None:
        api = HfApi(token=token)
        repo_id = _full_repo_id(api, repo_id)
        remote = remote_files(api, repo_id)
    card, card_text = _card_for_push(run, repo_id, overwrite_card=overwrite_card, keep_card=keep_card)
    plan = _run_push_plan(run, repo_id, remote, card_text, unknown_because)
    plan.card_text = str(card) if card is not None else (run.path / CARD_FILE).read_text(encoding="utf-8")
    return plan


def push_run_to_hub(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    overwrite_card: bool = False,
    keep_card: bool = False,
    commit_message: str = "hf-skin training run: model, processor, modeling code, metrics, model card",
) -> str:
    """Publishes a finished training run as a Hub model repo, in one commit.

    Writes the model card to `run_dir/README.md`, then commits `run_files(run_dir)` (weights, configs, processor,
    modeling code, metrics, confusion matrices, card) and nothing else in the folder. The repo then holds exactly
    this run: files of an earlier push that this run does not have are deleted in the same commit (logged as a
    WARNING first; `plan_run_push` lists them without pushing). A README.md edited by hand since hf-skin wrote it is
    not replaced silently: the push refuses (`EditedCardError`) unless `overwrite_card` or `keep_card`.
    `AutoModelForImageClassification.from_pretrained`, `pipeline()` and `SkinClassifier.from_pretrained` load the
    repo by its id; without hf-skin, with `trust_remote_code=True`.

    Args:
        run_dir (`str` or `os.PathLike`): the `--output_dir` of a finished `hf-skin train` run.
        repo_id (`str`): `user/name` or `org/name` (created when missing); a bare `name` goes to the token's user.
        private (`bool`, *optional*): visibility of the repo if this call creates it (default: the Hub's).
        token (`str`, *optional*): defaults to `HF_TOKEN` or the `hf auth login` token; never logged or written.
        overwrite_card (`bool`, *optional*, defaults to `False`): replace a hand-edited README.md with the generated
            card.
        keep_card (`bool`, *optional*, defaults to `False`): publish the folder's README.md as it is (a card is
            generated only when there is none).

    Returns:
        `str`: the URL of the model repo.
    """
    run = read_run(run_dir)  # a bad folder fails here, before anything is created on the Hub
    api = HfApi(token=hub_token(token))
    try:
        repo_id = _full_repo_id(api, repo_id)
        # A hand-edited card stops the push here, before the Hub or the folder changes.
        card, card_text = _card_for_push(run, repo_id, overwrite_card=overwrite_card, keep_card=keep_card)
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        if card is not None:
            save_model_card(card, run.path, overwrite=overwrite_card)
        plan = _run_push_plan(run, repo_url.repo_id, remote_files(api, repo_url.repo_id), card_text)
        if plan.deletions:
            logger.warning(
                "Deleting %d files of %s that this run does not have: %s",
                len(plan.deletions),
                plan.repo_id,
                ", ".join(plan.deletions),
            )
        api.create_commit(
            repo_url.repo_id,
            operations=[CommitOperationDelete(path) for path in plan.deletions]
            + [CommitOperationAdd(name, run.path / name) for name in plan.uploads],
            commit_message=commit_message,
        )
    except (HfHubHTTPError, ConnectionError):
        logger.error(
            "The push failed; %s is intact: push it again with hf-skin push %s %s",
            run.path,
            run.path,
            repo_id,
        )
        raise
    logger.info("Pushed %s (%d files) to %s", run.path, len(plan.uploads), repo_url)
    return str(repo_url)


def trainer_push_settings(training_args) -> dict | None:
    """For `hf_skin.training.run`: takes `--push_to_hub` away from the Trainer and returns `push_run_to_hub`'s
    arguments (or `None` without `--push_to_hub`).

    The Trainer would push its own card and every checkpoint at each save; a run is published once, at the end, by
    `push_run_to_hub`. The repo id and the token are checked now, not after hours of training, and `hub_token` is
    cleared so that it does not end up in the pickled `training_args.bin`.
    """
    if not training_args.push_to_hub:
        training_args.hub_token = None
        return None
    repo_id = check_repo_id(training_args.hub_model_id or Path(training_args.output_dir).absolute().name)
    token = hub_token(training_args.hub_token)
    training_args.push_to_hub, training_args.hub_token = False, None
    return {"repo_id": repo_id, "private": training_args.hub_private_repo, "token": token}
