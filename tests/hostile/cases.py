"""The hostile cases, generated the way an attacker (or an unlucky user) would produce them.

Families: spoiled model files and odd graphs x every verb that reads a model; spoiled calibration
data; device files mutated field by field; outputs that would overwrite an input in any spelling;
out-of-range flags; spoiled CSV / plan / design / cache files; signals during a compile; the default
method on small models a new user builds. ``all_cases()`` lists them; ``Case.slow`` marks those left
out of the default test run.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from . import inputs as I
from .harness import Case

USAGE, INFEASIBLE, UNSUPPORTED, DEVICE, OK = 2, 3, 4, 5, 0
FAIL = frozenset({USAGE, UNSUPPORTED})          # a bad model: unreadable (2) or not analysable (4)
ANY_CLEAN = frozenset({OK, USAGE, INFEASIBLE, UNSUPPORTED, DEVICE})

DEV = "help/pixel2"
QUICK = ("--method", "search")                  # the compile's decision in ~0.1 s: cases exercise the rest
OUT = ("out.onnx", "out.onnx.*")                 # (a report next to it is allowed by the patterns below)


# ------------------------------------------------------------------------------------------------
# setup helpers
# ------------------------------------------------------------------------------------------------
def files(**named) -> callable:
    """A setup writing ``name -> bytes | callable() -> bytes`` (``__`` in a name is a ``/``, ``_dot_`` a ``.``)."""
    def setup(folder: Path):
        for name, data in named.items():
            path = folder / name.replace("__", "/").replace("_dot_", ".")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data() if callable(data) else data)
    return setup


def chain(*setups) -> callable:
    def setup(folder: Path):
        for s in setups:
            s(folder)
    return setup


def model(data=None, name="m.onnx") -> callable:
    return lambda folder: (folder / name).write_bytes(I.model_bytes() if data is None else
                                                      (data() if callable(data) else data))


def calib(data=None, name="c.npz") -> callable:
    return lambda folder: (folder / name).write_bytes(I.calibration_bytes() if data is None else
                                                      (data() if callable(data) else data))


def device_file(data=None, name="d.json") -> callable:
    return lambda folder: (folder / name).write_bytes(I.device_bytes() if data is None else
                                                      (data() if callable(data) else data))


def symlink(name: str, target: str) -> callable:
    return lambda folder: os.symlink(target, folder / name)


def hardlink(name: str, target: str) -> callable:
    return lambda folder: os.link(folder / target, folder / name)


def mkdir(name: str, mode: int | None = None) -> callable:
    def setup(folder: Path):
        (folder / name).mkdir(parents=True, exist_ok=True)
        if mode is not None:
            os.chmod(folder / name, mode)
    return setup


def fifo(name: str) -> callable:
    return lambda folder: os.mkfifo(folder / name)


def compile_argv(*extra, src="m.onnx", dst="out.onnx", device=DEV) -> tuple:
    return ("compile", src, dst, "--device", device, "--latency-fraction", "0.7", *QUICK, *extra)


def output_loads(path="out.onnx"):
    def check(folder: Path, outcome) -> list:
        if outcome.rc != 0:
            return []
        import onnx

        try:
            onnx.checker.check_model(onnx.load(str(folder / path)))
        except Exception as exc:  # noqa: BLE001
            return [f"written model does not load: {str(exc).splitlines()[0][:150]}"]
        return []
    return check


# ------------------------------------------------------------------------------------------------
# families
# ------------------------------------------------------------------------------------------------
MODEL_VERBS = {
    "analyze": lambda: ("analyze", "m.onnx"),
    "space": lambda: ("space", "m.onnx"),
    "predict": lambda: ("predict", "m.onnx", "--device", DEV),
    "measure": lambda: ("measure", "m.onnx", "--runs", "3", "--warmup", "1", "--min-seconds", "0.01"),
    "compile": lambda: compile_argv(),
}


def spoiled_model_files():
    """Bytes that are not a model, or a model broken on disk, given to every verb that reads a model."""
    spoils = {
        "empty": (b"", False),
        "text": (b"this is not an onnx model\n", False),
        "zeros": (bytes(4096), False),
        "random": (I.random_bytes(4096), False),
        "truncated10": (lambda: I.truncated(I.model_bytes(), 0.1), False),
        "truncated50": (lambda: I.truncated(I.model_bytes(), 0.5), False),
        "truncated99": (lambda: I.truncated(I.model_bytes(), 0.99), False),
        "bitflip1": (lambda: I.bit_flips(I.model_bytes(), 1), True),
        "bitflip2": (lambda: I.bit_flips(I.model_bytes(), 2), True),
        "bitflip3": (lambda: I.bit_flips(I.model_bytes(), 3, n=64), True),
        "pickle": (I.planted_pickle(), False),
        "gzip": (lambda: I.gzipped(I.model_bytes()), False),
        "json": (b'{"graph": {"node": []}}', False),
        "external_traversal": (lambda: I.serialized(I.with_external_data(I.digits(), "../../../../etc/passwd")), False),
        "external_absolute": (lambda: I.serialized(I.with_external_data(I.digits(), "/etc/passwd")), False),
        "external_missing": (lambda: I.serialized(I.with_external_data(I.digits(), "weights.bin")), False),
    }
    for spoil, (data, may_load) in spoils.items():
        for verb, argv in MODEL_VERBS.items():
            # a flipped bit may leave a valid model: then the verb runs (compile in full: slow)
            expect = ANY_CLEAN if may_load else FAIL
            yield Case(f"model-{spoil}/{verb}", argv(), model(data), expect, outputs=OUT,
                       slow=may_load and verb in ("compile", "measure"))
    for verb, argv in MODEL_VERBS.items():
        yield Case(f"model-missing/{verb}", argv(), lambda f: None, FAIL)
        yield Case(f"model-directory/{verb}", argv(), mkdir("m.onnx"), FAIL)
        yield Case(f"model-dangling-symlink/{verb}", argv(), symlink("m.onnx", "nowhere.onnx"), FAIL)
        yield Case(f"model-fifo/{verb}", argv(), fifo("m.onnx"), FAIL, isolate=True, timeout_s=60,
                   slow=verb not in ("analyze", "compile"))


def odd_graphs():
    """Valid protobufs of graphs a user could really have (or a fuzzer would make)."""
    graphs = {
        # name: (builder, expected exit codes, verbs that are slow)
        "opset30": (lambda: I.with_opset(I.digits(), 30), FAIL | {OK}),
        "custom-domain-op": (lambda: I.custom_op_net(), ANY_CLEAN),
        "unknown-default-op": (lambda: I.custom_op_net(domain="", op="Frobnicate"), FAIL),
        "no-weights": (I.no_weights_net, frozenset({OK, INFEASIBLE})),
        "if": (I.if_net, frozenset({OK, INFEASIBLE, UNSUPPORTED})),
        "loop": (I.loop_net, frozenset({OK, INFEASIBLE, UNSUPPORTED})),
        "two-inputs": (I.two_input_net, frozenset({OK, INFEASIBLE, UNSUPPORTED})),
        "int64-input": (I.int64_input_net, frozenset({OK, INFEASIBLE, UNSUPPORTED})),
        "dim-1e9": (lambda: I.with_input_dims(I.conv_net(), [1, 3, 10 ** 9, 8]), FAIL),
        "dims-product-huge": (lambda: I.with_input_dims(I.conv_net(), [4096, 3, 65536, 65536]), FAIL),
        "dim-zero": (lambda: I.with_input_dims(I.conv_net(), [1, 3, 0, 8]), FAIL),
        "nan-weight": (lambda: I.with_weights(I.conv_net(), float("nan")), ANY_CLEAN),
        "huge-weight": (lambda: I.with_weights(I.conv_net(), 3e38), ANY_CLEAN),
        "missing-initializer": (lambda: I.without_initializer(I.conv_net()), FAIL),
        "cycle": (lambda: I.with_cycle(I.conv_net()), FAIL),
        "dangling-output": (lambda: I.with_dangling_output(I.conv_net()), FAIL),
        "string-input": (lambda: I.with_string_input(I.conv_net()), FAIL),
        "empty-graph": (I.empty_graph, FAIL | {INFEASIBLE, OK}),
        "conv-net": (I.conv_net, frozenset({OK, INFEASIBLE})),
        "dynamic-batch": (lambda: I.conv_net(batch="N"), frozenset({OK, INFEASIBLE})),
    }
    # reading the structure of these is fine; running them is what must be refused
    structure_only = {"dim-1e9", "dims-product-huge", "string-input"}
    for name, (build, expect) in graphs.items():
        for verb in ("analyze", "predict", "compile"):
            if name in structure_only and verb != "compile":
                expect = ANY_CLEAN
            yield Case(f"graph-{name}/{verb}", MODEL_VERBS[verb](), model(lambda b=build: I.serialized(b())),
                       expect, outputs=OUT, check=output_loads() if verb == "compile" else None,
                       slow=verb == "compile" and expect & {OK, INFEASIBLE} and name not in ("no-weights", "if"))


def spoiled_calibration():
    spoils = {
        "pickle-object-array": (I.object_array_npz, USAGE),
        "planted-pickle-file": (I.planted_pickle, USAGE),
        "text": (b"1,2,3\n", USAGE),
        "truncated": (lambda: I.truncated(I.calibration_bytes(), 0.5), USAGE),
        "wrong-key": (lambda: I.npz_bytes(a=I.np.zeros((4, 1, 8, 8), "f4"), b=I.np.zeros((4, 1, 8, 8), "f4")), USAGE),
        "wrong-shape": (lambda: I.npz_bytes(calibration=I.np.zeros((4, 3, 8, 8), "f4")), USAGE),
        "wrong-rank": (lambda: I.npz_bytes(calibration=I.np.zeros((4, 64), "f4")), USAGE),
        "strings": (lambda: I.npz_bytes(calibration=I.np.array(["a", "b"])), USAGE),
        "complex": (lambda: I.npz_bytes(calibration=I.np.zeros((4, 1, 8, 8), "c8")), USAGE),
        "int32": (lambda: I.npz_bytes(calibration=I.np.zeros((4, 1, 8, 8), "i4")), frozenset({OK, USAGE})),
        "nan": (lambda: I.npz_bytes(calibration=I.np.full((4, 1, 8, 8), I.np.nan, "f4")), USAGE),
        "inf": (lambda: I.npz_bytes(calibration=I.np.full((4, 1, 8, 8), I.np.inf, "f4")), USAGE),
        "float-max": (lambda: I.npz_bytes(calibration=I.np.full((16, 1, 8, 8), 3e38, "f4")), frozenset({OK, USAGE})),
        "no-samples": (lambda: I.npz_bytes(calibration=I.np.zeros((0, 1, 8, 8), "f4")), USAGE),
        "scalar": (lambda: I.npz_bytes(calibration=I.np.float32(1.0)), USAGE),
        "empty-npz": (lambda: I.npz_bytes(), USAGE),
    }
    for name, (data, expect) in spoils.items():
        expect = frozenset({expect}) if isinstance(expect, int) else expect
        yield Case(f"calibration-{name}/compile", compile_argv("--calibration", "c.npz"), chain(model(), calib(data)),
                   expect, outputs=OUT, slow=OK in expect)
    yield Case("calibration-empty-dir/compile", compile_argv("--calibration", "cal"), chain(model(), mkdir("cal")),
               frozenset({USAGE}))
    yield Case("calibration-garbage-dir/compile", compile_argv("--calibration", "cal"),
               chain(model(), files(cal__a_dot_npy=b"junk", cal__b_dot_npz=b"junk")), frozenset({USAGE}))
    yield Case("calibration-missing/compile", compile_argv("--calibration", "nope.npz"), model(), frozenset({USAGE}))
    yield Case("calibration-fifo/compile", compile_argv("--calibration", "c.npz"), chain(model(), fifo("c.npz")),
               frozenset({USAGE}), isolate=True, timeout_s=60)
    yield Case("calibration-2GiB-expansion/compile", compile_argv("--calibration", "c.npz"),
               chain(model(), calib(_cached_bytes("huge_npz", I.huge_expansion_npz))), frozenset({OK, USAGE}),
               outputs=OUT, isolate=True, slow=True, timeout_s=300)


def _cached_bytes(name, make):
    """Expensive inputs are made once per process."""
    cache = {}

    def get():
        if name not in cache:
            cache[name] = make()
        return cache[name]
    return get


DEVICE_MUTATIONS = {
    "null": None, "string": "x", "negative": -1, "zero": 0, "list": [], "object": {}, "true": True,
    "huge": "HUGE_INT", "deep": "DEEP", "nan": float("nan"),
}


def _device_mutant(key: str, mutation: str) -> bytes:
    d = json.loads(I.device_bytes())
    if mutation == "missing":
        d.pop(key, None)
        return json.dumps(d).encode()
    value = DEVICE_MUTATIONS[mutation]
    d[key] = "@@VALUE@@"
    text = json.dumps(d)
    literal = {"HUGE_INT": "9" * 5000, "DEEP": "[" * 1000 + "]" * 1000}.get(value, None) if isinstance(value, str) \
        else None
    return text.replace('"@@VALUE@@"', literal if literal is not None else json.dumps(value)).encode()


def mutated_device_files():
    """A real device file, each field spoiled in turn; then files that are not device files at all."""
    keys = sorted(json.loads(I.device_bytes()))
    for key in keys:
        for mutation in (*DEVICE_MUTATIONS, "missing"):
            yield Case(f"device-{key}-{mutation}/show", ("devices", "show", "d.json"),
                       device_file(lambda k=key, m=mutation: _device_mutant(k, m)), frozenset({OK, DEVICE}),
                       slow=mutation not in ("huge", "deep", "string", "null"))
    structural = {
        "empty": b"", "list": b"[1, 2]", "binary": I.random_bytes(512, 3), "nan-literal": b'{"id": NaN}',
        "deep": b"[" * 100_000 + b"]" * 100_000, "huge-int": b'{"id": ' + b"9" * 5000 + b"}",
        "not-utf8": b'{"id": "\xff\xfe"}', "duplicate-keys": b'{"id": "a/b", "id": "c/d"}',
        "big-file": lambda: b'{"notes": "' + b"x" * (8 << 20) + b'"}',
        "threads-2^31": lambda: json.dumps(dict(I.device_dict(), threads=2 ** 31)).encode(),
        "fit-residual-wrong-length": lambda: _fitted_with(lambda fit: fit.__setitem__("residual", [0.0])),
    }
    for name, data in structural.items():
        for verb, argv in (("show", ("devices", "show", "d.json")), ("predict", ("predict", "m.onnx", "--device", "d.json")),
                           ("compile", compile_argv(device="d.json"))):
            yield Case(f"devicefile-{name}/{verb}", argv, chain(model(), device_file(data)),
                       # `devices show` only displays a fit; using it (predict, compile) must refuse a bad one
                       frozenset({DEVICE}) if not (name == "threads-2^31" or name.startswith("fit-") and verb == "show")
                       else frozenset({OK, DEVICE}),
                       outputs=OUT, slow=verb == "compile" and name in ("threads-2^31",))
    for verb, argv in (("predict", ("predict", "m.onnx", "--device", "d.json")), ("compile", compile_argv(device="d.json"))):
        yield Case(f"devicefile-missing/{verb}", argv, model(), frozenset({DEVICE, USAGE}))
        yield Case(f"devicefile-fifo/{verb}", argv, chain(model(), fifo("d.json")), frozenset({DEVICE, USAGE}),
                   isolate=True, timeout_s=60, slow=verb == "predict")
        yield Case(f"deviceid-unknown/{verb}", argv[:-1] + ("nosuch/device",) if verb == "predict" else
                   compile_argv(device="nosuch/device"), model(), frozenset({DEVICE}))
        yield Case(f"deviceid-traversal/{verb}", argv[:-1] + ("../../etc/passwd",) if verb == "predict" else
                   compile_argv(device="../../etc/passwd"), model(), frozenset({DEVICE, USAGE}))


def _fitted_with(spoil) -> bytes:
    """A device file written by ``device fit`` with one part of its fit spoiled."""
    d = _fitted_device()
    fit = d.get("provenance", {}).get("latency_fit", {})
    spoil(fit)
    return json.dumps(d).encode()


_FITTED: dict = {}


def _fitted_device() -> dict:
    if "d" not in _FITTED:
        import contextlib
        import io
        import tempfile

        from edgepass.cli import main

        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "m.csv"
            csv.write_bytes(I.fit_csv())
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                rc = main(["device", "fit", str(csv), "--name", "fitted", "-o", str(Path(tmp) / "f.json")])
            assert rc == 0, "device fit of the hostile suite's CSV failed"
            _FITTED["d"] = json.loads((Path(tmp) / "f.json").read_text())
    return json.loads(json.dumps(_FITTED["d"]))


def overwrites():
    """Outputs that are an input, in every spelling: each must be refused (exit 2) before any work."""
    base = chain(model(), calib(), device_file())
    spellings = {
        "same": ("m.onnx", base),
        "dot": ("./m.onnx", base),
        "dotdot": ("sub/../m.onnx", chain(base, mkdir("sub"))),
        "absolute-ish": ("sub/./../m.onnx", chain(base, mkdir("sub"))),
        "symlink": ("ln.onnx", chain(base, symlink("ln.onnx", "m.onnx"))),
        "hardlink": ("hl.onnx", chain(base, hardlink("hl.onnx", "m.onnx"))),
        "dir-symlink": ("here/m.onnx", chain(base, symlink("here", "."))),
    }
    for name, (dst, setup) in spellings.items():
        yield Case(f"overwrite-model-{name}/compile", compile_argv(dst=dst), setup, frozenset({USAGE}))
        yield Case(f"overwrite-model-{name}/report", compile_argv("--report", dst), setup, frozenset({USAGE}))
    yield Case("overwrite-calibration/compile", compile_argv("--calibration", "c.npz", dst="c.npz"), base,
               frozenset({USAGE}))
    yield Case("overwrite-calibration-in-dir/compile", compile_argv("--calibration", "cal", dst="cal/a.npz"),
               chain(model(), mkdir("cal"), calib(name="cal/a.npz")), frozenset({USAGE}))
    yield Case("overwrite-device-file/compile", compile_argv(device="d.json", dst="d.json"), base, frozenset({USAGE}))
    yield Case("overwrite-report-is-output/compile", compile_argv("--report", "out.onnx"), base, frozenset({USAGE}))
    yield Case("overwrite-report-is-calibration/compile", compile_argv("--calibration", "c.npz", "--report", "c.npz"),
               base, frozenset({USAGE}))
    yield Case("overwrite-report-is-device/compile", compile_argv("--report", "d.json", device="d.json"), base,
               frozenset({USAGE}))
    yield Case("overwrite-plot-is-model/compile", compile_argv("--plot", "m.onnx"), base, frozenset({USAGE}))
    yield Case("overwrite-report-is-plot/compile", compile_argv("--report", "r.png", "--plot", "r.png"), base,
               frozenset({USAGE}))
    # fleets: OUT is a folder; inputs inside it must survive
    fleet = ("compile", "m.onnx", "out", "--device", DEV, "--device", "hwnasbench/raspi4", "--latency-fraction", "0.7",
             *QUICK)
    yield Case("overwrite-fleet-model-inside/compile",
               ("compile", "out/help__pixel2.onnx", "out", "--device", DEV, "--device", "hwnasbench/raspi4",
                "--latency-fraction", "0.7", *QUICK),
               chain(mkdir("out"), model(name="out/help__pixel2.onnx")),
               frozenset({USAGE}))
    yield Case("overwrite-fleet-summary/compile", fleet + ("--calibration", "out/summary.json"),
               chain(base, mkdir("out"), files(out__summary_dot_json=I.calibration_bytes())), frozenset({USAGE}))
    yield Case("overwrite-fleet-devicefile/compile",
               ("compile", "m.onnx", "out", "--device", "out/user__hostile-board.report.json", "--device", DEV,
                "--latency-fraction", "0.7", *QUICK),
               chain(model(), mkdir("out"), device_file(name="out/user__hostile-board.report.json")),
               frozenset({USAGE}))
    yield Case("overwrite-fleet-list/compile",
               ("compile", "m.onnx", "out", "--devices", "out/summary.json", "--latency-fraction", "0.7", *QUICK),
               chain(model(), mkdir("out"), files(out__summary_dot_json=f"{DEV}\nhwnasbench/raspi4\n".encode())),
               frozenset({USAGE}))
    yield Case("overwrite-fit-csv/device-fit", ("device", "fit", "m.csv", "--name", "x", "-o", "m.csv"),
               files(m_dot_csv=I.fit_csv()), frozenset({USAGE}))
    yield Case("overwrite-fit-csv-symlink/device-fit", ("device", "fit", "m.csv", "--name", "x", "-o", "l.csv"),
               chain(files(m_dot_csv=I.fit_csv()), symlink("l.csv", "m.csv")), frozenset({USAGE}))
    yield Case("overwrite-fit-base/device-fit", ("device", "fit", "m.csv", "--name", "x", "--base", "d.json", "-o",
                                                 "d.json"),
               chain(files(m_dot_csv=I.fit_csv()), device_file()), frozenset({USAGE}))
    yield Case("overwrite-campaign-plan/campaign", ("campaign", "plan.json", "--out", "plan.json"),
               chain(model(), files(plan_dot_json=I.plan_bytes())), frozenset({USAGE}))
    yield Case("overwrite-campaign-model/campaign", ("campaign", "plan.json", "--out", "m.onnx"),
               chain(model(), files(plan_dot_json=I.plan_bytes())), frozenset({USAGE}))


def bad_outputs():
    """Outputs that cannot be written: found before the compile, not after it."""
    yield Case("output-is-directory/compile", compile_argv(dst="outdir"), chain(model(), mkdir("outdir")),
               frozenset({USAGE}))
    yield Case("output-missing-folder/compile", compile_argv(dst="nope/out.onnx"), model(), frozenset({USAGE}))
    yield Case("output-under-a-file/compile", compile_argv(dst="m.onnx/out.onnx"), model(), frozenset({USAGE}))
    yield Case("output-255-chars/compile", compile_argv(dst="o" * 250 + ".onnx"), model(), frozenset({OK, USAGE}),
               outputs=("o" * 250 + ".onnx",), slow=True)
    yield Case("output-256-chars/compile", compile_argv(dst="o" * 251 + ".onnx"), model(), frozenset({USAGE}))
    yield Case("report-missing-folder/compile", compile_argv("--report", "nope/r.json"), model(), frozenset({USAGE}))
    yield Case("report-is-directory/compile", compile_argv("--report", "rdir"), chain(model(), mkdir("rdir")),
               frozenset({USAGE}))
    yield Case("profile-output-missing-folder/profile", ("profile", "-o", "nope/d.json", "--quick"), lambda f: None,
               frozenset({USAGE}))
    yield Case("profile-output-directory/profile", ("profile", "-o", "pdir", "--quick"), mkdir("pdir"),
               frozenset({USAGE}))
    yield Case("fit-output-missing-folder/device-fit", ("device", "fit", "m.csv", "--name", "x", "-o", "nope/x.json"),
               files(m_dot_csv=I.fit_csv()), frozenset({USAGE}))
    yield Case("fleet-output-is-file/compile",
               ("compile", "m.onnx", "c.npz", "--device", DEV, "--device", "hwnasbench/raspi4", "--latency-fraction",
                "0.7", *QUICK), chain(model(), calib()), frozenset({USAGE}))


NUMBER_FLAGS = {
    "latency-ms": ["-1", "0", "nan", "inf", "1e309", "abc", ""],
    "latency-fraction": ["-0.5", "0", "nan", "inf"],
    "energy-mj": ["-1", "nan"],
    "seed": ["-1", "99999999999999999999999"],
    "evaluate-top": ["-1", "100000000000"],
}


def bad_flags():
    for flag, values in NUMBER_FLAGS.items():
        for v in values:
            argv = ("compile", "m.onnx", "out.onnx", "--device", DEV, *QUICK, f"--{flag}={v}")
            if flag != "latency-fraction" and flag != "latency-ms":
                argv += ("--latency-fraction", "0.7")
            expect = frozenset({USAGE}) if not (flag == "latency-ms" and v == "1e309") else frozenset({USAGE, OK})
            yield Case(f"flag-{flag}={v or 'empty'}/compile", argv, model(), expect, outputs=OUT)
    shapes = ["image:0,1,8,8", "image:-1,1,8,8", "image:1,1,1000000000,8", "image:1,1,100000,100000", "junk",
              "image:", "nosuch:1,1,8,8", "image:1,1,8"]
    for s in shapes:
        for verb in ("analyze", "compile"):
            argv = ("analyze", "m.onnx", "--input-shape", s) if verb == "analyze" else compile_argv("--input-shape", s)
            huge = s in ("image:1,1,1000000000,8", "image:1,1,100000,100000")
            expect = ANY_CLEAN if huge and verb == "analyze" else frozenset({USAGE, UNSUPPORTED})
            yield Case(f"flag-input-shape={s}/{verb}", argv, model(), expect, outputs=OUT)
    others = {
        "precisions-int4": compile_argv("--precisions", "int4"),
        "precisions-empty": compile_argv("--precisions", ""),
        "method-bogus": compile_argv("--method", "bogus"),
        "workers-negative": ("compile", "m.onnx", "out", "--device", DEV, "--device", "hwnasbench/raspi4",
                             "--latency-fraction", "0.7", *QUICK, "--executor", "process", "--workers", "-1"),
        "workers-zero": ("compile", "m.onnx", "out", "--device", DEV, "--device", "hwnasbench/raspi4",
                         "--latency-fraction", "0.7", *QUICK, "--executor", "process", "--workers", "0"),
        "no-budget": ("compile", "m.onnx", "out.onnx", "--device", DEV, *QUICK),
        "no-device": ("compile", "m.onnx", "out.onnx", "--latency-ms", "5"),
        "unknown-verb": ("frobnicate",),
        "no-args": (),
        "measure-threads-2^31": ("measure", "m.onnx", "--threads", str(2 ** 31)),
        "measure-threads-negative": ("measure", "m.onnx", "--threads", "-1"),
        "measure-runs-zero": ("measure", "m.onnx", "--runs", "0"),
        "measure-runs-huge": ("measure", "m.onnx", "--runs", str(10 ** 12)),
        "measure-min-seconds-negative": ("measure", "m.onnx", "--min-seconds", "-1"),
        "measure-min-seconds-huge": ("measure", "m.onnx", "--min-seconds", "1e12"),
        "profile-threads-negative": ("profile", "-o", "p.json", "--threads", "-1", "--quick"),
        "profile-threads-2^31": ("profile", "-o", "p.json", "--threads", str(2 ** 31), "--quick"),
        "demo-ratio-zero": ("demo", "--ratio", "0"),
        "demo-ratio-negative": ("demo", "--ratio", "-1"),
        "demo-ratio-nan": ("demo", "--ratio", "nan"),
        "demo-device-unknown": ("demo", "--device", "nosuch/device"),
        "devices-show-unknown": ("devices", "show", "nosuch/device"),
        "predict-top-negative": ("predict", "m.onnx", "--device", DEV, "--top", "-1"),
    }
    for name, argv in others.items():
        expect = frozenset({DEVICE}) if "unknown" in name and name != "unknown-verb" else frozenset({USAGE})
        if name in ("precisions-empty", "predict-top-negative"):
            expect = frozenset({OK, USAGE})  # may mean "the default" / "every layer"
        if name == "measure-runs-huge" or name == "measure-min-seconds-huge":
            expect = frozenset({USAGE})  # refused up front, never a run that ends next year
        yield Case(f"flag-{name}", argv, model(), expect, outputs=OUT + ("out/*", "p.json"), timeout_s=60)


def bad_lists_and_tables():
    """Fleet lists, device-fit CSVs, campaign plans and design files that are not what they claim."""
    lists = {"empty": b"", "binary": I.random_bytes(300, 5), "comments-only": b"# nothing\n",
             "unknown-device": b"help/pixel2\nnosuch/device\n", "traversal": b"../../etc/passwd\n",
             "huge-line": b"x" * (1 << 20) + b"\n", "name-over-255": b"y" * 300 + b"\n"}
    for name, data in lists.items():
        expect = frozenset({USAGE, DEVICE}) if name != "unknown-device" else frozenset({DEVICE})
        yield Case(f"fleet-list-{name}/compile",
                   ("compile", "m.onnx", "out", "--devices", "fleet.txt", "--latency-fraction", "0.7", *QUICK),
                   chain(model(), files(fleet_dot_txt=data)), expect, outputs=("out/*",),
                   slow=name == "unknown-device")
    csvs = {"binary": I.random_bytes(400, 6), "empty": b"", "header-only": b"model,latency_ms\n",
            "wrong-columns": b"a,b\n1,2\n", "nan": I.fit_csv((float("nan"), 1, 2, 3)),
            "negative": I.fit_csv((-1, 1, 2, 3)), "zero": I.fit_csv((0, 0, 0, 0)), "huge": I.fit_csv((1e308,) * 4),
            "unknown-spec": I.fit_csv(specs=["nb201:junk"] * 4), "one-row": I.fit_csv((1.0,)),
            "model-traversal": I.fit_csv(specs=["../../../../etc/passwd"] * 4),
            "nul-bytes": b"model,latency_ms\n\x00\x00,1\n", "long-line": b"model,latency_ms\n" + b"x" * (4 << 20) + b",1\n",
            "utf16": "model,latency_ms\nx,1\n".encode("utf-16")}
    for name, data in csvs.items():
        yield Case(f"fit-csv-{name}/device-fit", ("device", "fit", "m.csv", "--name", "x", "-o", "x.json"),
                   files(m_dot_csv=data), frozenset({USAGE}) if name != "huge" else frozenset({USAGE, OK}),
                   outputs=("x.json",))
    plans = {"binary": I.random_bytes(200, 7), "list": b"[1,2]", "empty": b"", "deep": b"[" * 100_000 + b"]" * 100_000,
             "missing-models": b'{"devices": ["sim/a"]}', "huge-designs": lambda: I.plan_bytes(
                 models=[{"model": "m.onnx", "random_designs": 10 ** 12}]),
             "threads-2^31": lambda: I.plan_bytes(threads=2 ** 31), "runs-huge": lambda: I.plan_bytes(runs=10 ** 15),
             "model-traversal": lambda: I.plan_bytes(model="../../../../etc/passwd"),
             "huge-int": b'{"devices": ["a"], "models": ["m.onnx"], "runs": ' + b"9" * 5000 + b"}"}
    for name, data in plans.items():
        # a plan is the user's own file: a model path outside its folder is theirs to name (an error row)
        expect = frozenset({OK, USAGE}) if name == "model-traversal" else frozenset({USAGE})
        yield Case(f"plan-{name}/campaign", ("campaign", "plan.json", "--out", "rows.csv"),
                   chain(model(), files(plan_dot_json=data)), expect, outputs=("rows*",))
    designs = {"list": b"[1,2,3]", "binary": I.random_bytes(100, 8), "empty": b"", "wrong-types": b'{"widths": "all"}',
               "huge-int": b'{"widths": {"a": ' + b"9" * 5000 + b"}}", "deep": b"[" * 100_000 + b"]" * 100_000,
               "unknown-layers": b'{"widths": {"nosuch": 3}, "kernels": {}, "precisions": {}}',
               "overflow": b'{"widths": {"nosuch": 1e400}}', "nan": b'{"widths": {"nosuch": NaN}}'}
    for name, data in designs.items():
        yield Case(f"design-{name}/predict", ("predict", "m.onnx", "--device", DEV, "--design", "design.json"),
                   chain(model(), files(design_dot_json=data)), frozenset({USAGE}))


def tampered_reports():
    """``compile --check`` on outputs whose embedded report was edited."""
    def compiled(spoil):
        def setup(folder: Path):
            import onnx

            from edgepass.compile import report_of  # noqa: F401 (the report lives in metadata_props)

            out = _compiled_digits()
            m = onnx.load_from_string(out)
            spoil(m)
            (folder / "out.onnx").write_bytes(m.SerializeToString())
            (folder / "m.onnx").write_bytes(I.model_bytes())
        return setup

    def set_report(text):
        def spoil(m):
            for p in m.metadata_props:
                if "report" in p.key:
                    p.value = text
        return spoil

    def edit_design(edit):
        def spoil(m):
            for p in m.metadata_props:
                if "report" in p.key:
                    r = json.loads(p.value)
                    edit(r)
                    p.value = json.dumps(r)
        return spoil

    spoils = {
        "invalid-json": set_report("{not json"),
        "list": set_report("[1, 2]"),
        "design-not-object": edit_design(lambda r: r.__setitem__("design", [1, 2])),
        "unknown-layer": edit_design(lambda r: r["design"].setdefault("widths", {}).__setitem__("nosuch", 3)),
        "huge-width": edit_design(lambda r: r["design"]["widths"].update({k: 10 ** 9 for k in r["design"]["widths"]})),
        "no-report": lambda m: m.ClearField("metadata_props"),
    }
    for name, spoil in spoils.items():
        yield Case(f"check-{name}/compile", ("compile", "m.onnx", "out.onnx", "--device", DEV, "--check"),
                   compiled(spoil), frozenset({USAGE, UNSUPPORTED}))


_COMPILED: dict = {}


def _compiled_digits() -> bytes:
    """The digits CNN compiled once per process (the --check cases edit its report)."""
    if "out" not in _COMPILED:
        import contextlib
        import io
        import tempfile

        from edgepass.cli import main

        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "m.onnx", Path(tmp) / "out.onnx"
            src.write_bytes(I.model_bytes())
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                rc = main(list(compile_argv(src=str(src), dst=str(dst))))
            assert rc == 0, "compiling the digits CNN for the --check cases failed"
            _COMPILED["out"] = dst.read_bytes()
    return _COMPILED["out"]


def caches():
    """A cache folder that is not a cache, and cache entries spoiled after a first compile."""
    yield Case("cache-dir-is-file/compile", compile_argv("--cache-dir", "cachefile"),
               chain(model(), files(cachefile=b"not a folder")), frozenset({OK}), outputs=OUT, slow=True)
    yield Case("cache-dir-under-file/compile", compile_argv("--cache-dir", "cachefile/sub"),
               chain(model(), files(cachefile=b"not a folder")), frozenset({OK}), outputs=OUT, slow=True)

    def poisoned(spoil):
        def setup(folder: Path):
            import contextlib
            import io

            from edgepass.cli import main

            (folder / "m.onnx").write_bytes(I.model_bytes())
            (folder / "c.npz").write_bytes(I.calibration_bytes())
            argv = compile_argv("--calibration", "c.npz", "--cache-dir", "cache", dst="first.onnx")
            with contextlib.chdir(folder), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                assert main(list(argv)) == 0
            for p in sorted((folder / "cache").rglob("*")):
                if p.is_file():
                    spoil(p)
        return setup

    def same_as_first(folder: Path, outcome) -> list:
        if (folder / "out.onnx").read_bytes() != (folder / "first.onnx").read_bytes():
            return ["the compile with a spoiled cache wrote a different model than the cold compile"]
        return []

    def truncate(p: Path):
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])

    def json_junk(p: Path):
        if p.suffix == ".json":
            p.write_text(json.dumps({"state": {"__class__": "os.system", "evaluate": 1, "x": [1e308] * 3},
                                     "key": "planted"}))

    def flip_metrics(p: Path):
        if p.name.endswith(".evaluated.json"):
            d = json.loads(p.read_text())
            ranked = sorted(d)
            p.write_text(json.dumps({k: (1.0 if i == 0 else 0.0) for i, k in enumerate(ranked)}))

    def garbage(p: Path):
        p.write_bytes(I.random_bytes(max(16, p.stat().st_size), 9))

    for name, spoil in (("truncated", truncate), ("json-junk", json_junk), ("planted-evaluations", flip_metrics),
                        ("garbage", garbage)):
        yield Case(f"cache-{name}/compile", compile_argv("--calibration", "c.npz", "--cache-dir", "cache"),
                   poisoned(spoil), frozenset({OK}), outputs=OUT + ("cache/*",), check=same_as_first, slow=True,
                   timeout_s=400)


def signals():
    """Interrupted compiles leave nothing behind: no output, no temp file."""
    argv = compile_argv("--calibration", "c.npz", "--method", "amortized", "--cache-dir", "cache")
    base = chain(model(), calib())
    yield Case("signal-int/compile", argv, base, frozenset({130}), outputs=("cache/*",), isolate=True,
               signal_after_s=8.0, signal=signal.SIGINT, slow=True, timeout_s=120)
    yield Case("signal-kill/compile", argv, base, frozenset({128 + signal.SIGKILL}), outputs=("cache/*",),
               isolate=True, signal_after_s=8.0, signal=signal.SIGKILL, slow=True, timeout_s=120)
    yield Case("signal-term/compile", argv, base, frozenset({128 + signal.SIGTERM}), outputs=("cache/*",),
               isolate=True, signal_after_s=8.0, signal=signal.SIGTERM, slow=True, timeout_s=120)


def default_method():
    """The default method (amortized) on the small models a new user builds first: all must compile."""
    nets = {"conv-net": I.conv_net, "dynamic-batch": lambda: I.conv_net(batch="N"), "one-channel": lambda:
            I.conv_net(channels=1), "tiny-spatial": lambda: I.conv_net(size=2), "digits": I.digits}
    for name, build in nets.items():
        yield Case(f"default-method-{name}/compile",
                   ("compile", "m.onnx", "out.onnx", "--device", DEV, "--latency-fraction", "0.8"),
                   model(lambda b=build: I.serialized(b())), frozenset({OK}), outputs=OUT, check=output_loads(),
                   slow=True, timeout_s=600)


FAMILIES = (spoiled_model_files, odd_graphs, spoiled_calibration, mutated_device_files, overwrites, bad_outputs,
            bad_flags, bad_lists_and_tables, tampered_reports, caches, signals, default_method)


def all_cases() -> list:
    cases = [c for family in FAMILIES for c in family()]
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "hostile case names must be unique"
    return cases
