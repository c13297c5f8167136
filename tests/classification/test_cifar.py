"""CIFAR-10's python batches: read as torchvision reads them, without executing anything."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torchvision
from classification_helpers import write_cifar_batches

from detection.classification.cifar import (
    UnsafePickleError,
    load_pickled_data,
    read_batch,
    read_cifar10,
)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_batches_read_as_torchvision_reads_them(tmp_path, monkeypatch, protocol):
    root = tmp_path / "cifar-10-batches-py"
    # str keys: torchvision reads "data", as the real (Python 2) files give it
    write_cifar_batches(root, protocol=protocol, keys=str)
    images, labels, names = read_cifar10(root, "train")
    test_images, test_labels, _ = read_cifar10(root, "test")
    # torchvision's reader (plain pickle.load) as the reference; its md5 check is for the
    # real files only
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a: True)
    for train, ours, our_labels in ((True, images, labels), (False, test_images, test_labels)):
        tv = torchvision.datasets.CIFAR10(tmp_path, train=train, download=False)
        assert ours.dtype == np.uint8 and ours.shape == tv.data.shape
        assert np.array_equal(ours, tv.data)  # N x 32 x 32 x 3 RGB
        assert our_labels.tolist() == list(tv.targets)
        assert names == tv.classes


def test_one_batch_layout(tmp_path):
    written = write_cifar_batches(tmp_path)
    images, labels = read_batch(tmp_path / "data_batch_3")
    data, expected = written["data_batch_3"]
    # a row holds the red plane, then green, then blue, each 32x32 row-major
    assert np.array_equal(images[:, :, :, 0].reshape(len(data), -1), data[:, :1024])
    assert np.array_equal(images[:, :, :, 2].reshape(len(data), -1), data[:, 2048:])
    assert np.array_equal(labels, expected)


class _Payload:
    """Unpickling calls `func(*args)`: what a hostile file does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _hostile_batches(marker):
    data = np.zeros((2, 3072), np.uint8)
    shell = _Payload(os.system, f"touch {marker}")
    python = _Payload(exec, f"open({str(marker)!r}, 'w').write('pwned')")
    opener = _Payload(open, str(marker), "w")
    return {
        "os.system in labels": {b"data": data, b"labels": shell},
        "exec as a key": {python: 1, b"data": data, b"labels": [0, 1]},
        "builtins.open": {b"data": data, b"labels": [0, 1], b"x": opener},
        "a bare reduce": shell,
    }


@pytest.mark.parametrize("case", list(_hostile_batches("m")))
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path, case, protocol):
    marker = tmp_path / "side_effect"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(_hostile_batches(marker)[case], protocol=protocol))
    with pytest.raises(UnsafePickleError, match="refused to unpickle .*Nothing was executed"):
        read_batch(path)
    assert not marker.exists()
    # the same file through plain pickle does run its payload: the test's payload is live
    if case == "builtins.open":
        pickle.loads(path.read_bytes())
        assert marker.exists()


def test_object_arrays_and_odd_contents_are_refused(tmp_path):
    path = tmp_path / "batch"
    objects = np.array([1, "a"], dtype=object)
    path.write_bytes(pickle.dumps({b"data": objects, b"labels": [0]}))
    with pytest.raises(UnsafePickleError, match="an array of Python objects is not CIFAR data"):
        load_pickled_data(path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match="rows have 100 values, CIFAR's have 3072"):
        read_batch(path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}))
    with pytest.raises(ValueError, match="integers in 0..9"):
        read_batch(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
        read_batch(path)


def test_missing_batches_say_what_the_folder_must_hold(tmp_path):
    write_cifar_batches(tmp_path)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(
        FileNotFoundError, match="no CIFAR-10 batch data_batch_4.*cifar-10-batches-py"
    ):
        read_cifar10(tmp_path, "train")
    assert len(read_cifar10(tmp_path, "test")[0]) == 12
