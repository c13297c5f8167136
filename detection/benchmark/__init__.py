"""Measurement, apart from training: inference and training speed against torchvision
(speed.py, measure.py: timers, peak memory, the hardware's peak), onnxruntime against the
PyTorch fast path (onnx.py), COCO evaluation backends (evaluation.py), and learning on real
photos against torchvision's anchor script (real_photos.py)."""
