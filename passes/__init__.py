
# -- precision (fp32 / fp16 / int8 per layer) -------------------------------------------------
from .precision_fx import PrecisionPassFX  # noqa: E402
from .precision_onnx import PrecisionPassONNX  # noqa: E402
