"""``edgepass device fit MEASUREMENTS.csv --name N -o DEVICE.json``: a device of its own from a few
measured models (the latency predictor's few-shot fit)."""
from __future__ import annotations

from ..errors import InputError
from ..fileio import check_files, read_text


def add_parser(subparsers) -> None:
    d = subparsers.add_parser("device", help="device utilities: fit a device from a few measurements")
    dsub = d.add_subparsers(dest="device_command", metavar="SUBCOMMAND")
    dsub.required = True
    f = dsub.add_parser("fit", help="few-shot fit of the latency predictor from measured models")
    f.add_argument("measurements", help="CSV with columns model,latency_ms (model: zoo spec or ONNX path), "
                                        "or a campaign CSV (edgepass campaign)")
    f.add_argument("--from-device", help="the device whose rows of a campaign CSV to fit (when it has several)")
    f.add_argument("--name", required=True, help="device name")
    f.add_argument("--id", dest="device_id", help="device id (default user/<name>)")
    f.add_argument("--base", help="known device (id or file) whose datasheet/kind/runtime describe this one")
    f.add_argument("-o", "--output", required=True, help="device file to write")
    f.set_defaults(func=run_fit)


def run_fit(args) -> int:
    # the few-shot fit reads campaign CSVs and builds zoo models: loaded only when the verb runs
    from ..campaign import fit_pairs, is_campaign_csv
    from ..predictors.latency import fit_device, fit_quality, fit_source

    read_text(args.measurements, "measurements CSV")   # binary: one line, before the fit
    check_files(inputs={"measurements CSV": args.measurements, "--base": args.base}, outputs={"-o": args.output})
    measurements, precision = args.measurements, None
    if is_campaign_csv(args.measurements):  # rows of many devices, designs as graphs
        measurements, precision = fit_pairs(args.measurements, args.from_device)
    elif args.from_device:
        raise InputError("--from-device selects rows of a campaign CSV (columns device,spec,design,...)")
    dev = fit_device(measurements, name=args.name, base=args.base, device_id=args.device_id, precision=precision)
    dev.save(args.output)
    fit = dev.provenance["latency_fit"]
    print(f"wrote {args.output}: {dev.id}, fitted on {fit['k']} models; predictor: {fit_source(fit)}; "
          f"{fit_quality(fit)}")
    return 0
