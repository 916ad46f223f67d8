"""The ``smile-vlm`` command line: one subcommand per workflow step.

Each subcommand (smile_vlm/commands/<stage>.py) parses its arguments and calls one public library
function; Snakemake rules
call these commands, and a user can run any step by hand. Settings arrive as one JSON object
(``--settings``), the same dict the rule passes through ``params:``. Speed-only values (threads,
workers) arrive as their own options, outside ``--settings``, so that changing them reruns no job.

Every command logs to stderr (INFO; ``-v`` for DEBUG), which a rule redirects to its ``log:`` file.
A user error (a bad argument, setting or input file) ends the command with one line on stderr and
exit status 2; ``-v`` also prints the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from smile_vlm import __version__
from smile_vlm.commands import STAGES
from smile_vlm.errors import ScanError
from smile_vlm.glcheck import OpenGLSetupError

log = logging.getLogger("smile_vlm.cli")

# Errors whose message tells the user what to change: a bad setting or argument (ValueError,
# KeyError), a missing or unreadable path (OSError), a broken input file (ScanError) and a
# PyOpenGL too old to render (OpenGLSetupError). Any other exception is a bug and keeps its
# traceback.
USER_ERRORS = (ScanError, ValueError, KeyError, OSError, OpenGLSetupError)
USER_ERROR_STATUS = 2

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smile-vlm", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and the traceback of a user error")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in STAGES:
        importlib.import_module(f"smile_vlm.commands.{stage}").register(sub)
    return parser


def configure_logging(verbose: bool = False) -> None:
    """INFO (DEBUG with -v) to stderr, one timestamped line per record: a rule sends stderr to
    its log: file, so the library's logging.getLogger(__name__) lines land there."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT,
                        datefmt=LOG_DATE_FORMAT, stream=sys.stderr, force=True)
    logging.captureWarnings(True)
    # Third-party chatter would bury ours (PyOpenGL logs a missing accelerator at INFO).
    for noisy in ("matplotlib", "PIL", "numcodecs", "zarr", "urllib3", "filelock", "fsspec", "asyncio", "OpenGL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not sys.stderr.isatty():
        # A log file is no terminal: Hugging Face's progress bars (which transformers follows)
        # would write carriage-return frames into it. Read when transformers is imported.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _user_error_message(err: BaseException) -> str:
    # str(KeyError("x")) is "'x'": show the message itself.
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(message).split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = False
    while argv and argv[0] in ("-v", "--verbose"):
        verbose = True
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    args.verbose = args.verbose or verbose
    configure_logging(args.verbose)
    try:
        args.func(args)
    except USER_ERRORS as err:
        if args.verbose:
            log.exception("%s failed", args.command)
        print(f"smile-vlm {args.command}: error: {_user_error_message(err)}", file=sys.stderr)
        return USER_ERROR_STATUS
    return 0
