"""The benchmark suite (`python -m bench`): every benchmark runs in the smoke profile and writes
its JSON; the pieces that decide its figures are checked on their own."""
import json

import pytest
import torch

from bench import __main__ as cli
from bench import common, readme, toy
from course_lib import zoo
from course_lib.profiles import get_profile

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def tmp_data(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    return tmp_path


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Every default benchmark run once in the smoke profile: (results folder, printed text)."""
    import contextlib
    import io
    root = tmp_path_factory.mktemp("bench")
    out, printed = root / "results", io.StringIO()
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("COURSE_DATA", str(root / "data"))
        mp.setenv("COURSE_OFFLINE", "1")
        torch.set_num_threads(1)
        try:
            assert cli.main(["toy", "vae", "mnist", "throughput", "--profile", "smoke", "--out", str(out)]) == 0
        finally:
            torch.set_num_threads(threads)
    return out, printed.getvalue()


def test_every_benchmark_runs_in_smoke_and_writes_its_json(smoke_run):
    out, printed = smoke_run
    results = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(results) == {"toy-smoke", "vae-smoke", "mnist-smoke", "throughput-smoke"}
    for payload in results.values():
        assert payload["profile"] == "smoke" and payload["wall_s"] > 0
        assert payload["machine"]["torch"] == torch.__version__
    t = results["toy-smoke"]["result"]
    assert [r["steps"] for r in t["runs"] if r["loop"] == "course"] == list(toy.ladder(get_profile("smoke")))
    assert all(r["train_s"] > 0 and 0 <= r["max_weight_error_pp"] <= 100 for r in t["runs"])
    v = results["vae-smoke"]["result"]
    assert v["train_s"] > 0 and v["test_nll"] > 0 and v["test_neg_elbo"] > 0
    m = results["mnist-smoke"]["result"]
    assert m["fd_floor"] >= 0 and all(r["fd"] >= 0 and sum(r["histogram"]) == m["n"] for r in m["runs"])
    th = results["throughput-smoke"]["result"]
    assert all(r["images_per_s"] > 0 for r in th["runs"]) and th["runs"][0]["speedup"] == 1
    assert "time to quality, course" in printed and "images/s" in printed and "DDIM 50 / DDPM 1000 SW" in printed
    assert set(t["samplers"]["samplers"]) == {"DDPM, 1000 steps", "DDIM, 50 steps"}


def test_readme_section_is_rendered_from_the_json(smoke_run, tmp_path):
    out, _ = smoke_run
    found = readme.load(out)
    assert readme.render(found).strip() == ""                   # cpu and gpu: none measured here
    section = readme.render(found, ("smoke",))
    vae = found["vae-smoke"]["result"]
    assert f"{vae['test_nll']:.1f}" in section and "2-D time to quality" in section
    assert "U-Net training throughput" in section and "Real-vs-real FD floor" in section
    assert "DDIM 50 / DDPM 1000 SW" in section
    page = tmp_path / "README.md"
    page.write_text(f"intro\n{readme.BEGIN}\nold numbers\n{readme.END}\nrest\n")
    assert readme.main(["--results", str(out), "--readme", str(page), "--profile", "smoke"]) == 0
    text = page.read_text()
    assert "old numbers" not in text and section in text
    assert text.startswith("intro\n") and text.endswith(f"{readme.END}\nrest\n")
    page.write_text("no markers\n")
    with pytest.raises(ValueError, match="bench:begin"):
        readme.update(page, section)


def test_time_to_quality_is_the_shortest_passing_run():
    rows = [dict(steps=3000, train_s=9.0, passes=True), dict(steps=1000, train_s=3.0, passes=False),
            dict(steps=2000, train_s=6.0, passes=True)]
    assert toy._time_to_quality(rows) == 6.0
    assert toy._time_to_quality([dict(steps=1, train_s=1.0, passes=False)]) is None


def test_unknown_benchmark_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["tyo"])
    assert exit_info.value.code == 2 and "unknown benchmark 'tyo'" in capsys.readouterr().err


def test_timer_and_table():
    with common.timer(torch.device("cpu")) as seconds:
        sum(range(10_000))
    assert seconds() > 0 and seconds() == seconds()          # frozen after the block
    text = common.table("title", ["a", "bb"], [(1.5, None), ("x", 123456.0)])
    assert text.splitlines()[0] == "title" and "1.50" in text and "1.23e+05" in text and "-" in text


def test_write_json_is_atomic_and_readable(tmp_path):
    path = common.write_json("x", {"a": torch.tensor([1.0, 2.0])}, tmp_path)
    assert json.loads(path.read_text()) == {"a": [1.0, 2.0]}
    assert not list(tmp_path.glob("*.tmp"))


def test_baseline_trains_the_same_network_with_diffusers():
    """The tutorial-style baseline (needs the optional diffusers package): it learns, and its
    scheduler's noising and sampling step agree with the course's q_sample and DDPM step."""
    pytest.importorskip("diffusers")
    from diffusers import DDPMScheduler
    from course_lib import diffusion
    from course_lib.schedules import linear_schedule

    s, sched = linear_schedule(1000), DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    g = torch.Generator().manual_seed(0)
    x0, eps, z = (torch.randn(6, 2, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([1, 2, 10, 300, 999, 1000])
    torch.testing.assert_close(sched.add_noise(x0, eps, t - 1), diffusion.q_sample(x0, t, s, eps=eps),
                               rtol=1e-5, atol=1e-5)    # diffusers keeps its schedule in float32
    sched.set_timesteps(1000)
    for tk in (1, 2, 500, 1000):                  # diffusers' step index is t - 1
        xt = diffusion.q_sample(x0, tk, s, eps=eps)
        z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(tk), dtype=torch.float64)
        theirs = sched.step(eps, tk - 1, xt, generator=torch.Generator().manual_seed(tk)).prev_sample
        torch.testing.assert_close(theirs, diffusion.ddpm_step(eps, xt, tk, s, "posterior", noise=z),
                                   rtol=5e-4, atol=5e-4)    # float32 1 - alpha-bar_t at small t
    sample, seconds = toy.baseline_run(zoo.toy_config("smoke", steps=30), torch.device("cpu"))
    x = sample(64, torch.Generator().manual_seed(0))
    assert seconds > 0 and x.shape == (64, 2) and torch.isfinite(x).all()


def test_notebooks_are_timed_in_the_profile_and_failures_recorded(tmp_path):
    import nbformat
    from bench import notebooks
    folder = tmp_path / "nbs"
    folder.mkdir()
    for name, code in (("00_ok", "import os\nprint(os.environ['COURSE_PROFILE'], os.environ['COURSE_DATA'])"),
                       ("01_fails", "raise RuntimeError('boom')"), ("x_not_numbered", "1")):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        nbformat.write(nb, folder / f"{name}.ipynb")
    result = notebooks.run(get_profile("smoke"), folder=folder, save=tmp_path / "out")
    runs = {r["notebook"]: r for r in result["runs"]}
    assert set(runs) == {"00_ok", "01_fails"} and result["fresh_data"]
    assert runs["00_ok"]["ok"] and runs["00_ok"]["seconds"] > 0
    assert not runs["01_fails"]["ok"] and "boom" in runs["01_fails"]["error"]
    executed = nbformat.read(tmp_path / "out" / "00_ok.ipynb", as_version=4)
    printed = executed.cells[0].outputs[0]["text"]
    assert printed.startswith("smoke ") and "course-bench-data-" in printed
    only = notebooks.run(get_profile("smoke"), folder=folder, only=["01"])
    assert [r["notebook"] for r in only["runs"]] == ["01_fails"]
