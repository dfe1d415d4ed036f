"""What every benchmark shares: the machine it ran on, tables, JSON files, timers."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine(device: torch.device) -> dict[str, Any]:
    """The date, CPU, thread count, GPU (if used), and library versions of this run."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"date": _dt.date.today().isoformat(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def describe(info: dict[str, Any]) -> str:
    """One line naming the machine, e.g. for a table's caption."""
    where = info.get("gpu") or f"{info['cpu']} ({info['torch_threads']} threads)"
    return f"{info['date']}, {where}, torch {info['torch']}"


@contextmanager
def timer(device: torch.device):
    """Wall-clock seconds of the block, synchronising CUDA on entry and exit:
    ``with timer(dev) as t: ...; t()`` -> seconds."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, stop = time.perf_counter(), [None]
    yield lambda: (stop[0] if stop[0] is not None else time.perf_counter()) - start
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    stop[0] = time.perf_counter()


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned columns; floats keep the format they were given."""
    cells = [[str(c) for c in columns]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = [title, "  ".join(c.rjust(w) for c, w in zip(cells[0], widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells[1:]]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.2f}"
    return "-" if v is None else str(v)


def write_json(name: str, payload: dict[str, Any], out_dir: Path | None = None) -> Path:
    """Write `payload` to out_dir/name.json (default bench/results/) atomically; return the path."""
    out_dir = Path(out_dir) if out_dir is not None else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)
    return path


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"cannot write {type(v).__name__} as JSON")
