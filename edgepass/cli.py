"""Command line: ``edgepass <verb> ...``.

Results go to stdout (``--json`` for machines), progress and logs to stderr. Each verb is one module
of :mod:`edgepass.commands`, listed in :data:`COMMANDS`, with a function ``add_parser(subparsers)``
that sets ``func`` on its parser (``func(args) -> int``, its Python twin in the package).

Whatever happens, the user sees one line on stderr and a documented exit code: an
:class:`EdgepassError` its own code, anything else (a bug) ``edgepass: internal error: ...`` and
:data:`EXIT_INTERNAL`, with the traceback only under ``--debug`` or ``EDGEPASS_DEBUG=1``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import traceback

from .errors import EXIT_INTERNAL, EdgepassError, one_line
from .fileio import check_input

# verb modules, imported lazily so `edgepass --help` stays fast
COMMANDS = [
    "edgepass.commands.analyze",
    "edgepass.commands.space",
    "edgepass.commands.demo",
    "edgepass.commands.devices",
    "edgepass.commands.measure",
    "edgepass.commands.profile",
    "edgepass.commands.predict",
    "edgepass.commands.device",
    "edgepass.commands.compile",
    "edgepass.commands.campaign",
]

#: arguments (of any verb) that name files the verb reads; when such a path exists it must be a
#: regular file (``calibration``: or a folder), so that a FIFO or a device node never blocks a read
INPUT_ARGS = ("model", "calibration", "device", "devices", "design", "plan", "measurements", "base")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, like every other usage error
        verb = self.prog.partition(" ")[2]
        raise EdgepassError(f"{verb}: {message}" if verb else message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgepass", description="Per-layer width/kernel/precision optimizer for edge inference.")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an internal error (also EDGEPASS_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in COMMANDS:
        importlib.import_module(module).add_parser(sub)
    return parser


def check_input_args(args) -> None:
    """The existing paths among :data:`INPUT_ARGS` are regular files (before the verb reads them)."""
    for name in INPUT_ARGS:
        value = getattr(args, name, None)
        for path in value if isinstance(value, list) else [value]:
            if isinstance(path, str) and os.path.exists(path):
                check_input(path, name, allow_dir=name == "calibration")


def _debug_wanted(args) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("EDGEPASS_DEBUG") == "1"


def _one_line(exc: BaseException) -> str:
    text = one_line(exc, limit=300)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Terminated(BaseException):
    """SIGTERM (a build system stopping its jobs), raised in the main thread so that cleanup runs
    and no partial output is left, as for Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated()


EXIT_TERMINATED = 128 + signal.SIGTERM


def main(argv=None) -> int:
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return _run(argv)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(argv) -> int:
    args = None
    try:
        args = build_parser().parse_args(argv)
        check_input_args(args)
        return int(args.func(args) or 0)
    except EdgepassError as exc:
        print(f"edgepass: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("edgepass: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("edgepass: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:
        return 0
    except MemoryError:
        print("edgepass: error: out of memory (the model or its data is too large for this machine)",
              file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as exc:  # a bug: one line for the user, the traceback only when asked for
        if _debug_wanted(args):
            traceback.print_exc()
        print(f"edgepass: internal error: {_one_line(exc)} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


__all__ = ["main", "build_parser", "check_input_args", "COMMANDS", "INPUT_ARGS"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
