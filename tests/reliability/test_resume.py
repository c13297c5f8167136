"""Resume: no checkpoint starts fresh and says so; another model is refused with the differing
keys; a changed schedule warns; a pointer to a missing or foreign file is a clear error."""

import pytest

from detection.config import ConfigError, load_config
from detection.engine.trainer import Trainer, train


def test_resume_without_checkpoint_starts_fresh(tiny_config, capsys):
    path, out = tiny_config
    train(load_config(path, ["solver.max_iter=1"]), resume=True)
    assert "--resume: no checkpoint in" in capsys.readouterr().err


def test_resume_refuses_another_model_and_warns_on_schedule(tiny_config):
    path, out = tiny_config
    train(load_config(path, ["solver.max_iter=2"]))
    with pytest.raises(ConfigError, match=r"model.backbone.name: 'resnet18' -> 'resnet34'"):
        Trainer(load_config(path, ["model.backbone.name=resnet34"])).resume()
    trainer = Trainer(load_config(path, ["solver.max_iter=3"]))
    with pytest.warns(UserWarning, match="solver.max_iter: 2 -> 3"):
        trainer.resume()
    assert trainer.iteration == 2


def test_resume_pointer_to_missing_or_foreign_file(tiny_config):
    path, out = tiny_config
    train(load_config(path, ["solver.max_iter=1"]))
    trainer = Trainer(load_config(path, ["solver.max_iter=2"]))
    (out / "last_checkpoint").write_text("model_0000999.pth\n")
    with pytest.raises(FileNotFoundError, match="names model_0000999.pth, which does not exist"):
        trainer.resume()
    (out / "model_0000999.pth").write_bytes(b"PK\x03\x04 a torn zip, not a checkpoint")
    with pytest.raises(ValueError, match="model_0000999.pth: cannot be read as a checkpoint"):
        trainer.resume()
