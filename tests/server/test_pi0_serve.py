"""`pi0 serve` (tiny random checkpoint, CPU backend) against the real openpi-client from PyPI:
round trips equal the offline C path (`pi0_policy_tool infer`, the code of `pi0 policy-infer`) on
the same observation and noise; bad input gets the policy's error; SIGTERM drains; a load test
of 8 clients x 200 requests. Loopback only; every loop is bounded."""
import json
import os
import signal
import statistics
import threading
import time

import numpy as np
import pytest

import safetensors_np as st
from conftest import HOST, ROOT, SANITIZED, report

CONFIGS = os.path.join(ROOT, "configs")
SPM = os.path.join(ROOT, "tests", "policy", "data", "test_spm.model")
NOISE_SEED = 77


def run(*args):
    import subprocess
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def assets(pi0_cli, tmp_path_factory):
    if not os.path.exists(SPM):
        pytest.skip(f"no test tokenizer at {SPM}")
    d = tmp_path_factory.mktemp("serve")
    ckpt = d / "tiny.safetensors"
    run(pi0_cli, "mkweights", "--config", "tiny", "--seed", 5, "-o", ckpt)
    rng = np.random.default_rng(3)

    def stats(n):
        mean, std = rng.normal(0, 0.5, n), rng.uniform(0.2, 2.0, n)
        return {"mean": mean.tolist(), "std": std.tolist(), "q01": (mean - 2 * std).tolist(),
                "q99": (mean + 2 * std).tolist()}

    paths = {}
    for name, n_state, n_act in [("libero", 8, 7), ("aloha", 14, 14), ("generic", 8, 7)]:
        paths[name] = d / f"norm_stats_{name}.json"
        paths[name].write_text(json.dumps({"norm_stats": {"state": stats(n_state), "actions": stats(n_act)}}))
    generic = d / "generic.json"  # the load test's fast config: one camera, horizon 10, 2 steps
    generic.write_text(json.dumps({"name": "server_load", "adapter": "generic", "images": {"base_0_rgb": "image"},
                                   "state_keys": ["state"], "action_dims": 7, "action_horizon": 10, "num_steps": 2,
                                   "metadata": {"robot": "test", "dims": [7, 10]}}))
    return {"ckpt": ckpt, "dir": d, "ns": paths, "generic": generic}


def serve_args(pi0_cli, assets, config, ns, *extra):
    return [pi0_cli, "serve", "-m", assets["ckpt"], "--policy-config", config, "--norm-stats", assets["ns"][ns],
            "--tokenizer", SPM, "--backend", "cpu", "--host", HOST, "--port", 0, *extra]


def libero_obs(rng, prompt="open the drawer and put the bowl in it"):
    return {"observation/image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
            "observation/wrist_image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
            "observation/state": rng.uniform(-1, 1, 8),
            "prompt": prompt}


def aloha_obs(rng):
    return {"state": rng.uniform(0.05, 0.95, 14),
            "images": {"cam_high": rng.integers(0, 256, (3, 120, 160), dtype=np.uint8),
                       "cam_left_wrist": rng.uniform(0, 1, (3, 60, 80)).astype(np.float32),
                       "cam_low": rng.integers(0, 256, (3, 30, 40), dtype=np.uint8)},
            "prompt": "Transfer the_cube"}


def save_raw_obs(path, obs, prefix=""):
    """The offline tool's raw observation file: one tensor per '/'-joined key, strings as U8."""
    tensors = {}

    def walk(o, p):
        for k, v in o.items():
            if isinstance(v, dict):
                walk(v, f"{p}{k}/")
            elif isinstance(v, str):
                tensors[p + k] = np.frombuffer(v.encode(), np.uint8)
            else:
                tensors[p + k] = np.asarray(v)

    walk(obs, prefix)
    st.save(str(path), tensors)


def offline(policy_tool, assets, config, ns, obs, tmp, seed=None, noise=None):
    save_raw_obs(tmp / "obs.safetensors", obs)
    args = [policy_tool, "infer", "-m", assets["ckpt"], "--policy-config", config, "--raw-obs", tmp / "obs.safetensors",
            "--tokenizer", SPM, "--norm-stats", assets["ns"][ns], "--backend", "cpu", "-o", tmp / "a.safetensors"]
    if noise is not None:
        st.save(str(tmp / "noise.safetensors"), {"noise": noise})
        args += ["--noise", tmp / "noise.safetensors"]
    else:
        args += ["--seed", seed]
    run(*args)
    return st.load(str(tmp / "a.safetensors"))[0]["actions"]


@pytest.mark.parametrize("name", ["libero", "aloha"])
def test_round_trip_equals_offline(name, pi0_cli, policy_tool, assets, start_server, openpi, tmp_path):
    """Requests 0 and 1 of a connection use noise seeds N and N+1 (--noise-seed N); request 2
    carries its own "noise". Each answer equals the offline C path bit for bit."""
    config = os.path.join(CONFIGS, f"{name}.json")
    srv = start_server(serve_args(pi0_cli, assets, config, name, "--noise-seed", NOISE_SEED))
    client = openpi.WebsocketClientPolicy(host=HOST, port=srv.port)
    assert client.get_server_metadata() == ({} if name == "libero" else {"reset_pose": [0, -1.5, 1.5, 0, 0, 0]})
    rng = np.random.default_rng(11)
    make = libero_obs if name == "libero" else aloha_obs
    obs = [make(rng), make(rng)]
    horizon = 50
    noise = rng.standard_normal((horizon, 32)).astype(np.float32)
    answers = [client.infer(obs[0]), client.infer(obs[1]), client.infer({**obs[0], "noise": noise})]
    expect = [offline(policy_tool, assets, config, name, obs[0], tmp_path, seed=NOISE_SEED),
              offline(policy_tool, assets, config, name, obs[1], tmp_path, seed=NOISE_SEED + 1),
              offline(policy_tool, assets, config, name, obs[0], tmp_path, noise=noise)]
    for k, (got, want) in enumerate(zip(answers, expect)):
        a = got["actions"]
        assert a.dtype == np.float64 and a.shape == want.shape, (a.shape, want.shape)
        assert np.array_equal(a, want), f"request {k}: max abs diff {np.abs(a - want).max()}"
        assert got["policy_timing"]["infer_ms"] > 0 and got["server_timing"]["infer_ms"] >= got["policy_timing"]["infer_ms"]
        assert ("prev_total_ms" in got["server_timing"]) == (k > 0)
    assert not np.array_equal(answers[0]["actions"], answers[2]["actions"])  # the noise was used
    report(f"[serve round trip {name}] 3 requests, actions {answers[0]['actions'].shape} bit-equal to the "
          f"offline C path; server infer {answers[1]['server_timing']['infer_ms']:.1f} ms")


BAD_OBS = [
    (lambda o: o.pop("observation/image"), "observation/image"),
    (lambda o: o.__setitem__("observation/state", np.zeros(40)), "observation/state"),
    (lambda o: o.__setitem__("observation/image", np.zeros((224, 224), np.uint8)), "observation/image"),
    (lambda o: o.__setitem__("observation/image", "not an image"), "observation/image"),
    (lambda o: o.__setitem__("noise", np.zeros((49, 32), np.float32)), "key 'noise' has shape [49, 32], expected [50, 32]"),
]


def test_bad_input_real_policy(pi0_cli, assets, start_server, openpi):
    srv = start_server(serve_args(pi0_cli, assets, os.path.join(CONFIGS, "libero.json"), "libero"))
    rng = np.random.default_rng(1)
    for mutate, text in BAD_OBS:
        client = openpi.WebsocketClientPolicy(host=HOST, port=srv.port)
        obs = libero_obs(rng)
        mutate(obs)
        with pytest.raises(RuntimeError) as e:
            client.infer(obs)
        msg = str(e.value)
        assert "Error in inference server:\npi0 serve: request 0 failed: PI0_ERR_" in msg and text in msg, msg
    client = openpi.WebsocketClientPolicy(host=HOST, port=srv.port)  # still serving
    assert client.infer(libero_obs(rng))["actions"].shape == (50, 7)


def test_sigterm_drains_real_policy(pi0_cli, assets, start_server, openpi):
    srv = start_server(serve_args(pi0_cli, assets, os.path.join(CONFIGS, "libero.json"), "libero"))
    clients = [openpi.WebsocketClientPolicy(host=HOST, port=srv.port) for _ in range(3)]
    rng = np.random.default_rng(2)
    obs = [libero_obs(rng) for _ in clients]
    results, errors = {}, []

    def go(i):
        try:
            results[i] = clients[i].infer(obs[i])
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=go, args=(i,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    srv.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 3, errors
    assert srv.proc.wait(timeout=60) == 0
    log = srv.stop_ok()
    assert "finishing queued requests" in log and "3 requests, 3 responses, 0 errors" in log, log[-3000:]


def test_load_8_clients(pi0_cli, assets, start_server, openpi):
    """8 clients x 200 requests (15 on the ASan build) on the fast config. Clients i and i+4 send
    the same observations, and request k of every connection uses seed N+k, so their answers must
    be identical: an answer delivered to the wrong connection would show."""
    n_clients, n_req = 8, (15 if SANITIZED else 200)
    srv = start_server(serve_args(pi0_cli, assets, assets["generic"], "generic", "--noise-seed", NOISE_SEED))
    rng = np.random.default_rng(4)
    obs = [{"image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), "state": rng.uniform(-1, 1, 8),
            "prompt": f"pick up object {i}"} for i in range(4)]
    actions = [[None] * n_req for _ in range(n_clients)]
    latency, errors = [], []
    lock = threading.Lock()
    start = threading.Barrier(n_clients, timeout=60)

    def client_main(i):
        try:
            c = openpi.WebsocketClientPolicy(host=HOST, port=srv.port)
            assert c.get_server_metadata() == {"robot": "test", "dims": [7, 10]}
            start.wait()
            for k in range(n_req):
                t0 = time.perf_counter()
                out = c.infer(obs[i % 4])
                dt = time.perf_counter() - t0
                actions[i][k] = out["actions"]
                with lock:
                    latency.append(dt)
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f"client {i}: {e!r}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_main, args=(i,), daemon=True) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    wall = time.perf_counter() - t0
    assert not errors, errors[:3]
    got = sum(a is not None for row in actions for a in row)
    lost = n_clients * n_req - got
    lat = sorted(latency)
    p50, p99 = lat[len(lat) // 2] * 1e3, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3
    report(f"[serve load] {n_clients} clients x {n_req} requests: {got} answered, {lost} lost, "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, mean {statistics.mean(lat) * 1e3:.1f} ms, "
          f"{got / wall:.1f} requests/s over {wall:.1f} s")
    assert lost == 0
    for i in range(4):
        for k in range(n_req):
            assert actions[i][k].shape == (10, 7)
            assert np.array_equal(actions[i][k], actions[i + 4][k]), f"clients {i}/{i + 4} differ at request {k}"
    assert not np.array_equal(actions[0][0], actions[1][0]) and not np.array_equal(actions[0][0], actions[0][1])
    log = srv.stop_ok()
    assert f"{n_clients * n_req} requests, {n_clients * n_req} responses, 0 errors, 0 dropped" in log, log[-2000:]
