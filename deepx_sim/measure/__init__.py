"""Measurement on the machine the code runs on: per-layer timing with onnxruntime,
energy counters, the host's identity, and CNNs written directly with onnx.helper
for checking a calibrated cost model on models it has not seen."""
