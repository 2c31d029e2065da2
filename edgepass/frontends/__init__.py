"""Front ends: turn a backend model (torch.fx / ONNX) into the IR."""
