"""RoI pooling split over threads (at inference, from PARALLEL_MIN_ROIS RoIs on) gives the
same output, bit for bit, as one call of torchvision's kernel."""

import pytest
import torch
from torchvision.ops import roi_align, roi_pool

from detection.modeling import poolers
from detection.modeling.poolers import PARALLEL_MIN_ROIS, RoIPooler

STRIDE = 16
RESOLUTION = 7


@pytest.fixture
def threads():
    """Set torch's thread count for the test; restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def count_pool_uses(monkeypatch, module, name: str) -> list[int]:
    """The worker counts of each call of `module.name` (a thread-pool getter), from now on."""
    calls = []
    original = getattr(module, name)

    def counting(workers):
        calls.append(workers)
        return original(workers)

    monkeypatch.setattr(module, name, counting)
    return calls


@pytest.fixture
def thread_pool_calls(monkeypatch):
    """Counts the pooler's uses of its thread pool at inference: proof of which path ran."""
    return count_pool_uses(monkeypatch, poolers, "_thread_pool")


def features_and_boxes(num_rois: int, channels_last: bool = False):
    """Two images' res4-like maps and `num_rois` boxes over both (ragged: 3/5 in the first)."""
    g = torch.Generator().manual_seed(num_rois)
    x = torch.randn(2, 8, 20, 24, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    boxes = []
    for count in (3 * num_rois // 5, num_rois - 3 * num_rois // 5):
        xy = torch.rand(count, 2, generator=g) * torch.tensor([330.0, 280.0])
        wh = 1 + torch.rand(count, 2, generator=g) * 120
        boxes.append(torch.cat([xy, xy + wh], 1))
    return x, boxes


def torchvision_direct(pooler_type: str, x: torch.Tensor, boxes: list[torch.Tensor]):
    rois = torch.cat(
        [torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)]
    )
    if pooler_type == "roi_pool":
        return roi_pool(x, rois, RESOLUTION, 1.0 / STRIDE)
    return roi_align(x, rois, RESOLUTION, 1.0 / STRIDE, 2, True)


@pytest.mark.parametrize("pooler_type", ["roi_align", "roi_pool"])
@pytest.mark.parametrize("num_rois", [200, PARALLEL_MIN_ROIS - 1], ids=["above", "below"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_threaded_pooling_is_bit_identical(
    pooler_type, num_rois, channels_last, threads, thread_pool_calls
):
    pooler = RoIPooler(
        pooler_type, RESOLUTION, [STRIDE], sampling_ratio=2, aligned=pooler_type == "roi_align"
    )
    x, boxes = features_and_boxes(num_rois, channels_last)
    expected = torchvision_direct(pooler_type, x.contiguous(), boxes)
    assert expected.shape == (num_rois, 8, RESOLUTION, RESOLUTION)
    assert expected.abs().sum() > 0  # the boxes cover the map: not all zeros
    threads(1)
    with torch.no_grad():
        one = pooler([x], boxes)
    assert thread_pool_calls == []
    threads(2)
    with torch.no_grad():
        two = pooler([x], boxes)
    # the path this case is about ran: split over 2 threads above the threshold, not below
    assert thread_pool_calls == ([2] if num_rois >= PARALLEL_MIN_ROIS else [])
    assert torch.equal(one, expected)
    assert torch.equal(two, expected)


def test_threaded_fpn_pooling_is_bit_identical(threads, thread_pool_calls):
    """Several levels: the RoIs of each level are pooled (threaded where that level has enough
    of them) and scattered back into the order of the boxes."""
    strides = [4, 8, 16, 32]
    pooler = RoIPooler("roi_align", RESOLUTION, strides, sampling_ratio=0, aligned=True)
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 8, 320 // s, 384 // s, generator=g) for s in strides]
    xy = torch.rand(300, 2, generator=g) * torch.tensor([300.0, 250.0])
    # sides 8..600 px, uniform in log scale: all four levels get RoIs, the smallest level more
    # than the threshold
    side = 2 ** (3 + 6.2 * torch.rand(300, 1, generator=g))
    wh = side * (0.7 + 0.6 * torch.rand(300, 2, generator=g))
    boxes = [torch.cat([xy, xy + wh], 1)[:170], torch.cat([xy, xy + wh], 1)[170:]]
    threads(1)
    with torch.no_grad():
        one = pooler(feats, boxes)
    threads(2)
    with torch.no_grad():
        two = pooler(feats, boxes)
    assert 2 in thread_pool_calls, "no level reached the threshold: the test is vacuous"
    # FPN eq. 1: k = floor(4 + log2(sqrt(area) / 224)), in 2..5
    area = (wh[:, 0] * wh[:, 1]).double()
    levels = (4 + torch.log2(area.sqrt() / 224)).floor().clamp(2, 5).long() - 2
    assert len(levels.unique()) == 4
    assert torch.equal(one, two)
    # and each RoI's row is torchvision's pooling of its own level
    rois = torch.cat([torch.full((300, 1), 0.0), torch.cat(boxes)], 1)
    rois[170:, 0] = 1
    for level, (f, s) in enumerate(zip(feats, strides, strict=True)):
        idx = torch.where(levels == level)[0]
        expected = roi_align(f, rois[idx], RESOLUTION, 1.0 / s, 0, True)
        assert torch.equal(two[idx], expected), f"level {level}"


@pytest.fixture
def training_pool_calls(monkeypatch):
    """Counts the training path's uses of its thread pool (parallel_roi.py)."""
    from detection.modeling import parallel_roi

    return count_pool_uses(monkeypatch, parallel_roi, "thread_pool")


@pytest.mark.parametrize("pooler_type", ["roi_align", "roi_pool"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_pooling_with_gradients_matches_torchvision(
    pooler_type, channels_last, threads, training_pool_calls
):
    """Training (features that need gradients) with 2 threads: the RoIs' forward and the
    channels' backward are split over the threads, and the output and the gradient are
    torchvision's single-threaded ones, bit for bit (200 RoIs)."""
    pooler = RoIPooler(
        pooler_type, RESOLUTION, [STRIDE], sampling_ratio=2, aligned=pooler_type == "roi_align"
    )
    x, boxes = features_and_boxes(200, channels_last)
    x.requires_grad_(True)
    ref = x.detach().clone().contiguous().requires_grad_(True)
    threads(2)
    out = pooler([x], boxes)
    assert training_pool_calls == [2]  # the forward's RoI chunks
    threads(1)  # torchvision's kernels run on one thread whatever the setting
    expected = torchvision_direct(pooler_type, ref, boxes)
    assert torch.equal(out, expected)
    weights = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1))
    threads(2)
    (out * weights).sum().backward()
    assert training_pool_calls == [2, 2]  # the backward's channel slices
    (expected * weights).sum().backward()
    assert x.grad.abs().sum() > 0
    assert torch.equal(x.grad, ref.grad)


def test_fpn_pooling_gradients_equal_with_one_and_two_threads(threads, training_pool_calls):
    """The detector's FPN pooler in training: the same gradients with 1 and 2 threads."""
    strides = [4, 8, 16, 32]
    pooler = RoIPooler("roi_align", RESOLUTION, strides, sampling_ratio=2)
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 16, 320 // s, 384 // s, generator=g) for s in strides]
    xy = torch.rand(400, 2, generator=g) * torch.tensor([300.0, 250.0])
    wh = 2 ** (3 + 6.2 * torch.rand(400, 1, generator=g)) * (
        0.7 + 0.6 * torch.rand(400, 2, generator=g)
    )
    boxes = [torch.cat([xy, xy + wh], 1)[:250], torch.cat([xy, xy + wh], 1)[250:]]
    weights = torch.randn(400, 16, RESOLUTION, RESOLUTION, generator=g)
    grads = []
    for n in (1, 2):
        threads(n)
        leaves = [f.clone().requires_grad_(True) for f in feats]
        (pooler(leaves, boxes) * weights).sum().backward()
        grads.append([f.grad for f in leaves])
    assert training_pool_calls, "no level reached the threshold: the test is vacuous"
    for one, two in zip(*grads, strict=True):
        assert torch.equal(one, two)
