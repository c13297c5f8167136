"""Export a detector to ONNX or TorchScript and check the file against PyTorch.

    resdet export --checkpoint CKPT --format onnx --output model.onnx
    resdet export --checkpoint CKPT --format torchscript --output model.pt \\
        [--size H W | --dynamic] [--precision fp32|fp16] [--opset 17] [--image IMG] [KEY=VALUE ...]

The file holds the whole detector: input one float RGB image [3, H, W] in [0, 1] (any size
with --dynamic, the default; H x W only with --size, ONNX), resize, normalisation and padding
inside; outputs boxes [D, 4] (xyxy, input-image pixels), scores [D], labels [D] (int64, 1..K).
After writing, the file is run once (onnxruntime / torch.jit.load) on --image (default: a
generated shapes scene) and compared with the PyTorch model: same number of detections, boxes
within 0.5 px, scores within 1e-3 (fp16: 1 px, 1e-2). The comparison is printed; the exit
status is 1 when it fails (and no file is written), 2 for bad input. Export and check run on
the CPU, a GPU machine included: the traced file is device-independent. ONNX needs
`pip install 'resdet[export]'`; loading a TorchScript file needs `import torchvision` first.
"""

from __future__ import annotations

import sys

from detection.config import ConfigError
from detection.config.cli import configure_logging, tool_parser
from detection.deploy.formats import DEFAULT_OPSET, FORMATS


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, export and check; returns the exit status."""
    parser = tool_parser(__doc__)
    parser.add_argument(
        "--checkpoint",
        "--weights",
        dest="checkpoint",
        required=True,
        metavar="CKPT",
        help="a checkpoint file, or published weights by name (resdet weights lists them)",
    )
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--output", required=True, metavar="FILE")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="fixed input size")
    size.add_argument("--dynamic", action="store_true", help="any input size (the default)")
    parser.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (11..20)")
    parser.add_argument("--image", help="image for the check (default: a generated scene)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the embedded config"
    )
    args = parser.parse_intermixed_args(argv)
    configure_logging(args)
    # on a GPU machine too: a graph traced on the CPU runs on any device, and the check compares
    # it with PyTorch on the same device as onnxruntime's CPU provider
    print(
        "device: cpu (export and its check run on the CPU; the file runs anywhere)", file=sys.stderr
    )
    # the exporter (the detector, torchvision's ops, onnx) once the arguments are good
    from detection.deploy.export import ExportError, ParityError, export_checkpoint
    from detection.modeling.zoo import resolve_weights

    try:
        report = export_checkpoint(
            resolve_weights(args.checkpoint),
            args.output,
            format=args.format,
            size=tuple(args.size) if args.size else None,
            precision=args.precision,
            opset=args.opset,
            overrides=args.overrides,
            image=args.image,
        )
    except ConfigError as e:
        parser.exit(2, f"{parser.prog}: config error: {e}\n")
    # OSError: an unwritable --output, a missing checkpoint, weights not downloadable
    except (ExportError, OSError, ValueError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    except ParityError as e:
        print(e.report)
        print(
            f"{parser.prog}: the exported file disagrees with PyTorch; nothing written to "
            f"{args.output}",
            file=sys.stderr,
        )
        return 1
    print(report)
    print(f"wrote {report.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
