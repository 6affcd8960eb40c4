"""The restricted unpickler: data comes back, anything that would run code is refused by name."""
import collections
import io
import pickle

import numpy as np
import pytest

from pipeline.io import safe_pickle


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_arrays_scalars_and_containers_come_back(protocol):
    data = {"blobs": collections.OrderedDict(w=np.arange(6, dtype=np.float32).reshape(2, 3), i=np.int64(3)),
            "shape": (2, 3), "tags": {"a", "b"}, "raw": b"\x00\xff", "lr": 0.1, "fortran": np.asfortranarray(np.eye(3))}
    back = safe_pickle.load_restricted(io.BytesIO(pickle.dumps(data, protocol=protocol)))
    assert back.keys() == data.keys() and isinstance(back["blobs"], collections.OrderedDict)
    np.testing.assert_array_equal(back["blobs"]["w"], data["blobs"]["w"])
    np.testing.assert_array_equal(back["fortran"], np.eye(3))
    assert back["blobs"]["i"] == 3 and back["tags"] == {"a", "b"} and back["raw"] == b"\x00\xff"


def test_python2_pickle_with_numpy_core_names():
    # {"w": np.arange(3, dtype=float32)} as Python 2 pickles it: numpy.core names, a str buffer.
    buffer = np.arange(3, dtype="<f4").tobytes()
    py2 = (b"\x80\x02}q\x00U\x01wq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85q\x04"
           b"U\x01b\x87q\x05Rq\x06(K\x01K\x03\x85q\x07cnumpy\ndtype\nq\x08U\x02f4K\x00K\x01\x87Rq\t(K\x03U\x01<NNN"
           b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x0c" + buffer + b"tbs.")
    np.testing.assert_array_equal(safe_pickle.load_restricted(io.BytesIO(py2))["w"], np.arange(3, dtype=np.float32))


class _CreatesFile:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_reduce_that_would_create_a_file_is_refused(tmp_path):
    marker = tmp_path / "created"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"blobs": {"w": _CreatesFile(marker)}}, protocol=2))
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"refusing to load io\.open"):
        safe_pickle.load_restricted(path)
    assert not marker.exists()


@pytest.mark.parametrize("obj, name", [(pickle.loads, "_pickle.loads"), (np.load, "numpy.load"),
                                       (collections.Counter, "collections.Counter"), (eval, "builtins.eval")])
def test_other_globals_are_refused_by_name(obj, name):
    with pytest.raises(pickle.UnpicklingError, match=f"refusing to load {name}"):
        safe_pickle.load_restricted(io.BytesIO(pickle.dumps(obj)))


@pytest.mark.parametrize("content", ["garbage", "creates a file"])
def test_teacher_weights_and_checkpoints_refuse_without_running_code_or_advising_to(tmp_path, content):
    """A teacher weights file or a student checkpoint that is not data: one message, the file's
    code never runs, and torch's advice to retry with weights-only loading turned off is not passed on."""
    import torch

    from student.checkpoints import CheckpointError, read_checkpoint
    from teachers.base import TeacherWeightsError, load_teacher

    marker = tmp_path / "created"
    path = tmp_path / "w.pt"
    if content == "garbage":
        path.write_bytes(bytes(range(7, 107)))
        want = r"not a torch weights file, or a damaged one \(Unsupported operand"
    else:
        torch.save({"state_dict": _CreatesFile(marker)}, path)
        want = r"it asks for (io|_io|builtins)\.open"
    for load, error in ((read_checkpoint, CheckpointError), (load_teacher, TeacherWeightsError)):
        with pytest.raises(error, match=want) as e:
            load(path)
        assert "weights_only" not in str(e.value) and str(path) in str(e.value)
    assert not marker.exists()
