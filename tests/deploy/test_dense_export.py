"""Export of a detector with many candidates: the graph's class-wise NMS is torchvision's
batched_nms on the same boxes (both of its ways), TorchScript gives the eager model's
detections bit for bit, and the ONNX file passes the check, where the two runtimes may only
decide differently between candidates tied within float rounding."""

import pytest
import torch
from deploy_helpers import DENSE_NAMES, as_tensor, dense_model, scene
from torch import nn
from torchvision.ops import batched_nms as tv_batched_nms
from torchvision.ops.boxes import _batched_nms_coordinate_trick, _batched_nms_vanilla

from detection import Predictor
from detection.deploy import compare_detections, export_checkpoint, load_exported
from detection.deploy.check import Decisions
from detection.deploy.export import check_image
from detection.deploy.graph import DeployableDetector, batched_nms
from detection.deploy.runtime import quiet_tracer
from detection.utils.checkpoint import model_checkpoint, save_atomic

GROUPS = 91  # label ids 0..90, as COCO's


def candidates(pairs: int, seed: int):
    """`pairs` pairs of boxes in random groups whose IoU is 0.5 within 1e-4, shuffled; 30% of
    the scores are exactly 1.0. Moved by torchvision's coordinate trick (offsets of up to
    90 x 481 px, where float32 keeps 1/256 px), many of those IoUs cross the threshold."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(pairs, 2, generator=g) * 400
    wh = torch.rand(pairs, 2, generator=g) * 60 + 20
    a = torch.cat([xy, xy + wh], 1)
    dx = wh[:, 0] / 3 * (1 + (torch.rand(pairs, generator=g) * 2 - 1) * 1e-4)  # IoU ~ 0.5
    b = a + torch.stack([dx, torch.zeros_like(dx), dx, torch.zeros_like(dx)], 1)
    scores = torch.cat([torch.rand(pairs, generator=g) * 0.5 + 0.5, torch.rand(pairs, generator=g)])
    scores[torch.rand(2 * pairs, generator=g) < 0.3] = 1.0
    labels = torch.randint(1, GROUPS, (pairs,), generator=g).repeat(2)
    perm = torch.randperm(2 * pairs, generator=g)
    return torch.cat([a, b])[perm], scores[perm], labels[perm]


class GraphNMS(nn.Module):
    def forward(self, boxes, scores, labels):
        return batched_nms(boxes, scores, labels, 0.5, GROUPS)


@pytest.fixture(scope="module")
def exported_nms(tmp_path_factory):
    """GraphNMS traced on 20 boxes: {format: callable (boxes, scores, labels) -> kept}."""
    folder = tmp_path_factory.mktemp("nms")
    example = candidates(10, 0)
    with torch.no_grad(), quiet_tracer():
        torch.onnx.export(
            GraphNMS(),
            example,
            str(folder / "nms.onnx"),
            dynamo=False,
            opset_version=17,
            input_names=["boxes", "scores", "labels"],
            dynamic_axes={"boxes": {0: "n"}, "scores": {0: "n"}, "labels": {0: "n"}},
        )
        torch.jit.trace(GraphNMS(), example).save(str(folder / "nms.pt"))
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "nms.onnx"), providers=["CPUExecutionProvider"])
    with quiet_tracer():
        scripted = torch.jit.load(str(folder / "nms.pt"))

    def onnx(boxes, scores, labels):
        feed = {"boxes": boxes.numpy(), "scores": scores.numpy(), "labels": labels.numpy()}
        return torch.from_numpy(session.run(None, feed)[0])

    return {"onnx": onnx, "torchscript": scripted}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("pairs", [300, 1500])  # 2400 coordinates: the trick; 12000: per class
def test_graph_nms_is_torchvisions(exported_nms, fmt, pairs):
    """The exported class-wise NMS keeps what torchvision's batched_nms keeps on the same
    boxes, below and above its switch (1000 boxes on CPU); TorchScript in the same order, ONNX
    best first with equal scores in index order."""
    boxes, scores, labels = candidates(pairs, pairs)
    expected = tv_batched_nms(boxes, scores, labels, 0.5)
    # the two ways differ on these boxes, so that following the wrong one fails the test
    trick = _batched_nms_coordinate_trick(boxes, scores, labels, 0.5)
    per_class = _batched_nms_vanilla(boxes, scores, labels, 0.5)
    assert set(trick.tolist()) != set(per_class.tolist())
    assert (scores[expected] == 1.0).sum() > 100  # equal scores: their order matters
    got = exported_nms[fmt](boxes, scores, labels)
    if fmt == "torchscript":
        assert torch.equal(got, expected)
    else:
        assert sorted(got.tolist()) == sorted(expected.tolist())
        assert torch.equal(scores[got], scores[expected])  # best first
        for score in scores[got].unique():  # equal scores in index order
            tied = got[scores[got] == score]
            assert torch.equal(tied, tied.sort().values)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """(checkpoint, the check's image, the reference's candidates on it)."""
    model = dense_model()
    path = tmp_path_factory.mktemp("dense") / "dense.pth"
    save_atomic(model_checkpoint(model.state_dict(), model.cfg, DENSE_NAMES), path)
    image, _ = check_image(None, None)
    detector = DeployableDetector(Predictor(dense_model()).model)
    return path, image, Decisions.of(detector, image)


def test_the_dense_model_is_dense(dense):
    """What the export tests below lean on: more than 1000 candidates and more of them at
    exactly 1.0 than the 100 detections the cut keeps."""
    _, _, decisions = dense
    scores = decisions.candidates["scores"]
    assert len(scores) > 1000
    assert (scores == 1.0).sum() > 5 * decisions.detections_per_image


def test_dense_torchscript_equals_eager_bit_for_bit(dense, tmp_path):
    """The traced graph runs the eager model's kernels (its memory format, torchvision's
    batched_nms scripted with its switch and its sort): the same detections, in the same
    order, to the bit, where the offset NMS of before kept other boxes at the cut."""
    checkpoint, image, _ = dense
    out = tmp_path / "dense.pt"
    report = export_checkpoint(checkpoint, out, format="torchscript")
    assert report.ok, str(report)
    comparison = report.comparison
    assert comparison.reference == comparison.exported == comparison.matched == 100
    assert comparison.max_box_diff == comparison.max_score_diff == 0.0
    reference = Predictor.from_checkpoint(checkpoint, ["test.precision=fp32"])
    other = scene(2)
    expected, got = reference(other), load_exported(out, "torchscript")(as_tensor(other))
    assert all(torch.equal(expected[k], got[k]) for k in ("boxes", "scores", "labels"))


def test_dense_onnx_passes_the_check(dense, tmp_path):
    """onnxruntime rounds differently, so among candidates tied at 1.0 it may keep others at
    the detections cut than PyTorch's sort does; the check accepts those and nothing else."""
    checkpoint, image, decisions = dense
    out = tmp_path / "dense.onnx"
    report = export_checkpoint(checkpoint, out, format="onnx")
    assert report.ok, str(report)
    assert report.comparison.reference == report.comparison.exported == 100
    reference = Predictor.from_checkpoint(checkpoint, ["test.precision=fp32"])(image)
    got = load_exported(out, "onnx")(image)
    comparison = compare_detections(reference, got, decisions=decisions)
    assert comparison.ok and comparison.unexplained == 0, str(comparison)
    strict = compare_detections(reference, got)
    if not strict.ok:  # only where it had to choose among exact ties
        assert comparison.flipped > 0
        assert got["scores"].min() == reference["scores"].min() == 1.0


def _run(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "scores": torch.tensor(scores),
        "labels": torch.tensor(labels),
    }


def test_the_check_explains_near_ties_and_nothing_else():
    """Two overlapping boxes of one class tied within the score bound: either run may keep
    either. A different box, a dropped detection or a box that is no candidate fails."""
    a, b, c = [0.0, 0.0, 100.0, 100.0], [30.0, 0.0, 130.0, 100.0], [300.0, 300.0, 350.0, 360.0]
    reference = _run([a, c], [0.99999994, 0.9], [1, 2])
    candidates = _run([a, b, c], [0.99999994, 0.99999994, 0.9], [1, 1, 2])
    decisions = Decisions(0.5, 100, 0.05, candidates)
    swapped = _run([b, c], [1.0, 0.9], [1, 2])  # IoU(a, b) = 0.54: b suppressed a
    assert not compare_detections(reference, swapped).ok
    comparison = compare_detections(reference, swapped, decisions=decisions)
    assert comparison.ok and comparison.flipped == 2, str(comparison)
    # not tied: 0.99 would have lost to a in either run
    assert not compare_detections(
        reference, _run([b, c], [0.99, 0.9], [1, 2]), decisions=decisions
    ).ok
    # no such candidate: the export made up a box
    moved = [35.0, 0.0, 135.0, 100.0]
    assert not compare_detections(
        reference, _run([moved, c], [1.0, 0.9], [1, 2]), decisions=decisions
    ).ok
    # a detection missing with nothing to have suppressed it
    assert not compare_detections(reference, _run([c], [0.9], [2]), decisions=decisions).ok
    # apart (IoU 0): a did not suppress b, so neither may be missing
    far = [200.0, 0.0, 260.0, 60.0]
    with_far = Decisions(
        0.5, 100, 0.05, _run([a, far, c], [0.99999994, 0.99999994, 0.9], [1, 1, 2])
    )
    assert not compare_detections(
        reference, _run([far, c], [1.0, 0.9], [1, 2]), decisions=with_far
    ).ok


def test_the_check_explains_ties_at_the_detections_cut():
    """With a cut of 2, candidates tied with the last kept one may take its place, unless NMS
    would have removed it (d overlaps a)."""
    a, b, c = [0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [100.0, 0.0, 110.0, 10.0]
    d = [1.0, 0.0, 11.0, 10.0]
    decisions = Decisions(0.5, 2, 0.05, _run([a, b, c, d], [1.0] * 4, [1] * 4))
    reference = _run([a, b], [1.0, 1.0], [1, 1])
    assert compare_detections(reference, _run([a, c], [1.0, 1.0], [1, 1]), decisions=decisions).ok
    assert not compare_detections(
        reference, _run([a, d], [1.0, 1.0], [1, 1]), decisions=decisions
    ).ok
    below = Decisions(0.5, 2, 0.05, _run([a, b, c], [1.0, 1.0, 0.9], [1, 1, 1]))
    assert not compare_detections(reference, _run([a, c], [1.0, 0.9], [1, 1]), decisions=below).ok
