"""Property tests (hypothesis) of the training-target code: the IoU matcher, match_targets and
the balanced sampler. (Box coding's properties are in tests/reliability/test_fuzz.py.)"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou

from detection.modeling.matcher import IGNORE, NEGATIVE, Matcher, match_targets
from detection.modeling.sampler import sample_balanced

# a coarse grid of IoUs: ties between predictions and IoUs equal to a threshold are common
GRID = [0.0, 0.1, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0]
iou_value = st.sampled_from(GRID) | st.floats(0, 1, width=32)


@st.composite
def iou_matrices(draw):
    num_gt, num_pred = draw(st.integers(1, 5)), draw(st.integers(1, 12))
    values = draw(st.lists(iou_value, min_size=num_gt * num_pred, max_size=num_gt * num_pred))
    return torch.tensor(values, dtype=torch.float32).view(num_gt, num_pred)


@st.composite
def thresholds(draw):
    a, b = draw(iou_value), draw(iou_value)
    return min(a, b), max(a, b)


def expected_without_low_quality(iou, low, high):
    """What the thresholds alone give: a best ground truth, IGNORE or NEGATIVE."""
    best = iou.max(dim=0).values
    return best, torch.where(
        best >= high,
        torch.full_like(best, 0, dtype=torch.int64),  # a best ground truth: checked apart
        torch.where(best >= low, IGNORE, NEGATIVE),
    )


@settings(max_examples=300, deadline=None)
@given(iou=iou_matrices(), lh=thresholds())
def test_matcher_respects_the_thresholds(iou, lh):
    low, high = lh
    matches = Matcher(low, high)(iou.clone())
    assert matches.shape == (iou.shape[1],) and matches.dtype == torch.int64
    best, expected = expected_without_low_quality(iou, low, high)
    matched = matches >= 0
    assert torch.equal(matched, best >= high)
    assert torch.equal(matches[~matched], expected[~matched])
    assert (matches[matched] < iou.shape[0]).all()
    # a matched prediction is matched to a ground truth it overlaps most
    cols = torch.where(matched)[0]
    assert torch.equal(iou[matches[cols], cols], best[cols])


@settings(max_examples=300, deadline=None)
@given(iou=iou_matrices(), lh=thresholds())
def test_matcher_low_quality_matches_keep_every_ground_truths_best(iou, lh):
    low, high = lh
    matches = Matcher(low, high, allow_low_quality_matches=True)(iou.clone())
    assert matches.shape == (iou.shape[1],) and matches.dtype == torch.int64
    assert ((matches >= 0) | (matches == IGNORE) | (matches == NEGATIVE)).all()
    assert (matches < iou.shape[0]).all()
    best, expected = expected_without_low_quality(iou, low, high)
    best_per_gt = iou.max(dim=1).values
    ties = (iou == best_per_gt[:, None]).any(dim=0)  # predictions some gt overlaps most
    for g in range(iou.shape[0]):
        if best_per_gt[g] > 0:
            tops = torch.where(iou[g] == best_per_gt[g])[0]
            assert (matches[tops] >= 0).all(), f"ground truth {g} lost its best predictions"
    # those predictions are matched to their own best ground truth, even under the thresholds
    cols = torch.where(ties | (best >= high))[0]
    assert (matches[cols] >= 0).all()
    assert torch.equal(iou[matches[cols], cols], best[cols])
    # the others are as the thresholds alone make them
    rest = ~ties & (best < high)
    assert torch.equal(matches[rest], expected[rest])


def test_matcher_refuses_crossed_thresholds():
    with pytest.raises(ValueError, match="low <= high"):
        Matcher(0.7, 0.3)


@st.composite
def pixel_boxes(draw, min_size=0, max_size=20):
    k = draw(st.integers(min_size, max_size))
    corner = st.tuples(st.integers(0, 150), st.integers(0, 150))
    side = st.tuples(st.integers(1, 60), st.integers(1, 60))
    rows = [
        (x, y, x + w, y + h)
        for (x, y), (w, h) in draw(st.lists(st.tuples(corner, side), min_size=k, max_size=k))
    ]
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


@settings(max_examples=200, deadline=None)
@given(
    gt=pixel_boxes(max_size=5),
    proposals=pixel_boxes(min_size=1),
    rpn=st.booleans(),
    data=st.data(),
)
def test_match_targets_labels_and_boxes(gt, proposals, rpn, data):
    """match_targets as the RPN (low-quality matches, objectness) and the RoI heads (one
    threshold, classes) call it. Labels are a ground truth's class, 0 or -1. With the ground
    truth appended to the predictions (as the RoI heads do), every ground truth has a positive
    with its own box and class."""
    matcher = Matcher(0.3, 0.7, allow_low_quality_matches=True) if rpn else Matcher(0.5, 0.5)
    classes = data.draw(st.lists(st.integers(1, 80), min_size=len(gt), max_size=len(gt)))
    gt_labels = None if rpn else torch.tensor(classes, dtype=torch.int64)
    predictions = torch.cat([proposals, gt])
    labels, matched = match_targets(matcher, gt, predictions, gt_labels)
    assert labels.shape == (len(predictions),) and labels.dtype == torch.int64
    assert matched.shape == predictions.shape
    if len(gt) == 0:
        assert (labels == 0).all() and (matched == 0).all()
        return
    allowed = {-1, 0, *(classes if not rpn else [1])}
    assert set(labels.tolist()) <= allowed
    iou = box_iou(gt, predictions)
    best = iou.max(dim=0).values
    positive = labels >= 1
    # a positive's box is a ground truth it overlaps most
    iou_with_matched = box_iou(matched, predictions).diagonal()
    assert torch.equal(iou_with_matched[positive], best[positive])
    if not rpn:
        assert torch.equal(positive, best >= 0.5)
        assert not (labels == -1).any()  # low == high: no band to ignore
    # every appended ground truth: positive, of a class of a ground truth with its box
    for i, box in enumerate(gt):
        j = len(proposals) + i
        assert labels[j] >= 1 and torch.equal(matched[j], box)
        same_box = (gt == box).all(dim=1)
        assert rpn or labels[j] in gt_labels[same_box]


labels_strategy = st.lists(st.sampled_from([-1, 0, 0, 1, 3]), max_size=300)


@settings(max_examples=300, deadline=None)
@given(
    labels=labels_strategy,
    batch_size=st.integers(0, 256),
    positive_fraction=st.floats(0, 1),
    as_float=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_sampler_invariants(labels, batch_size, positive_fraction, as_float, seed):
    # class indices, or float labels (1.0 / 0.0 / -1.0)
    labels = torch.tensor(labels, dtype=torch.float32 if as_float else torch.int64)
    torch.manual_seed(seed)
    pos, neg = sample_balanced(labels, batch_size, positive_fraction)
    assert pos.dtype == neg.dtype == torch.int64
    num_pos = int((labels >= 1).sum())
    num_neg = int((labels == 0).sum())
    cap = int(batch_size * positive_fraction)
    # as many positives as the fraction allows, negatives fill the rest of the batch
    assert len(pos) == min(num_pos, cap) <= positive_fraction * batch_size
    assert len(neg) == min(num_neg, batch_size - len(pos))
    assert len(pos) + len(neg) <= batch_size
    # sampled from the right candidates (never an ignored -1), each at most once
    assert (labels[pos] >= 1).all() and (labels[neg] == 0).all()
    assert len(set(pos.tolist())) == len(pos) and len(set(neg.tolist())) == len(neg)


def test_sampler_draws_random_subsets():
    labels = torch.tensor([1] * 100 + [0] * 100)
    torch.manual_seed(0)
    draws = [sample_balanced(labels, 20, 0.5) for _ in range(3)]
    pos_sets = {tuple(sorted(p.tolist())) for p, _ in draws}
    neg_sets = {tuple(sorted(n.tolist())) for _, n in draws}
    assert len(pos_sets) == len(neg_sets) == 3, "the same samples every time: not random"
    # and not biased to the front: over many draws, every candidate gets picked
    picked = torch.zeros(200, dtype=torch.bool)
    for _ in range(200):
        p, n = sample_balanced(labels, 20, 0.5)
        picked[p] = True
        picked[n] = True
    assert picked.all()
