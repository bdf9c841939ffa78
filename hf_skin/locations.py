"""Where things are: hf-skin's cache folder, whether a name is a Hub repo id or a local path, and whether the Hub
answers. The one owner of these rules for datasets, checkpoints and cards alike.

Without network, `from_pretrained` and `load_dataset` retry for ~25 s and end in a traceback; `hub_reachable` notices
an unreachable Hub in a few seconds, and `HubUnavailableError` is the one error that names what was asked for.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse


class HubUnavailableError(ConnectionError):
    """A checkpoint or dataset on the Hugging Face Hub was asked for, and neither the Hub nor a local copy has it."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """hf-skin's cache (built datasets, converted weights): `cache_dir` when given, else `$HF_SKIN_CACHE`, else
    `$XDG_CACHE_HOME/hf_skin` (`~/.cache/hf_skin`)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("HF_SKIN_CACHE"):
        return Path(os.environ["HF_SKIN_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "hf_skin"


def is_hub_id(name: str | os.PathLike | None) -> bool:
    """Whether `name` is a Hub repo id (`owner/name`) rather than a local path: not an existing path, not starting
    like one (`~`, `.`, `/`), and a valid repo id with an owner."""
    if not name:
        return False
    name = os.fspath(name)
    if name.startswith(("~", ".", "/")) or name.count("/") != 1 or Path(name).expanduser().exists():
        return False
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


@functools.cache
def _endpoint_answers(endpoint: str, timeout: float) -> bool:
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub (`HF_ENDPOINT`) answers a TCP connection, `False` at once under `HF_HUB_OFFLINE=1`.

    Asked once per process and endpoint: huggingface_hub's own retries take ~25 s to give up."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    return _endpoint_answers(constants.ENDPOINT, timeout)
