"""Inference backends behind one interface (base.InferenceModel): ONNX Runtime on the CPU, RKNN on the RK3588 NPU."""
