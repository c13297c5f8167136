"""Training a classifier: exact resume, the schedule, metrics and outputs, the tool's exits, and
the training core's checks: a non-finite loss or weight, ranks that hold different weights."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from classification_helpers import write_cifar_batches
from helpers import ROOT, run_tool, torchrun

from detection.classification import ClassifierTrainer, load_classifier_config, train_classifier
from detection.classification.engine import resolve_schedule
from detection.classification.evaluate import Normalizer, evaluate
from detection.cli import train_classifier as tool
from detection.config import ConfigError


def _status(argv):
    """The tool's exit status, whether it returns it or exits with it (argparse, config)."""
    try:
        return tool.main(argv)
    except SystemExit as e:
        return e.code


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_resume_continues_exactly(tiny_classifier, tmp_path):
    full = load_classifier_config(tiny_classifier(name="cifar_resnet20", shortcut="A", out="a"))
    train_classifier(full)
    # a run killed after its checkpoint at iteration 2 of 4: only that checkpoint is left
    resumed = load_classifier_config(tiny_classifier(name="cifar_resnet20", shortcut="A", out="b"))
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "model_0000002.pth", tmp_path / "b")
    (tmp_path / "b" / "last_checkpoint").write_text("model_0000002.pth\n")
    trainer = ClassifierTrainer(resumed)
    trainer.resume()
    assert trainer.iteration == 2
    trainer.train()
    a, b = (
        _weights(tmp_path / "a" / "model_final.pth"),
        _weights(tmp_path / "b" / "model_final.pth"),
    )
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    records = [json.loads(x) for x in open(tmp_path / "b" / "metrics.jsonl")]
    assert [r["iteration"] for r in records] == [3, 4]
    losses = {
        r["iteration"]: r["loss"] for r in map(json.loads, open(tmp_path / "a/metrics.jsonl"))
    }
    assert [r["loss"] for r in records] == [losses[3], losses[4]]


def test_resume_refuses_another_model_and_warns_of_another_schedule(tiny_classifier):
    first = load_classifier_config(tiny_classifier(iters=2))
    train_classifier(first)
    other = load_classifier_config(tiny_classifier(iters=2), ["model.shortcut=A"])
    with pytest.raises(ConfigError, match="model.shortcut: 'B' -> 'A'"):
        ClassifierTrainer(other).resume()
    longer = ClassifierTrainer(load_classifier_config(tiny_classifier(iters=3)))
    with pytest.warns(UserWarning, match="solver.max_iter: 2 -> 3"):
        longer.resume()
    assert longer.iteration == 2


def test_schedule_epochs_and_linear_scaling(tiny_classifier):
    cfg = load_classifier_config(
        tiny_classifier(),
        ["solver.max_iter=null", "solver.max_epochs=3", "solver.steps=[1, 2.5]"],
    )
    schedule = resolve_schedule(cfg.solver, 18)  # 18 images / 4 per batch: 4 per epoch
    assert (schedule.iters_per_epoch, schedule.max_iter, schedule.steps) == (4, 12, [4, 10])
    trainer = ClassifierTrainer(cfg)
    lrs = []
    for _ in range(12):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step()
        trainer.scheduler.step()
    lr = 0.05 * 4 / 256  # base_lr at reference_batch 256, scaled to 4 images
    expected = [lr] * 4 + [lr * 0.1] * 6 + [lr * 0.01] * 2
    assert lrs == pytest.approx(expected)


def test_outputs_metrics_and_validation(tiny_classifier):
    cfg = load_classifier_config(
        tiny_classifier(iters=3), ["test.eval_period=2", "input.ten_crop=true"]
    )
    result = train_classifier(cfg)
    out = cfg.output_dir
    records = [json.loads(x) for x in open(out + "/metrics.jsonl")]
    train = [r for r in records if "train_err" in r]
    val = [r for r in records if "val/top1_err" in r]
    assert [r["iteration"] for r in train] == [1, 2, 3] and [r["iteration"] for r in val] == [2, 3]
    assert all(0 <= r["train_err"] <= 100 and r["loss"] > 0 for r in train)
    assert json.load(open(out + "/metrics.json")) == result
    assert result["val"]["images"] == 6 and "top5_err" not in result["val"]  # 3 classes
    ckpt = torch.load(out + "/model_final.pth", weights_only=True)
    assert ckpt["class_names"] == ["cat", "dog", "fox"] and ckpt["arch"] == "resnet18"
    assert ckpt["config"]["model"]["name"] == "resnet18" and ckpt["iteration"] == 3
    assert (open(out + "/last_checkpoint").read().strip()) == "model_final.pth"
    # the reported error is what the saved weights give on the ten crops
    trainer = ClassifierTrainer(cfg)
    trainer.model.load_state_dict(ckpt["model"])
    again = trainer.validate()
    assert again == pytest.approx(result["val"])
    normalize = Normalizer(cfg.input.pixel_mean, cfg.input.pixel_std)
    wrong = 0
    with torch.no_grad():
        trainer.model.eval()
        for i in range(len(trainer.val_set)):
            crops, label = trainer.val_set[i]
            assert crops.shape == (10, 3, 32, 32)
            probs = trainer.model(normalize(crops)).softmax(1).mean(0)
            wrong += int(probs.argmax()) != label
    assert again["top1_err"] == pytest.approx(100 * wrong / 6)
    top = evaluate(
        trainer.model,
        [(crops[None], torch.tensor([label]))],
        normalize,
        device="cpu",
        precision="fp32",
    )
    assert top["images"] == 1


def test_cifar_batches_through_the_tool(tmp_path, capsys):
    root = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(root, per_batch=8)
    out = tmp_path / "cifar"
    status = tool.main(
        [
            "--config",
            "configs/classification/cifar10_resnet20.yaml",
            f"data.root={root}",
            f"output_dir={out}",
            "data.num_workers=0",
            "solver.ims_per_batch=8",
            "solver.max_iter=2",
            "solver.steps=[1]",
            "test.ims_per_batch=8",
        ]
    )
    assert status == 0
    result = json.load(open(out / "metrics.json"))
    assert result["classes"] == 10 and result["val"]["images"] == 8
    assert "top5_err" in result["val"]
    assert "top-1 error" in capsys.readouterr().out


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.root={missing}"], "does not exist"),
        (["data.train_split=nope"], "image folder not found"),
        (["model.name=resnet19"], "did you mean resnet18"),
        (["solver.max_epochs=3"], "exactly one of solver.max_epochs and solver.max_iter"),
        (["model.num_classes=7"], "model.num_classes=7 but the training set has 3"),
        (["input.train_scale=[40, 32]"], "input.train_scale must be"),
        (["model.weights=/nowhere/w.pth"], "weights file not found"),
        (["data.dataset=cifar10"], "no CIFAR-10 batch"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    tiny_classifier, tmp_path, capsys, overrides, message
):
    config = tiny_classifier(out="never")
    overrides = [o.format(missing=tmp_path / "missing") for o in overrides]
    assert _status(["--config", str(config), *overrides]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_empty_class_folder_exits_2(tiny_classifier, image_folder, tmp_path, capsys):
    (image_folder / "train" / "dog").joinpath("notes.txt").write_text("x")
    for f in (image_folder / "train" / "dog").glob("*.png"):
        f.unlink()
    assert _status(["--config", str(tiny_classifier(out="never"))]) == 2
    assert "has no images" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_non_finite_loss_stops_before_any_update(tiny_classifier, tmp_path):
    """The training core's loss check, as the detection trainer's: a NaN loss raises before its
    backward pass and its update, and nothing is written."""
    trainer = ClassifierTrainer(load_classifier_config(tiny_classifier()))
    with torch.no_grad():
        trainer.model.fc.bias.fill_(float("nan"))
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}
    with pytest.raises(FloatingPointError, match=r"iteration 1: loss=nan; no update was applied"):
        trainer.train()
    for k, v in trainer.model.named_parameters():
        # bit for bit, the injected NaNs included (NaN != NaN for torch.equal)
        torch.testing.assert_close(
            v, before[k], rtol=0, atol=0, equal_nan=True, msg=lambda m, k=k: f"{k}: {m}"
        )
    assert all(p.grad is None for p in trainer.model.parameters()), "a backward pass ran"
    assert not (tmp_path / "out" / "last_checkpoint").exists()


def test_non_finite_weights_are_not_saved(tiny_classifier, tmp_path):
    """A weight that is not finite when a checkpoint is due stops the run; the last good
    checkpoint stays the one the pointer names."""
    cfg = load_classifier_config(tiny_classifier(), ["solver.checkpoint_period=1"])
    trainer = ClassifierTrainer(cfg)
    save = trainer.save

    def save_after_a_blow_up(name, **kwargs):
        if trainer.iteration == 2:
            with torch.no_grad():
                trainer.model.fc.weight[0, 0] = float("inf")
        return save(name, **kwargs)

    trainer.save = save_after_a_blow_up
    with pytest.raises(FloatingPointError) as e:
        trainer.train()
    out = tmp_path / "out"
    assert str(e.value).startswith(
        "non-finite weights at iteration 2 (fc.weight); not saving model_0000002.pth. "
        f"The last good checkpoint {out / 'model_0000001.pth'} is intact."
    ), e.value
    assert (out / "last_checkpoint").read_text().strip() == "model_0000001.pth"
    assert not (out / "model_0000002.pth").exists()


# the classifier's command, where rank 1 moves one weight by one ulp just before the checkpoint
# of iteration 2: DDP never re-synchronises parameters, so the ranks stay apart unless checked
PERTURB_RANK_1 = """
import sys

import torch

from detection.classification.engine import ClassifierTrainer
from detection.cli.train_classifier import main

save = ClassifierTrainer.save


def perturbed_save(self, name, **kwargs):
    if self.info.rank == 1 and self.iteration == 2:
        with torch.no_grad():
            p = self.model.fc.bias
            p.view(-1)[0] = torch.nextafter(p.view(-1)[0], torch.tensor(1e9))
    return save(self, name, **kwargs)


ClassifierTrainer.save = perturbed_save
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # one torchrun launch of 2 processes: 20-40 s on 2 busy cores
def test_ranks_with_different_weights_stop_the_run(tiny_classifier, tmp_path):
    """Before every save the ranks check that they hold the same weights, as the detection
    trainer's do: a diverged rank stops the run, naming the parameter, before anything is
    written."""
    script = tmp_path / "perturb_rank_1.py"
    script.write_text(PERTURB_RANK_1)
    config = tiny_classifier(out="ddp")
    r = run_tool(
        torchrun(script, "--config", config, "--device", "cpu"),
        env_extra={"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
        check=False,
    )
    assert r.returncode != 0
    assert (
        "training stopped: the processes hold different weights at iteration 2: "
        "'fc.bias' (3,) on rank(s) [1] differs from rank 0's (1 of "
    ) in r.stderr, r.stderr[-3000:]
    assert "Not saving model_0000002.pth." in r.stderr
    out = tmp_path / "ddp"
    assert not list(out.glob("model_*.pth")) and not (out / "last_checkpoint").exists()
