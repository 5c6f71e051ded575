"""ONNX: `lower` (torch.onnx dynamo export), `quantized` (QDQ and ConvInteger from a plan), `runner` (onnxruntime)."""
