# latency predictor exports (edgepass.predictors.latency)
from .latency import LatencyTable, fit_device, load_model, predict_latency  # noqa: F401
