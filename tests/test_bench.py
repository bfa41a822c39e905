"""The benchmark pipeline on a machine without a GPU: the suite runs, the JSON has the schema
DESIGN.md §6 and the issue fix, the table and the plot are produced."""

import re
import subprocess
import sys

import pytest

from fusedrnn import benchmark as B


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "fusedrnn", "bench", "--quick", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (json_path,) = out.glob("*.json")
    return proc.stdout, json_path


def test_json_schema(quick_run):
    _, json_path = quick_run
    assert re.fullmatch(r"[A-Za-z0-9-]+-\d{4}-\d\d-\d\d-[0-9a-z]+\.json", json_path.name)
    report = B.load(json_path)
    benches = report["benchmarks"]
    assert benches, "no benchmark ran"
    assert report["fusedrnn"]["device"] and report["fusedrnn"]["peaks"]
    for b in benches:
        info = b["extra_info"]
        missing = [k for k in B.REQUIRED_INFO if k not in info]
        assert not missing, (b["name"], missing)
        assert info["mode"] in B.MODES
        assert info["tokens_per_s"] > 0 and info["tflops"] > 0 and b["stats"]["median"] > 0
    # torch.nn ran every case, so every result carries its ratio, and torch.nn's own is 1.
    for b in benches:
        assert "vs_torch" in b["extra_info"], b["name"]
        if b["extra_info"]["provider"] == "torch.nn":
            assert b["extra_info"]["vs_torch"] == 1.0
    providers = {b["extra_info"]["provider"] for b in benches}
    assert {"torch.nn", "fusedrnn:torch", "fusedrnn:reference"} <= providers
    # Interpreted Triton is never reported as kernel speed.
    assert not any(p.startswith("fusedrnn:triton") for p in providers)


def test_table_and_plot(quick_run):
    stdout, json_path = quick_run
    assert "No CUDA GPU" in stdout
    assert re.search(r"^case\s+mode\s+provider\s+ms\s+tokens/s\s+vs torch.nn", stdout, re.M)
    assert json_path.with_suffix(".png").stat().st_size > 10_000


def test_floor_model():
    case = B.Case("lstm", "bf16", 16, 1024, 768, 768)
    # 2 FLOPs per multiply-add, 4 gates, input and recurrent halves, every token.
    assert B.flops(case, "fwd") == 2 * 16 * 1024 * 4 * 768 * (768 + 768)
    assert B.flops(case, "fwdbwd") == 3 * B.flops(case, "fwd")
    assert B.floor_seconds(case, "fwd", (1e15, 1e12)) == pytest.approx(B.flops(case, "fwd") / 1e15)


def test_gpu_grid_is_the_fixed_one():
    ids = {c.id for c in B.grid("cuda")}
    for must in ("lstm-bf16-B16-T1024-H768", "gru-bf16-B1-T1024-H256", "lstm-bf16-B256-T256-H1024",
                 "lstm-bf16-B32-T512-H512-L2-bi", "gru-bf16-B64-T1024-H768-packed",
                 "lstm-fp32-B16-T1024-H768"):
        assert must in ids


def test_readme_section_is_generated_from_a_report(quick_run, tmp_path):
    _, json_path = quick_run
    report = B.load(json_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{B.README_START}\nold table\n{B.README_END}\noutro\n")
    B.update_readme(readme, B.readme_section(report, "bench/results/x.json", "bench/results/x.png"))
    text = readme.read_text()
    assert "old table" not in text and text.startswith("intro") and text.endswith("outro\n")
    assert "CPU only" in text and "| case | mode | provider |" in text
    assert text.count("\n| ") >= len([b for b in report["benchmarks"]
                                       if b["extra_info"]["mode"] in ("fwd", "fwdbwd")])
