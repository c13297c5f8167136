"""What tools/export.py offers, without importing the exporter (the detector, torchvision's ops):
the file formats and the ONNX opsets."""

FORMATS = ("onnx", "torchscript")
# RoiAlign / NonMaxSuppression / dynamic TopK need opset 11; 20 is the newest the
# TorchScript-based exporter writes
MIN_OPSET, MAX_OPSET = 11, 20
DEFAULT_OPSET = 17
