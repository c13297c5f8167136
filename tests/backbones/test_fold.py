"""fold_frozen_batchnorm: the folded network computes the same features."""

import pytest
import torch
from torch import nn

from backbones import FrozenBatchNorm2d, build_backbone
from backbones.norm import fold_frozen_batchnorm


def randomize_frozen_bn(model: nn.Module) -> int:
    count = 0
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.2)
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            count += 1
    return count


@pytest.mark.parametrize(
    "name,kwargs",
    [("resnet50", {}), ("resnet18", {"shortcut": "C"}), ("vgg16_bn", {})],
)
def test_folded_features_equal(name, kwargs):
    torch.manual_seed(0)
    model = build_backbone(name, norm="FrozenBN", out_features=None, **kwargs).eval()
    norms = randomize_frozen_bn(model)
    assert norms > 0
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        before = model(x)
        assert fold_frozen_batchnorm(model) == norms
        after = model(x)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    for key in before:
        scale = before[key].abs().max().item()
        torch.testing.assert_close(after[key], before[key], atol=1e-5 * scale, rtol=1e-4)


def test_trainable_norms_are_left_alone():
    model = build_backbone("resnet18", norm="GN")
    assert fold_frozen_batchnorm(model) == 0
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) > 0


def _relative_errors(got: dict, ref: dict) -> float:
    """The largest error of any tensor of `got`, relative to the largest entry of its reference."""
    return max(((got[k].double() - ref[k]).abs().max() / ref[k].abs().max()).item() for k in ref)


@pytest.mark.parametrize(
    "name,kwargs,freeze_at",
    [("resnet50", {}, 2), ("resnet18", {"shortcut": "C"}, 0), ("resnet34", {"shortcut": "A"}, 1)],
)
def test_training_forward_folds_frozen_bn_with_the_same_gradients(name, kwargs, freeze_at):
    """In training, each conv + FrozenBN runs as one conv (conv_norm): the same features and
    parameter gradients as the unfolded arithmetic (which eval mode keeps), as close to a float64
    reference as the unfolded float32 ones, with every parameter and buffer (hence every
    checkpoint) unchanged."""
    from backbones.norm import freeze

    torch.manual_seed(0)
    model = build_backbone(name, norm="FrozenBN", out_features=None, **kwargs)
    randomize_frozen_bn(model)
    if freeze_at:
        freeze(model.stem)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 64, 96)
    weights = {k: torch.randn_like(v) for k, v in model.eval()(x).items()}

    def features_and_grads(training: bool, dtype=torch.float32):
        model.to(dtype).train(training).zero_grad()
        out = model(x.to(dtype))
        sum((out[k] * weights[k].to(dtype)).sum() for k in out).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return {k: v.detach().clone() for k, v in out.items()}, grads

    calls = []
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.register_forward_hook(lambda *a: calls.append(1))
    ref_out, ref_grads = features_and_grads(False, torch.float64)
    plain_out, plain_grads = features_and_grads(False)
    norms, calls[:] = len(calls) // 2, []
    folded_out, folded_grads = features_and_grads(True)
    assert norms > 0 and calls == []  # in training no FrozenBN module ran: all were folded
    assert folded_grads.keys() == ref_grads.keys() and len(ref_grads) > 10
    assert ("stem.conv1.weight" in ref_grads) == (not freeze_at)
    # with random statistics, float32's rounding grows with depth (unfolded: up to 3e-3 of the
    # largest gradient for ResNet-18 C, folded: 2e-6); the folded arithmetic is never worse
    for got, ref, plain in (
        (folded_out, ref_out, plain_out),
        (folded_grads, ref_grads, plain_grads),
    ):
        assert _relative_errors(got, ref) <= max(2 * _relative_errors(plain, ref), 1e-5)
    after = model.float().state_dict()
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], state[k]) for k in state)


def test_conv_norm_folds_only_a_frozen_bn_after_a_bias_free_conv():
    from backbones.norm import conv_norm

    torch.manual_seed(0)
    conv, x = nn.Conv2d(4, 6, 3, padding=1, bias=False), torch.randn(1, 4, 8, 8)
    frozen = FrozenBatchNorm2d(6)
    randomize_frozen_bn(frozen)
    calls = []
    frozen.register_forward_hook(lambda *a: calls.append(1))
    folded = conv_norm(conv, frozen, x, fold=True)
    assert calls == []  # one convolution; the norm module never ran
    torch.testing.assert_close(folded, frozen(conv(x)), atol=1e-5, rtol=1e-5)
    assert len(calls) == 1
    bn = nn.BatchNorm2d(6).eval()
    assert torch.equal(conv_norm(conv, bn, x, fold=True), bn(conv(x)))  # trainable: untouched
    assert torch.equal(conv_norm(conv, frozen, x, fold=False), frozen(conv(x)))
