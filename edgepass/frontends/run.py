"""Running a model of either front end on numpy inputs (what verification and the accuracy
predictor compare): :func:`run_model`, :func:`inputs_for`."""
from __future__ import annotations

import numpy as np

from ..calibration import onnx_input_specs, random_feed
from ..util import example_inputs_for, is_torch_module
from .onnx import fix_input_shapes, inference_session, load_model


def run_model(model, inputs: list[np.ndarray], *, threads: int = 1) -> list[np.ndarray]:
    """Outputs of a torch module or an ONNX model on numpy inputs."""
    if is_torch_module(model):
        import torch

        with torch.no_grad():
            out = model(*[torch.from_numpy(x) for x in inputs])
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().float().numpy() for o in out]
    import onnxruntime as ort

    proto = load_model(model, check=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = inference_session(proto, so)
    names = [i.name for i in sess.get_inputs()]
    return [np.asarray(o, dtype=np.float32) for o in sess.run(None, dict(zip(names, inputs)))]


def inputs_for(model, example_inputs, seed=0) -> list[np.ndarray]:
    """``example_inputs`` as numpy arrays, or made-up inputs of the model's shapes (seeded)."""
    if example_inputs is not None:
        return [np.asarray(x.detach().numpy() if hasattr(x, "detach") else x, dtype=np.float32)
                for x in (example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,))]
    if is_torch_module(model):
        return [x.numpy() for x in example_inputs_for(model, None)]
    return list(random_feed(onnx_input_specs(fix_input_shapes(load_model(model, check=False))), seed).values())


__all__ = ["run_model", "inputs_for"]
