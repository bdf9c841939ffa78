"""What every command line shares: its parser (no abbreviations, a mistake is the usage and one `error:` line, a
`--help` a person reads), the token rule, and the one way a library error reaches the user.

Tokens are never taken from a command line (shell history and process lists keep them): every command reads
`HF_TOKEN` or the `hf auth login` token, and refuses a token flag in any spelling, in an argument file too.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import logging
import os
import re
import sys
from pathlib import Path

from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The token arguments of transformers' and hf-skin's parsers, and how a token looks: refused in any spelling.
TOKEN_NAMES = ("hub_token", "token")
TOKEN_VALUE = re.compile(r"\bhf_[A-Za-z0-9]{16,}")
TOKEN_HELP = "set HF_TOKEN in the environment or run `hf auth login` instead"
# The library's messages name its Python arguments (`on_missing='skip'`); a command line's user reads flags.
_PYTHON_ARGUMENT = re.compile(r"\b([a-z][a-z0-9_]*)=(['\"]?)([\w.+-]+)\2")
# The arguments of hf_skin.data's advice, rewritten when the command's flags are not known.
_DATA_ARGUMENTS = ("on_missing", "with_masks", "resplit")
# Errors whose message is written for the person who ran the command (a bad file, folder, value or id, no token, a
# refused or failed request, an unreachable Hub): one `error:` line, no traceback. hf-skin's own errors
# (RunFolderError, CalibrationError, ExportError, OutputFolderError, HubUnavailableError) are among them.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    ConnectionError,
    LocalTokenNotFoundError,
    HfHubHTTPError,
)
# A choice list longer than this is left to the help text (transformers' --optim has 40).
_MAX_SHOWN_CHOICES = 12


class CommandLineError(SystemExit):
    """A command-line mistake: one `error:` line, exit status 1, no traceback."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")


def configure_logging() -> None:
    import datasets

    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)
    datasets.utils.logging.set_verbosity_warning()


# ----------------------------------------------------------------------------------------------------------------
# Tokens


def _token_name(name: str) -> bool:
    """Whether a flag or argument-file key names a token, in any spelling: `--hub-token`, `--HUB_TOKEN`, `--hubtoken`,
    or a prefix argparse would once have expanded (`--hub_tok`, `--tok`)."""
    name = name.split("=", 1)[0].lstrip("-").replace("-", "_").lower()
    squashed = name.replace("_", "")
    return any(
        name == token or squashed == token.replace("_", "") or (len(name) >= 3 and token.startswith(name))
        for token in TOKEN_NAMES
    )


def _holds_token(values) -> bool:
    """Whether a parsed argument file names a token (`hub_token`, `push_to_hub_token`, ...) or holds one (hf_...)."""
    if not isinstance(values, dict):
        return False
    named = any((_token_name(key) or key.lower().endswith("_token")) and value for key, value in values.items())
    return named or any(isinstance(value, str) and TOKEN_VALUE.search(value) for value in values.values())


def refuse_tokens(argv: list[str]) -> None:
    """One policy for every command: no token on the command line or in an argument file, in any spelling.

    The argument files are a leading `.json` file and transformers' `<script>.args` file beside the program
    (`HfArgumentParser` reads it unasked).
    """
    args_file = Path(sys.argv[0]).with_suffix(".args") if sys.argv and sys.argv[0] else None
    given = [(arg, "") for arg in argv]
    if args_file is not None and args_file.is_file():
        given += [(arg, f" (in {args_file})") for arg in args_file.read_text().split()]
    for arg, where in given:
        if arg.startswith("-") and _token_name(arg):
            raise CommandLineError(f"{arg.split('=', 1)[0]}{where} is not accepted on the command line: {TOKEN_HELP}")
        if TOKEN_VALUE.search(arg):
            raise CommandLineError(
                f"an argument{where} looks like a Hugging Face token (hf_...): remove it, {TOKEN_HELP}"
            )
        if arg.endswith(".json") and Path(arg).is_file():
            try:
                values = json.loads(Path(arg).read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # the parser names the problem
            if _holds_token(values):
                raise CommandLineError(f"{arg} holds a token: remove it, {TOKEN_HELP}")


def command_argv(argv: list[str] | None) -> list[str]:
    """The command's arguments (`sys.argv[1:]` by default), tokens refused."""
    argv = sys.argv[1:] if argv is None else list(argv)
    refuse_tokens(argv)
    return argv


# ----------------------------------------------------------------------------------------------------------------
# Errors


def flag_spelling(message: str, flags: set[str] | None = None) -> str:
    """A library message in a command line's words: `on_missing='skip'` -> `--on_missing skip`, `with_masks=False`
    -> `--no_with_masks`, `num_lesions=0` -> `--num_lesions 0`.

    Args:
        message (`str`): the library's message.
        flags (`set[str]`, *optional*): the command's flags; only advice that the command can follow is rewritten.
            Without them, the arguments of `hf_skin.data`'s advice (`on_missing`, `with_masks`, `resplit`) are.
    """

    def flag(match: re.Match) -> str:
        name, value = match.group(1), match.group(3)
        if value in ("True", "False"):
            spelled = option = f"--{name}" if value == "True" else f"--no_{name}"
        else:
            spelled, option = f"--{name} {value}", f"--{name}"
        known = name in _DATA_ARGUMENTS if flags is None else option in flags
        return spelled if known else match.group(0)

    return _PYTHON_ARGUMENT.sub(flag, message)


def parser_flags(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


@contextlib.contextmanager
def user_errors(parser: argparse.ArgumentParser | None = None):
    """Inside, an error written for the command's user becomes one `error:` line in flag spelling (the flags of
    `parser`) instead of a traceback; `HF_SKIN_TRACEBACK=1` shows the traceback."""
    try:
        yield
    except USER_ERRORS as err:
        if os.environ.get("HF_SKIN_TRACEBACK"):
            raise
        flags = parser_flags(parser) if parser is not None else None
        raise CommandLineError(flag_spelling(str(err), flags)) from None


# ----------------------------------------------------------------------------------------------------------------
# Parsers


class HelpFormatter(argparse.HelpFormatter):
    """`--help` as a person reads it: one spelling per flag (`--num_train_epochs`; `--num-train-epochs` works too),
    the default where the help text does not say it already, long choice lists left to the help text, and lines of a
    description or epilog that start with a space (examples) kept as they are."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            kept = line.startswith(" ") or not line
            lines.append(indent + line if kept else super()._fill_text(line, width, indent))
        return "\n".join(lines)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        underscored = [option for option in action.option_strings if "-" not in option.lstrip("-")]
        if underscored and len(underscored) < len(action.option_strings):
            action = copy.copy(action)
            action.option_strings = underscored
        if action.choices is not None and len(action.choices) > _MAX_SHOWN_CHOICES and action.metavar is None:
            action = copy.copy(action)
            action.metavar = action.dest.upper()
        return super()._format_action_invocation(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or action.default is None
            or action.default is False
            or action.default == argparse.SUPPRESS
            or "%(default)" in text
            or "default" in text.lower()
            or isinstance(action, argparse._StoreFalseAction)  # `--no_X`: its default is the flag's own
        ):
            return text
        return f"{text} (default: %(default)s)"


class CommandLineErrors:
    """Mixin of hf-skin's parsers: no abbreviations (`--hub_tok` is not `--hub_token`), and a mistake is the usage
    and one `error:` line (exit status 2, as argparse's)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message}\n")


class CommandParser(CommandLineErrors, argparse.ArgumentParser):
    """The `ArgumentParser` of a command whose flags are not a dataclass's."""


@functools.cache
def _dataclass_parser_class() -> type:
    from transformers import HfArgumentParser  # not at import: `hf-skin --help` need not load transformers

    return type("DataclassParser", (CommandLineErrors, HfArgumentParser), {})


def dataclass_parser(dataclass_types, **kwargs):
    """An `HfArgumentParser` of `dataclass_types` with hf-skin's errors, help and no abbreviations."""
    parser = _dataclass_parser_class()(dataclass_types, **kwargs)
    for action in parser._actions:  # what --help shows of HfArgumentParser's boolean flags
        if isinstance(action, argparse._StoreFalseAction):
            action.help = f"Turns --{action.dest} off."  # not the flag's own help a second time
        elif action.nargs == "?" and action.const is True:
            action.metavar = "BOOL"  # `--flag` alone means true, `--flag false` false
    return parser


def parse_dataclass(parser, argv: list[str]):
    """The one dataclass of `parser` from flags, or from a single `.json` file of them."""
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])[0]
    # argparse's checks first (--help, a bad value, an unknown flag), then the dataclass's own (__post_init__)
    unknown = parser.parse_known_args(argv)[1]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)[0]
