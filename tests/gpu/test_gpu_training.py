"""Training on CUDA: fp16 with a GradScaler whose state survives save and resume, an exact
resume with deterministic algorithms, and a real CUDA out-of-memory stopped with the trainer's
message. Skipped without CUDA (conftest)."""

import gc
import warnings

import pytest
import torch
from gpu_helpers import leave_only_checkpoint, load, train_on_cuda

from detection.benchmark.speed import synthetic_batch
from detection.config import load_config
from detection.engine.failures import TrainingError
from detection.engine.trainer import Trainer


def test_fp16_grad_scaler_state_survives_save_and_resume(tiny_config, tmp_path):
    path, out = tiny_config
    cfg = load_config(path, ["solver.amp=fp16", "solver.max_iter=4", "solver.checkpoint_period=2"])
    straight = train_on_cuda(cfg)
    assert straight.precision.name == "fp16" and straight.scaler is not None
    # fused SGD leaves its momentum garbage when the scaler skips the first step (optim.py)
    assert not straight.optimizer.defaults.get("fused")
    saved = load(out / "model_0000002.pth")
    scaler = saved["scaler"]
    fresh = torch.amp.GradScaler("cuda").state_dict()
    assert set(scaler) == set(fresh)
    # two steps move the state: the growth tracker counts them, or an overflow halved the scale
    assert (scaler["scale"], scaler["_growth_tracker"]) != (fresh["scale"], 0), scaler
    final = load(out / "model_final.pth")
    assert final["scaler"] == straight.scaler.state_dict()
    # master weights stay fp32 under fp16 autocast, and fp16 steps did change them
    weights = final["model"]
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert any(not torch.equal(saved["model"][k], weights[k]) for k in weights)

    # a new process's trainer (here: a new Trainer) resumes the scaler where it was
    resumed_dir = tmp_path / "resumed"
    leave_only_checkpoint(out, 2, resumed_dir)
    cfg.output_dir = str(resumed_dir)
    trainer = Trainer(cfg, device="cuda", resume=True)
    trainer.resume()
    assert trainer.iteration == 2
    assert trainer.scaler.state_dict() == scaler
    trainer.train()
    assert trainer.iteration == 4
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


@pytest.fixture
def deterministic():
    """torch's deterministic algorithms for one test; yields the warnings of operations that
    have none (warn_only: the test then names them instead of failing inside the model)."""
    autotune = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = autotune


def test_exact_resume_on_cuda_with_deterministic_algorithms(tiny_config, tmp_path, deterministic):
    path, out = tiny_config
    # RoIAlign: torchvision runs a deterministic implementation of it in deterministic mode
    # (its CUDA RoI max pooling accumulates its gradient with atomics, in no fixed order)
    overrides = ["solver.max_iter=4", "solver.checkpoint_period=2"]
    cfg = load_config(path, [*overrides, "model.roi_heads.pooler_type=roi_align"])
    train_on_cuda(cfg, autotune=False)
    cfg.output_dir = str(tmp_path / "resumed")
    leave_only_checkpoint(out, 2, tmp_path / "resumed")
    train_on_cuda(cfg, resume=True, autotune=False)

    nondeterministic = sorted(
        {str(w.message) for w in deterministic if "deterministic" in str(w.message)}
    )
    a, b = load(out / "model_final.pth"), load(tmp_path / "resumed/model_final.pth")
    assert a["iteration"] == b["iteration"] == 4
    start = load(out / "model_0000002.pth")["model"]
    assert any(not torch.equal(start[k], a["model"][k]) for k in start)
    differ = [k for k, v in a["model"].items() if not torch.equal(b["model"][k], v)]
    assert not differ, (
        f"{len(differ)} tensors differ after the resume, first {differ[:3]}; operations "
        f"without a deterministic CUDA implementation: {nondeterministic or 'none reported'}"
    )


def test_cuda_out_of_memory_stops_training_with_the_clear_message(tiny_config):
    path, _ = tiny_config
    # 800-pixel inputs: the backbone's first activations alone take hundreds of MB
    big = ["input.min_size_train=[800]", "input.max_size_train=1333", "solver.max_iter=3"]
    trainer = Trainer(load_config(path, big), device="cuda")
    # one small step first: cuBLAS and cuDNN make their handles (also for the autograd
    # thread) now, so that what runs out of memory below is the training step's own tensors
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    trainer.step(trainer.model, [synthetic_batch(1, (128, 128), "cuda")], params)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    hog = None
    try:
        free, _ = torch.cuda.mem_get_info()
        hog = torch.empty(free - 64 * 2**20, dtype=torch.uint8, device="cuda")  # 64 MiB left
        with pytest.raises(TrainingError) as caught:
            trainer.train()
        message = str(caught.value)
        assert isinstance(caught.value.__cause__, torch.OutOfMemoryError)
        assert message.startswith(
            "out of memory on cuda at iteration 2 with 2 images per process "
            "(solver.ims_per_batch=2), input images "
        ), message
        assert "resized to short side [800] (at most 1333)" in message
        assert "Raise solver.accumulate" in message and "CUDA out of memory" in message
    finally:
        del hog
        caught = None  # the traceback holds the step's tensors
        gc.collect()
        torch.cuda.empty_cache()
