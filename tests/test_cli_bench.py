"""`pi0 bench` runs on the built-in random weights and prints both tables (and valid JSON)."""
import json

from pi0_testutil import run_cli


def test_bench_tables(cli):
    out = run_cli(cli, "bench", "--config", "tiny", "--backend", "cpu", "--runs", "2", "--horizon", "10").stdout
    assert "E2E latency (2 runs" in out
    for row in ("| cpu ", "| ViT ", "| LLM prefill ", "| Diffusion (10 steps) ", "| per step "):
        assert row in out, row


def test_bench_json(cli):
    out = run_cli(cli, "bench", "--config", "tiny", "--backend", "cpu", "--runs", "2", "--reference", "--json").stdout
    r = json.loads(out)
    assert r["horizon"] == 10 and r["cameras"] == 2 and r["prompt_len"] == 20 and r["runs"] == 2
    assert r["e2e_ms"]["min"] <= r["e2e_ms"]["median"] and r["hz"] > 0
    assert set(r["stages_ms"]) == {"vit", "prefill", "diffusion", "per_step"}


def test_bench_rejects_bad_options(cli):
    r = run_cli(cli, "bench", "--cameras", "4", check=False)
    assert r.returncode == 2 and "usage: pi0 bench" in r.stderr
