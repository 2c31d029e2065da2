"""Command line: ``edgepass <verb> ...``.

Results go to stdout (``--json`` for machines), progress and logs to stderr. Each verb lives in
the module that implements it and registers itself through :data:`COMMANDS` (module path of a
function ``add_parser(subparsers)`` that sets ``func`` on its parser; ``func(args) -> int``).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import EXIT_USAGE, EdgepassError

# verb modules, imported lazily so `edgepass --help` stays fast
COMMANDS = [
    "edgepass.commands.analysis",
    "edgepass.devices.cli",
    "edgepass.predict",
    "edgepass.commands.compile",
    "edgepass.campaign",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, like every other usage error
        verb = self.prog.partition(" ")[2]
        raise EdgepassError(f"{verb}: {message}" if verb else message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgepass", description="Per-layer width/kernel/precision optimizer for edge inference.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in COMMANDS:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except EdgepassError as exc:
        print(f"edgepass: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("edgepass: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
