"""deploy/nginx in a running nginx, in front of stand-in backends (not transcribe-server):
does each kind of call reach the right upstream over the right protocol?

- gRPC (a health Check and a bidirectional stream) through the plaintext HTTP/2 port and
  through TLS (ALPN h2) reaches a grpcio server over HTTP/2 (grpc_pass);
- gRPC-Web and CORS preflights on a gRPC path reach the HTTP/1.1 backend instead;
- the WebSocket doors reach an HTTP/1.1 backend with the Upgrade and Connection headers and
  get its 101 back;
- REST uploads go through, and one refused with 503 by a replica (draining) is sent again
  to the other replica;
- /metrics is not passed on.

The listen ports and upstream addresses are rewritten to free local ports; nothing else in
the config is changed. Skipped without nginx, openssl or grpcio.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import re
import socket
import ssl
import subprocess
import threading
import time
from concurrent import futures
from pathlib import Path

import pytest

from test_manifests import free_ports, install_nginx, local_listeners, nginx_binary

grpc = pytest.importorskip("grpc")

HEALTH_SERVING = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Backend(http.server.BaseHTTPRequestHandler):
    """An HTTP/1.1 replica: /healthz, uploads (or 503 when `draining`), a WebSocket
    handshake, /metrics. Records what it saw."""

    protocol_version = "HTTP/1.1"
    draining = False
    seen: list = []

    def log_message(self, *args):
        pass

    def reply(self, status: int, body: bytes = b"", headers: dict | None = None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def record(self):
        self.seen.append((self.server.name, self.command, self.path, self.request_version,
                          self.headers.get("Upgrade"), self.headers.get("Connection"),
                          self.headers.get("Content-Type")))

    def do_GET(self):
        self.record()
        if self.path.split("?")[0] in ("/v1/stream", "/v1/captions"):
            key = self.headers.get("Sec-WebSocket-Key", "")
            if self.headers.get("Upgrade", "").lower() != "websocket" or \
                    "upgrade" not in self.headers.get("Connection", "").lower():
                self.reply(400, b"no upgrade")
                return
            accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            self.close_connection = True
            return
        self.reply(200, f"{self.server.name} {self.path}\n".encode())

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.record()
        if self.server.draining and self.path.startswith("/v1/audio/"):
            self.reply(503, b'{"error": {"code": "draining"}}', {"Content-Type": "application/json"})
        else:
            self.reply(200, f"{self.server.name} got {len(body)} bytes\n".encode())


    def do_OPTIONS(self):
        self.record()
        self.reply(204, b"", {"Access-Control-Allow-Origin": "https://page.example"})


def start_http_backend(name: str, draining: bool):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    server.name, server.draining = name, draining
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_grpc_backend():
    def check(request, context):
        return HEALTH_SERVING

    def echo(requests, context):
        for message in requests:
            yield b"echo:" + message

    handlers = [
        grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)}),
        grpc.method_handlers_generic_handler(
            "transcribe.v1.TranscriptionService",
            {"StreamingRecognize": grpc.stream_stream_rpc_method_handler(echo)}),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    if nginx_binary() is None:
        pytest.skip("nginx is not installed")
    tmp_path = tmp_path_factory.mktemp("nginx")
    grpc_server, grpc_port = start_grpc_backend()
    ready = start_http_backend("ready", draining=False)
    draining = start_http_backend("draining", draining=True)
    ports = dict(zip(("tls", "h2c", "http"), free_ports(3)))

    def edit(name: str, text: str) -> str:
        if name != "transcribe.conf":
            return text
        text = local_listeners(text, ports)
        grpc_part, http_part = text.split("upstream transcribe_http {", 1)
        grpc_part = grpc_part.replace("192.0.2.11:50051", f"127.0.0.1:{grpc_port}")
        grpc_part = re.sub(r"^\s*server 192\.0\.2\.12:50051.*\n", "", grpc_part, flags=re.M)
        http_part = http_part.replace("192.0.2.11:50051", f"127.0.0.1:{draining.server_port}")
        http_part = http_part.replace("192.0.2.12:50051", f"127.0.0.1:{ready.server_port}")
        out = grpc_part + "upstream transcribe_http {" + http_part
        assert not re.search(r"^\s*server 192\.0\.2\.", out, re.M)
        return out

    wrapper = install_nginx(tmp_path, edit)
    proc = subprocess.Popen([nginx_binary(), "-c", str(wrapper), "-p", f"{tmp_path}/",
                             "-g", "daemon off; master_process off;"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", ports["http"]), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"nginx did not start: {proc.stderr.read().decode()}")
            time.sleep(0.05)
    try:
        yield {"ports": ports, "cert": (tmp_path / "conf/tls/fullchain.pem").read_bytes()}
    finally:
        # What nginx had to say (warnings, upstreams marked down), in the output of -s.
        proc.terminate()
        proc.wait(timeout=10)
        grpc_server.stop(0)
        ready.shutdown()
        draining.shutdown()
        print((tmp_path / "error.log").read_text())


@pytest.fixture
def fleet(running):
    Backend.seen = []
    return running


def grpc_calls(channel):
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    assert check(b"", timeout=10) == HEALTH_SERVING
    stream = channel.stream_stream("/transcribe.v1.TranscriptionService/StreamingRecognize")
    replies = list(stream(iter([b"config", b"audio-1", b"audio-2"]), timeout=10))
    assert replies == [b"echo:config", b"echo:audio-1", b"echo:audio-2"]


def test_grpc_over_plaintext_http2(fleet):
    with grpc.insecure_channel(f"127.0.0.1:{fleet['ports']['h2c']}") as channel:
        grpc_calls(channel)


def test_grpc_over_tls(fleet):
    credentials = grpc.ssl_channel_credentials(root_certificates=fleet["cert"])
    options = [("grpc.ssl_target_name_override", "transcribe.example.com")]
    with grpc.secure_channel(f"127.0.0.1:{fleet['ports']['tls']}", credentials, options) as channel:
        grpc_calls(channel)


def http_request(port: int, request: bytes, tls_cert: bytes | None = None) -> bytes:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls_cert is not None:
        context = ssl.create_default_context(cadata=tls_cert.decode())
        context.set_alpn_protocols(["http/1.1"])
        sock = context.wrap_socket(sock, server_hostname="transcribe.example.com")
    with sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        while length and len(body) < int(length.group(1)):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body


@pytest.mark.parametrize("door", ["/v1/stream", "/v1/captions"])
@pytest.mark.parametrize("via", ["http", "tls"])
def test_websocket_upgrade_reaches_an_http1_backend(fleet, door, via):
    key = base64.b64encode(b"0123456789abcdef").decode()
    # Browsers send the token in the query (they cannot set headers on a WebSocket).
    request = (f"GET {door}?token=secret-token HTTP/1.1\r\nHost: transcribe.example.com\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
    cert = fleet["cert"] if via == "tls" else None
    reply = http_request(fleet["ports"][via], request.encode(), cert)
    assert reply.startswith(b"HTTP/1.1 101"), reply
    accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest())
    assert accept in reply
    [seen] = [s for s in Backend.seen if s[2] == f"{door}?token=secret-token"]
    assert seen[3] == "HTTP/1.1" and seen[4] == "websocket" and "upgrade" in seen[5].lower()


def test_upload_refused_by_a_draining_replica_goes_to_another(fleet):
    body = b"x" * 200_000
    for _ in range(4):
        request = (b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: transcribe.example.com\r\n"
                   b"Content-Type: application/octet-stream\r\nContent-Length: "
                   + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        reply = http_request(fleet["ports"]["http"], request)
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert b"ready got 200000 bytes" in reply
    assert any(s[0] == "draining" for s in Backend.seen), "the draining replica was never tried"


def test_health_passes_and_metrics_do_not(fleet):
    reply = http_request(fleet["ports"]["http"],
                         b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200") and b"/readyz" in reply
    reply = http_request(fleet["ports"]["http"],
                         b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 404"), reply[:100]
    assert not any(s[2] == "/metrics" for s in Backend.seen)


@pytest.mark.parametrize("via", ["http", "tls"])
def test_grpc_web_and_preflight_go_over_http1(fleet, via):
    cert = fleet["cert"] if via == "tls" else None
    path = "/transcribe.v1.TranscriptionService/StreamCaptions"
    frame = b"\x00\x00\x00\x00\x00"  # an empty gRPC-Web message frame
    reply = http_request(fleet["ports"][via], (
        f"POST {path} HTTP/1.1\r\nHost: transcribe.example.com\r\n"
        "Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n"
        f"Content-Length: {len(frame)}\r\nConnection: close\r\n\r\n").encode() + frame, cert)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    reply = http_request(fleet["ports"][via], (
        f"OPTIONS {path} HTTP/1.1\r\nHost: transcribe.example.com\r\n"
        "Origin: https://page.example\r\nAccess-Control-Request-Method: POST\r\n"
        "Access-Control-Request-Headers: content-type,x-grpc-web\r\nConnection: close\r\n\r\n").encode(), cert)
    assert reply.startswith(b"HTTP/1.1 204"), reply[:200]
    assert b"page.example" in reply
    seen = [(s[1], s[2], s[3], s[6]) for s in Backend.seen]
    assert ("POST", path, "HTTP/1.1", "application/grpc-web+proto") in seen, seen
    assert ("OPTIONS", path, "HTTP/1.1", None) in seen, seen
