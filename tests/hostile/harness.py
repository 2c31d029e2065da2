"""Run one hostile case and list what it broke.

A case is a command line run in a folder of its own, seeded with the files it needs. Whatever
the command does, it must leave:

- an exit code among the case's expected ones (never the internal-error code);
- no traceback, and one ``edgepass: error: ...`` line when it fails;
- every input file as it was (sha256), and no file outside the outputs the case allows;
- its time and (in a subprocess) its peak memory within bounds.

Cases run in this process (``main(argv)``: fast, for the test suite) or in a subprocess (hangs,
signals, memory: ``Case.isolate``); the benchmark runs them all in subprocesses.
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

EXIT_INTERNAL = 70          # edgepass's last-resort handler (unexpected exception)
DEFAULT_TIMEOUT_S = 180.0
RSS_LIMIT_MB = 6000.0       # a hostile input may not make a compile of the 8x8 digits CNN use more


@dataclass(frozen=True)
class Case:
    name: str                                   # family/variant, unique
    argv: tuple                                 # CLI arguments, paths relative to the case folder
    setup: Callable[[Path], None]               # writes the case's inputs into its folder
    expect: frozenset                           # allowed exit codes
    outputs: tuple = ()                         # glob patterns (relative) the command may create or change
    slow: bool = False                          # not in the default test run
    isolate: bool = False                       # needs a subprocess (may hang, signals, memory)
    timeout_s: float = DEFAULT_TIMEOUT_S
    env: tuple = ()                             # (name, value) pairs set for the run
    signal_after_s: float | None = None         # send ``signal`` this long after the start
    signal: int = signal.SIGINT
    check: Callable | None = None               # check(folder, outcome) -> list of problems


@dataclass
class Outcome:
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    rss_mb: float | None = None
    hung: bool = False
    escaped: str = ""                           # an exception that got out of main() (in-process only)


@dataclass
class Verdict:
    case: Case
    outcome: Outcome
    problems: list = field(default_factory=list)

    @property
    def traceback(self) -> bool:
        return bool(self.outcome.escaped) or "Traceback (most recent call last)" in self.outcome.stderr \
            or self.outcome.rc == EXIT_INTERNAL

    @property
    def lost(self) -> bool:
        return any(p.startswith(("input changed", "input lost")) for p in self.problems)


# ------------------------------------------------------------------------------------------------
# file snapshots (never opening anything that is not a regular file: a FIFO would block)
# ------------------------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict:
    """relative path -> sha256 of regular files, ``link:<target>`` of symlinks, kind of others."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            rel = p.relative_to(folder).as_posix()
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif not stat.S_ISDIR(st.st_mode):
                out[rel] = "special"
    return out


def _allowed(rel: str, patterns) -> bool:
    return any(fnmatch.fnmatch(rel, pat) for pat in patterns)  # fnmatch's "*" also matches "/"


def file_problems(case: Case, before: dict, after: dict) -> list:
    problems = []
    for rel, digest in before.items():
        if digest == "special" or _allowed(rel, case.outputs):
            continue
        if rel not in after:
            problems.append(f"input lost: {rel}")
        elif after[rel] != digest:
            problems.append(f"input changed: {rel}")
    problems += [f"stray file: {rel}" for rel in after if rel not in before and not _allowed(rel, case.outputs)]
    return problems


# ------------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _environment(pairs):
    saved = {k: os.environ.get(k) for k, _ in pairs}
    os.environ.update({k: v for k, v in pairs})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_inprocess(case: Case, folder: Path) -> Outcome:
    from edgepass.cli import main

    out, err = io.StringIO(), io.StringIO()
    escaped, rc = "", None
    t0 = time.perf_counter()
    with contextlib.chdir(folder), _environment(case.env), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        try:
            rc = main(list(case.argv))
        except SystemExit as exc:  # main() must return, but a stray exit is a clean exit all the same
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # noqa: BLE001 -- exactly what this harness is looking for
            escaped = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return Outcome(rc, out.getvalue(), err.getvalue(), time.perf_counter() - t0, escaped=escaped)


# the child reports its own peak RSS, so the parent's resource use never mixes in
_CHILD = ("import resource, sys\n"
          "from edgepass.cli import main\n"
          "try:\n    rc = main(sys.argv[2:])\n"
          "finally:\n"
          "    open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
          "sys.exit(rc)\n")


def run_subprocess(case: Case, folder: Path) -> Outcome:
    with tempfile.TemporaryDirectory() as side:
        rss_file = Path(side) / "rss"
        env = dict(os.environ, **dict(case.env), PYTHONUNBUFFERED="1")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(rss_file), *case.argv], cwd=folder, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        hung = False
        try:
            if case.signal_after_s is not None:
                try:
                    proc.wait(timeout=case.signal_after_s)
                except subprocess.TimeoutExpired:
                    proc.send_signal(case.signal)
            out, err = proc.communicate(timeout=case.timeout_s)
        except subprocess.TimeoutExpired:
            hung = True
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        seconds = time.perf_counter() - t0
        rss = float(rss_file.read_text()) / 1024 if rss_file.exists() and rss_file.read_text() else None
    rc = proc.returncode
    if rc is not None and rc < 0:  # killed by a signal: the shell's convention
        rc = 128 - rc
    return Outcome(rc, out.decode(errors="replace"), err.decode(errors="replace"), seconds, rss, hung)


def judge(case: Case, folder: Path, outcome: Outcome, before: dict) -> Verdict:
    v = Verdict(case, outcome)
    p = v.problems
    if outcome.hung:
        p.append(f"hang: still running after {case.timeout_s:.0f} s")
    if outcome.escaped:
        p.append(f"traceback: {outcome.escaped.splitlines()[-1][:200]}")
    elif "Traceback (most recent call last)" in outcome.stderr:
        p.append("traceback on stderr")
    if outcome.rc == EXIT_INTERNAL:
        p.append("internal error: " + _error_line(outcome.stderr))
    if not outcome.hung and outcome.rc not in case.expect:
        p.append(f"exit {outcome.rc}, expected {sorted(case.expect)}: {_error_line(outcome.stderr)}")
    errors = [ln for ln in outcome.stderr.splitlines() if ln.startswith("edgepass: error:")]
    if outcome.rc is not None and 0 < outcome.rc < 128 and not _error_line(outcome.stderr):  # >= 128: a signal
        p.append("failed without an 'edgepass: error:' line")
    if len(errors) > 1:
        p.append(f"{len(errors)} error lines, not one")
    if any(ln.startswith('  File "') for ln in outcome.stderr.splitlines()):
        p.append("a stack frame on stderr")
    if outcome.seconds > case.timeout_s and not outcome.hung:
        p.append(f"slow: {outcome.seconds:.0f} s > {case.timeout_s:.0f} s")
    if outcome.rss_mb is not None and outcome.rss_mb > RSS_LIMIT_MB:
        p.append(f"memory: peak RSS {outcome.rss_mb:.0f} MB > {RSS_LIMIT_MB:.0f} MB")
    p.extend(file_problems(case, before, snapshot(folder)))
    if case.check is not None and not p:
        p.extend(case.check(folder, outcome))
    return v


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("edgepass: error:") or ln.startswith("edgepass: internal")]
    return lines[-1][:300] if lines else ""


def run_case(case: Case, root: Path, *, isolate: bool | None = None) -> Verdict:
    """Set the case up in a fresh folder under ``root``, run it and judge it."""
    folder = root / case.name.replace("/", "__")
    folder.mkdir(parents=True)
    case.setup(folder)
    before = snapshot(folder)
    sub = case.isolate if isolate is None else (isolate or case.isolate)
    outcome = run_subprocess(case, folder) if sub else run_inprocess(case, folder)
    return judge(case, folder, outcome, before)


def to_row(v: Verdict) -> dict:
    return {"case": v.case.name, "rc": v.outcome.rc, "seconds": round(v.outcome.seconds, 3),
            "rss_mb": None if v.outcome.rss_mb is None else round(v.outcome.rss_mb, 1),
            "traceback": v.traceback, "lost": v.lost, "hung": v.outcome.hung, "problems": v.problems,
            "error": _error_line(v.outcome.stderr)}


def dumps(rows) -> str:
    return json.dumps(rows, indent=2, sort_keys=True)
