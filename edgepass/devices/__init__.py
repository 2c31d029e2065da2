"""Devices: the device file format, the embedded device database and the latency harness.

    from edgepass.devices import list_devices, get_device, load_device, Device
    dev = get_device("mmb/pixel4-1large-tflite-int8")      # or an alias, or "my_board.json"
    vec = dev.features()                                   # FEATURE_NAMES documents the order

``measure`` (onnxruntime timing on this machine) imports onnxruntime only when called, so that
importing this package, e.g. for ``edgepass devices``, does not pay for it. (The function
``edgepass.devices.measure`` shadows the submodule of the same name on purpose; import the
module's other names with ``from edgepass.devices.measure import ...``.)
"""
from __future__ import annotations

import sys as _sys
import types as _types

from .measure import Measurement, NodeTime, measure  # noqa: I001 -- binds the function over the submodule
from .database import database_info, devices_table, get_device, list_devices
from .schema import (
    DATASHEET_FEATURES, FEATURE_NAMES, KINDS, KNOWN_RUNTIMES, PRECISIONS, SCHEMA, Device, load_device,
)

__all__ = [
    "Device", "load_device", "list_devices", "get_device", "devices_table", "database_info",
    "measure", "Measurement", "NodeTime", "SCHEMA", "KINDS", "PRECISIONS", "KNOWN_RUNTIMES",
    "DATASHEET_FEATURES", "FEATURE_NAMES",
]



class _DevicesModule(_types.ModuleType):
    """``edgepass.devices()`` is the Python twin of ``edgepass devices``: a list of dicts (id, kind, ...)."""

    def __call__(self, *args, **kwargs):
        return devices_table(*args, **kwargs)


_sys.modules[__name__].__class__ = _DevicesModule
