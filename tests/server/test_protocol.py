"""The websocket protocol of the server (SPEC §11) with a fake policy (pi0_server_fake): health
check, handshake, metadata and response bytes, pings, fragmentation, errors as openpi sends them,
bad input, slow and vanishing clients, many clients, SIGTERM drain. Loopback only."""
import os
import re
import socket
import struct
import threading
import time

import msgpack
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import HOST, SANITIZED, report

REASON_1011 = "Internal server error. Traceback included in previous frame."
RESET_POSE = '{"reset_pose": [0, -1.5, 1.5, 0, 0, 0]}'
NOISE_SEED = 1000


@pytest.fixture
def fake(fake_bin, start_server):
    return start_server([fake_bin, "--host", HOST, "--port", 0, "--noise-seed", NOISE_SEED, "--max-message", "1M",
                         "--metadata", RESET_POSE, "--close-timeout", 2])


def ws(server, **kw):
    return connect(server.uri, compression=None, max_size=None, open_timeout=10, close_timeout=5, **kw)


def pack(obs):
    from openpi_client import msgpack_numpy  # noqa: F401  (imported by the openpi fixture first)
    return msgpack_numpy.packb(obs)


def unpack(data):
    from openpi_client import msgpack_numpy
    return msgpack_numpy.unpackb(data)


def expect_error(conn, text, code=1011, reason=REASON_1011, timeout=10):
    """openpi's error sequence: a text frame with the message, then close `code` with `reason`."""
    msg = conn.recv(timeout=timeout)
    assert isinstance(msg, str), msg[:100]
    assert text in msg, msg
    with pytest.raises(ConnectionClosed) as e:
        conn.recv(timeout=timeout)
    assert e.value.rcvd is not None and e.value.rcvd.code == code and e.value.rcvd.reason == reason, e.value
    return msg


def leave(conn):
    """Drop a connection without a close frame. (socket.close() alone does not send the FIN while
    the client's reader thread is blocked in recv() on it.)"""
    try:
        conn.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.socket.close()


def raw_http(port, request, timeout=10):
    """Send bytes on a fresh TCP connection and read until the server closes it."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks)


# ---- HTTP ----------------------------------------------------------------------------------------

def test_health_check(fake):
    resp = raw_http(fake.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK" and body == b"OK\n"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Content-Type"] == "text/plain; charset=utf-8" and headers["Content-Length"] == "3"
    assert headers["Connection"] == "close" and headers["Date"].endswith(" GMT")


def test_handshake_and_metadata_bytes(fake):
    """No extension or subprotocol is accepted even if asked; the first message is msgpack(metadata)
    byte-equal to SPEC §11.4's example."""
    import base64
    import hashlib
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET / HTTP/1.1\r\nHost: {HOST}:{fake.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
           "Sec-WebSocket-Protocol: chat\r\nAuthorization: Api-Key secret\r\n\r\n").encode()
    with socket.create_connection((HOST, fake.port), timeout=10) as s:
        s.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf or len(buf) < buf.index(b"\r\n\r\n") + 4 + 2 + 35:
            buf += s.recv(4096)
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0] == "HTTP/1.1 101 Switching Protocols"
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        assert headers["sec-websocket-accept"] == accept.decode()
        assert headers["upgrade"] == "websocket" and headers["connection"] == "Upgrade"
        assert "sec-websocket-extensions" not in headers and "sec-websocket-protocol" not in headers
        expect = bytes.fromhex("81 aa 72 65 73 65 74 5f 70 6f 73 65 96 00 cb bf f8 00 00 00 00 00 00 cb 3f f8 00 00 00 "
                               "00 00 00 00 00 00")
        assert rest[:2] == bytes([0x82, len(expect)]), rest[:2]  # FIN + binary, unmasked, 7-bit length
        assert rest[2:2 + len(expect)] == expect


def test_not_websocket_requests(fake):
    resp = raw_http(fake.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"missing Connection: Upgrade" in resp
    resp = raw_http(fake.port, b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 405 ")
    resp = raw_http(fake.port, b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 426 ") and b"Sec-WebSocket-Version: 13\r\n" in resp


@pytest.mark.parametrize("garbage", [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),
                                     os.urandom(3000), b"\x00" * 100, b"hello\r\n\r\n", b"A" * 20000])
def test_garbage_before_handshake(fake, garbage):
    resp = raw_http(fake.port, garbage)
    assert resp == b"" or resp.startswith(b"HTTP/1.1 4"), resp[:200]
    assert fake.alive()


def test_handshake_timeout(fake_bin, start_server):
    srv = start_server([fake_bin, "--host", HOST, "--port", 0, "--handshake-timeout", 0.5])
    with socket.create_connection((HOST, srv.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        t0 = time.monotonic()
        assert s.recv(100) == b""
        assert time.monotonic() - t0 < 5


def test_max_connections(fake_bin, start_server, openpi):
    srv = start_server([fake_bin, "--host", HOST, "--port", 0, "--max-connections", 2])
    a, b = ws(srv), ws(srv)
    a.recv(timeout=10), b.recv(timeout=10)
    resp = raw_http(srv.port, b"GET / HTTP/1.1\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 503 ") and b"too many connections" in resp
    a.close()
    time.sleep(0.2)
    c = ws(srv)
    assert unpack(c.recv(timeout=10)) == {}
    b.close(), c.close()


# ---- messages -----------------------------------------------------------------------------------

def test_openpi_client_round_trip(fake, openpi):
    client = openpi.WebsocketClientPolicy(host=HOST, port=fake.port)
    assert client.get_server_metadata() == {"reset_pose": [0, -1.5, 1.5, 0, 0, 0]}
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    for k in range(3):
        out = client.infer({"x": x, "prompt": "hello", "images": {"cam": np.zeros((3, 8, 8), np.uint8)}})
        a = out["actions"]
        assert a.dtype == np.float64 and a.shape == (2, 4)
        # 3 items (x, prompt, images/cam); request k of the connection uses seed NOISE_SEED + k
        assert a[0].tolist() == [3, NOISE_SEED + k, -1, x.sum()] and a[1].tolist() == [0, 2, 4, 5]
        assert out["policy_timing"] == {"infer_ms": 0.125}
        assert set(out["server_timing"]) == ({"infer_ms"} if k == 0 else {"infer_ms", "prev_total_ms"})
        assert list(out) == ["actions", "policy_timing", "server_timing"]


def test_response_bytes(fake, openpi):
    with ws(fake) as c:
        c.recv(timeout=10)
        for k in range(2):
            c.send(pack({"x": np.ones(3)}))
            data = c.recv(timeout=10)
            head = (b"\x83\xa7actions\x84\xc4\x0b__ndarray__\xc3\xc4\x04data\xc4\x40")
            assert data.startswith(head), data[:40]
            a = np.frombuffer(data[len(head):len(head) + 64], "<f8")
            assert a[1] == NOISE_SEED + k and a[3] == 3
            rest = data[len(head) + 64:]
            assert rest.startswith(b"\xc4\x05dtype\xa3<f8\xc4\x05shape\x92\x02\x04\xadpolicy_timing\x81\xa8infer_ms\xcb")
            st = rest.index(b"\xadserver_timing")
            assert rest[st + 14] == (0x81 if k == 0 else 0x82)


@pytest.mark.parametrize("value,dtype_code,total", [
    (np.arange(6, dtype=np.uint8).reshape(2, 3), 0, 15),
    (np.array([True, False, True]), 1, 2),
    (np.arange(4, dtype=np.int32), 2, 6),
    (np.arange(4, dtype=np.int64), 3, 6),
    (np.arange(4, dtype=np.float16), 4, 6),
    (np.arange(4, dtype=">f4"), 4, 6),
    (np.arange(4, dtype=np.float64)[::2], 5, 2),  # non-contiguous: tobytes() copies in C order
    (np.float32(2.5), 4, 2.5),
    (7, 3, 7),
    ([[1, 2], [3, 4.5]], 5, 10.5),
])
def test_dtypes(fake, openpi, value, dtype_code, total):
    client = openpi.WebsocketClientPolicy(host=HOST, port=fake.port)
    a = client.infer({"x": value})["actions"]
    assert a[0][3] == total and a[1][2] == dtype_code and a[1][1] == np.asarray(value).ndim


def test_noise_key_and_string_forms(fake, openpi):
    client = openpi.WebsocketClientPolicy(host=HOST, port=fake.port)
    noise = np.full((2, 4), 0.75, np.float32)
    a = client.infer({"noise": noise, "x": 1.0})["actions"]
    assert a[0][0] == 1 and a[0][2] == 0.75  # "noise" is taken out of the observation
    for prompt in ["héllo", b"bytes!", np.str_("npstr"), np.array("0-d <U"), np.array([b"abc"])]:
        a = client.infer({"prompt": prompt})["actions"]
        expect = len(prompt.item() if isinstance(prompt, np.ndarray) else prompt)
        if isinstance(prompt, str):
            expect = len(prompt.encode())
        assert a[1][3] == expect, prompt


def test_pipelined_requests(fake, openpi):
    """Requests sent before the answers: answered in order, one at a time."""
    with ws(fake) as c:
        c.recv(timeout=10)
        for k in range(5):
            c.send(pack({"x": np.float64(k)}))
        for k in range(5):
            a = unpack(c.recv(timeout=10))["actions"]
            assert a[0][1] == NOISE_SEED + k and a[0][3] == k


def test_fragmented_message(fake, openpi):
    data = pack({"x": np.arange(1000, dtype=np.float64)})
    with ws(fake) as c:
        c.recv(timeout=10)
        c.send([data[i:i + 1000] for i in range(0, len(data), 1000)])  # continuation frames
        a = unpack(c.recv(timeout=10))["actions"]
        assert a[0][3] == np.arange(1000).sum()


def test_ping_while_engine_busy(fake, openpi):
    """Pings are answered by the socket thread while the engine is busy with a slow request."""
    with ws(fake) as c, ws(fake) as d:
        c.recv(timeout=10), d.recv(timeout=10)
        c.send(pack({"delay_ms": 1500}))
        time.sleep(0.1)
        for payload in [b"", b"abc", os.urandom(125)]:
            t0 = time.monotonic()
            assert d.ping(payload).wait(timeout=5)
            assert c.ping(payload).wait(timeout=5)
            assert time.monotonic() - t0 < 1.0
        assert unpack(c.recv(timeout=10))["actions"][1][0] == 1500


# ---- errors -------------------------------------------------------------------------------------

def _nd(dtype, data, shape):
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


BAD = [
    (b"\xc1", "invalid request: invalid msgpack byte 0xc1 at offset 0"),
    (b"\x82\xa1x\x01", "invalid request: msgpack map at offset 0 claims 2 entries"),
    (msgpack.packb([1, 2]), "the observation must be a dict (msgpack map), got a list"),
    (msgpack.packb({"x": _nd("<c8", b"\0" * 8, [1])}), "key 'x': unsupported dtype '<c8'"),
    (msgpack.packb({"x": _nd(b"\xff\xfe<f4", b"\0" * 4, [1])}), "key 'x': unsupported dtype '??<f4'"),
    (msgpack.packb({"x": _nd("<f4", b"\0" * 12, [4])}), "key 'x': 12 data bytes but dtype <f4 and its shape need 16"),
    (msgpack.packb({"x": _nd("<f4", b"\0" * 4, [1, 1, 1, 1, 1])}), "array has 5 dimensions, at most 4"),
    (msgpack.packb({"x": None}), "key 'x': None values are not supported"),
    (msgpack.packb({"img": {"x": [[1], [2, 3]]}}), "key 'img/x': nested lists are not rectangular"),
    (msgpack.packb({"noise": np.zeros(3).tolist()}), "key 'noise' must be a 2-d float32 or float64 array"),
    (msgpack.packb({"x": 1}) + b"\x00", "1 trailing bytes after the msgpack object"),
    (msgpack.packb({"fail": 1, "prompt": "on purpose"}), "PI0_ERR_INVALID_ARG: fake failure requested: on purpose"),
]


@pytest.mark.parametrize("data,text", BAD, ids=[t[:30] for _, t in BAD])
def test_bad_request(fake, data, text):
    with ws(fake) as c:
        c.recv(timeout=10)
        c.send(data)
        msg = expect_error(c, text)
        assert msg.startswith("pi0 serve: request 0 failed: ")
    with ws(fake) as c:  # the server goes on
        c.recv(timeout=10)
        c.send(msgpack.packb({"x": 2}))
        assert isinstance(c.recv(timeout=10), bytes)


def test_openpi_client_raises(fake, openpi):
    client = openpi.WebsocketClientPolicy(host=HOST, port=fake.port)
    with pytest.raises(RuntimeError, match="fake failure requested: via openpi"):
        client.infer({"fail": True, "prompt": "via openpi"})


def test_text_frame(fake):
    with ws(fake) as c:
        c.recv(timeout=10)
        c.send("{\"x\": 1}")
        expect_error(c, "expected a binary message (msgpack), got a text frame")


def test_oversized_message(fake):
    with ws(fake) as c:
        c.recv(timeout=10)
        c.send(b"\x80" + os.urandom(3 << 19))  # 1.5 MiB > --max-message 1M
        expect_error(c, "message too big: at least 1572865 bytes, the server accepts at most 1048576", code=1009,
                     reason="Message too big")
    with ws(fake) as c:  # fragments adding up past the limit
        c.recv(timeout=10)
        try:
            c.send([os.urandom(400000) for _ in range(3)])
        except ConnectionClosed:  # the server's close can arrive before the client's last (empty) fragment
            pass
        expect_error(c, "message too big", code=1009, reason="Message too big")


def test_protocol_violations(fake):
    """Unmasked client frames, reserved bits, unknown opcodes: closed 1002 by wslay; the server goes on."""
    for frame in [b"\x82\x03abc", b"\xc2\x80\x00\x00\x00\x00", b"\x83\x80\x00\x00\x00\x00", b"\x09\x80\x00\x00\x00\x00"]:
        with ws(fake) as c:
            c.recv(timeout=10)
            c.socket.sendall(frame)
            with pytest.raises(ConnectionClosed):
                c.recv(timeout=10)
    with ws(fake) as c:
        c.recv(timeout=10)
        c.send(msgpack.packb({"x": 1}))
        assert isinstance(c.recv(timeout=10), bytes)


# ---- concurrency --------------------------------------------------------------------------------

def test_disconnect_mid_inference_and_while_queued(fake, openpi):
    """A: in the engine for 800 ms, then gone. B: queued behind A, gone before its turn (its request
    is dropped, never run). C: answered right after A's inference, not after B's."""
    a, b = ws(fake), ws(fake)
    a.recv(timeout=10), b.recv(timeout=10)
    a.send(pack({"delay_ms": 800}))
    time.sleep(0.1)
    b.send(pack({"delay_ms": 800}))
    time.sleep(0.1)
    leave(b)  # abrupt: no close frame
    a.close()
    c = openpi.WebsocketClientPolicy(host=HOST, port=fake.port)
    t0 = time.monotonic()
    out = c.infer({"x": 5})
    dt = time.monotonic() - t0
    assert out["actions"][0][3] == 5
    assert dt < 1.4, f"waited {dt:.2f} s: B's dropped request was run"
    log = fake.stop_ok()
    assert "1 dropped" in log or "dropped" in log


def test_pipelining_client_that_leaves(fake, openpi):
    """A client queues 4 slow requests (the server stops reading it after 2 wait) and leaves: the
    server notices at once although it is not reading it; only the request already in the engine
    runs and its answer is dropped."""
    a = ws(fake)
    a.recv(timeout=10)
    for _ in range(4):
        a.send(pack({"delay_ms": 400}))
    time.sleep(0.15)
    leave(a)
    time.sleep(1.0)
    log = fake.stop_ok()
    # 3 or 4 requests were read before the server paused the connection; none was answered
    assert re.search(r"[34] requests, 0 responses, 0 errors, 1 dropped", log), log[-2000:]


def test_slow_and_stalled_clients_do_not_stall_others(fake, openpi):
    """A client that sends half a message and stalls, one that never reads its answers, and one
    that trickles bytes: the others are served at full speed."""
    stalled = socket.create_connection((HOST, fake.port))
    stalled.sendall(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    mask = b"\x01\x02\x03\x04"
    stalled.sendall(b"\x82\xff" + struct.pack(">Q", 900000) + mask + b"\x00" * 1000)  # 1000 of 900000 bytes
    hog = ws(fake)  # sends many requests, never reads (its sends block once the server stops reading)
    hog.recv(timeout=10)
    big = pack({"x": np.zeros(100000)})

    def flood():
        try:
            for _ in range(20):
                hog.send(big)
        except Exception:  # noqa: BLE001  (its socket is closed at the end)
            pass

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    time.sleep(0.3)
    half = socket.create_connection((HOST, fake.port))
    half.sendall(b"GET / HTTP/1.1\r\nUpgr")  # trickling handshake
    client = openpi.WebsocketClientPolicy(host=HOST, port=fake.port)
    lat = []
    for k in range(50):
        t0 = time.monotonic()
        client.infer({"x": k})
        lat.append(time.monotonic() - t0)
    p99 = sorted(lat)[-1]
    assert p99 < 0.5, f"max latency {p99:.3f} s"
    for s in (stalled, half):
        s.close()
    leave(hog)
    flooder.join(timeout=10)


def test_many_clients(fake, openpi):
    n_clients, n_req = 32, 10
    errors, done = [], []

    def run(i):
        try:
            c = openpi.WebsocketClientPolicy(host=HOST, port=fake.port)
            for k in range(n_req):
                a = c.infer({"x": np.float64(i * 1000 + k)})["actions"]
                assert a[0][3] == i * 1000 + k and a[0][1] == NOISE_SEED + k
            done.append(i)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert len(done) == n_clients


@pytest.mark.skipif(SANITIZED, reason="ASan's quarantine makes RSS meaningless; LeakSanitizer checks leaks there")
def test_memory_stays_flat(fake, openpi):
    client = openpi.WebsocketClientPolicy(host=HOST, port=fake.port)
    img = np.zeros((224, 224, 3), np.uint8)

    def round_of_traffic():
        for _ in range(50):
            client.infer({"image": img, "x": 1})
        for data, _ in BAD[:8]:
            with ws(fake) as c:
                c.recv(timeout=10)
                c.send(data)
                c.recv(timeout=10)
        with ws(fake) as c:
            c.recv(timeout=10)
            c.send(b"\x80" + bytes(1100000))
            c.recv(timeout=10)
        raw_http(fake.port, os.urandom(500))

    round_of_traffic()
    round_of_traffic()
    before = fake.rss_kb()
    for _ in range(4):
        round_of_traffic()
    after = fake.rss_kb()
    report(f"[server memory] RSS {before} kB -> {after} kB after 200 requests, 36 bad requests, 4 oversized")
    assert after - before < 4096, (before, after)


def test_sigterm_drains_queue(fake_bin, start_server, openpi):
    """SIGTERM with 4 requests queued: each gets its answer, then close 1001; new connections are
    refused; exit 0."""
    srv = start_server([fake_bin, "--host", HOST, "--port", 0])
    conns = [ws(srv) for _ in range(4)]
    for c in conns:
        c.recv(timeout=10)
    for i, c in enumerate(conns):
        c.send(pack({"delay_ms": 150, "x": i}))
    time.sleep(0.1)
    srv.proc.send_signal(15)
    for i, c in enumerate(conns):
        a = unpack(c.recv(timeout=10))["actions"]
        assert a[0][3] == i
        with pytest.raises(ConnectionClosed) as e:
            c.recv(timeout=10)
        assert e.value.rcvd.code == 1001 and e.value.rcvd.reason == "server shutting down"
    srv.proc.wait(timeout=30)
    log = srv.stop_ok()
    assert "answering 4 outstanding request(s)" in log or "answering 3 outstanding request(s)" in log, log
    with pytest.raises(OSError):
        socket.create_connection((HOST, srv.port), timeout=2)
