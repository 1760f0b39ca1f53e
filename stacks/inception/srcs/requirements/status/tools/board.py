#!/usr/bin/python3
"""The inception stack's status board: every few seconds it probes each service of the stack by its
name over the private network (the names resolve through the container's DNS, 127.0.0.11) and speaks a
little of each one's own protocol; nginx serves the result at https://status.<domain>/.

    board.py [--probes FILE] [--listen ADDR:PORT] [--interval S] [--snapshot FILE]
    board.py --check     (the healthcheck: the probe loop is fresh and the page answers)

The probes are lines `SERVICE KIND HOST:PORT [ARGUMENT]` of --probes (a compose `configs:` file), with
KIND one of
    https    a TLS handshake (SNI: ARGUMENT's name), then GET of ARGUMENT (NAME[/PATH], default
             HOST/) with Host: NAME; the HTTP status and the TLS version
    http     GET ARGUMENT (default /); the HTTP status and the page's <title>
    fastcgi  a FastCGI FCGI_GET_VALUES management record; php-fpm's answer (no script runs)
    mysql    the server's greeting packet; MariaDB's version (the connection is closed before login)
    redis    PING and DBSIZE; the number of keys
    ftp      the 220 greeting, then QUIT

Pages: `/` (HTML, refreshes itself), `/status.json`, `/healthz`. Each round is also written to
--snapshot (on a tmpfs: the container's root is read-only), which `--check` reads. Runs in the
foreground as the container's PID 1: SIGTERM and SIGINT end it cleanly. Python's standard library
only (Debian's python3).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import html
import http.server
import json
import os
import re
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.request

TIMEOUT = 2.0  # seconds, per probe (name lookup, connect and exchange)
KINDS = ("https", "http", "fastcgi", "mysql", "redis", "ftp")


class ProbeError(Exception):
    """What went wrong, as one line for the board."""


class Probe:
    def __init__(self, service: str, kind: str, host: str, port: int, argument: str) -> None:
        self.service, self.kind, self.host, self.port, self.argument = service, kind, host, port, argument

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


def read_probes(path: str) -> list[Probe]:
    probes = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            where = f"{path}:{number}"
            if len(words) not in (3, 4):
                raise SystemExit(f"board: {where}: expected SERVICE KIND HOST:PORT [ARGUMENT], got {line!r}")
            service, kind, target = words[:3]
            if kind not in KINDS:
                raise SystemExit(f"board: {where}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
            host, _, port = target.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise SystemExit(f"board: {where}: {target!r} is not HOST:PORT")
            argument = os.path.expandvars(words[3]) if len(words) == 4 else ""  # ${DOMAIN_NAME}
            if "$" in argument:
                raise SystemExit(f"board: {where}: {words[3]!r}: a variable is not set in the environment")
            probes.append(Probe(service, kind, host, int(port), argument))
    if not probes:
        raise SystemExit(f"board: {path}: no probes")
    return probes


# --- the protocols -------------------------------------------------------------------------------------


def _recv_until(sock: socket.socket, done: bytes, limit: int = 65536) -> bytes:
    data = b""
    while done not in data and len(data) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ProbeError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def _http_get(sock: socket.socket, host: str, path: str) -> tuple[int, bytes]:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: inception-status\r\n"
                 "Connection: close\r\n\r\n".encode())  # fmt: skip
    data = _recv_until(sock, b"</title>")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    if not match:
        raise ProbeError(f"not an HTTP answer: {data[:40]!r}")
    return int(match.group(1)), data


def probe_https(sock: socket.socket, probe: Probe) -> tuple[bool, str]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the stack's certificate is self-signed
    name, slash, path = (probe.argument or probe.host).partition("/")
    with context.wrap_socket(sock, server_hostname=name) as tls:
        status, _ = _http_get(tls, name, slash + path or "/")
        return status < 500, f"HTTP {status} over {tls.version()}"


def probe_http(sock: socket.socket, probe: Probe) -> tuple[bool, str]:
    status, data = _http_get(sock, probe.host, probe.argument or "/")
    title = re.search(rb"<title>(.*?)</title>", data, re.S)
    shown = f", \u201c{title.group(1).decode(errors='replace').strip()}\u201d" if title else ""
    return status < 500, f"HTTP {status}{shown}"


def _fcgi_pairs(data: bytes) -> dict[str, str]:
    pairs, at = {}, 0
    while at < len(data):
        sizes = []
        for _ in range(2):
            size = data[at]
            if size >> 7:
                size = struct.unpack(">I", data[at : at + 4])[0] & 0x7FFFFFFF
                at += 4
            else:
                at += 1
            sizes.append(size)
        name = data[at : at + sizes[0]].decode(errors="replace")
        value = data[at + sizes[0] : at + sizes[0] + sizes[1]].decode(errors="replace")
        pairs[name] = value
        at += sizes[0] + sizes[1]
    return pairs


def probe_fastcgi(sock: socket.socket, probe: Probe) -> tuple[bool, str]:
    names = (b"FCGI_MAX_CONNS", b"FCGI_MAX_REQS", b"FCGI_MPXS_CONNS")
    body = b"".join(bytes([len(name), 0]) + name for name in names)
    # version 1, FCGI_GET_VALUES (9), request id 0 (a management record), no padding
    sock.sendall(struct.pack(">BBHHBx", 1, 9, 0, len(body), 0) + body)
    version, kind, _, length, padding = struct.unpack(">BBHHBx", _recv_exactly(sock, 8))
    if version != 1 or kind != 10:  # FCGI_GET_VALUES_RESULT
        raise ProbeError(f"not a FastCGI answer (version {version}, type {kind})")
    values = _fcgi_pairs(_recv_exactly(sock, length + padding)[:length])
    # php-fpm answers with the variables it knows (FCGI_MPXS_CONNS: it does not multiplex)
    shown = ", ".join(f"{name}={value}" for name, value in sorted(values.items())) or "no values"
    return True, f"FastCGI management answer: {shown}"


def probe_mysql(sock: socket.socket, probe: Probe) -> tuple[bool, str]:
    length = int.from_bytes(_recv_exactly(sock, 4)[:3], "little")  # then the sequence number
    payload = _recv_exactly(sock, length)
    if payload[:1] == b"\xff":  # an error packet instead of the greeting (say, too many connections)
        raise ProbeError(payload[9:].decode(errors="replace") or "error packet")
    if payload[:1] != b"\x0a":
        raise ProbeError(f"protocol {payload[:1]!r}, not 10")
    version = payload[1 : payload.index(b"\0", 1)].decode(errors="replace")
    return True, version.removeprefix("5.5.5-")  # MariaDB's prefix for old clients


def probe_redis(sock: socket.socket, probe: Probe) -> tuple[bool, str]:
    sock.sendall(b"PING\r\n")
    pong = _recv_until(sock, b"\r\n")
    if not pong.startswith(b"+PONG"):
        raise ProbeError(f"PING answered {pong[:60]!r}")
    sock.sendall(b"DBSIZE\r\n")
    size = _recv_until(sock, b"\r\n")
    if not size.startswith(b":"):
        raise ProbeError(f"DBSIZE answered {size[:60]!r}")
    return True, f"PONG, {int(size[1:])} keys"


def probe_ftp(sock: socket.socket, probe: Probe) -> tuple[bool, str]:
    greeting = _recv_until(sock, b"\r\n").decode(errors="replace").strip()
    if not greeting.startswith("220"):
        raise ProbeError(f"greeting {greeting[:60]!r}")
    sock.sendall(b"QUIT\r\n")
    _recv_until(sock, b"\r\n")
    return True, greeting


PROTOCOLS = {
    "https": probe_https,
    "http": probe_http,
    "fastcgi": probe_fastcgi,
    "mysql": probe_mysql,
    "redis": probe_redis,
    "ftp": probe_ftp,
}


def run_probe(probe: Probe) -> dict[str, object]:
    started = time.monotonic()
    address = ""
    try:
        try:
            found = socket.getaddrinfo(probe.host, probe.port, socket.AF_INET, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ProbeError(f"{probe.host}: {exc.strerror}") from None
        address = found[0][4][0]
        with socket.create_connection((address, probe.port), timeout=TIMEOUT) as sock:
            sock.settimeout(max(0.1, TIMEOUT - (time.monotonic() - started)))
            ok, detail = PROTOCOLS[probe.kind](sock, probe)
    except (OSError, ProbeError, ValueError, struct.error) as exc:
        ok, detail = False, str(exc) or type(exc).__name__
    return {
        "service": probe.service,
        "kind": probe.kind,
        "target": probe.target,
        "address": address,
        "ok": ok,
        "detail": detail,
        "ms": round((time.monotonic() - started) * 1000, 1),
    }


# --- the board -----------------------------------------------------------------------------------------


def own_sandbox() -> dict[str, object]:
    """What this container looks like from inside: what composer set up for it."""
    status = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    tmpfs = []
    with open("/proc/self/mounts") as handle:
        for line in handle:
            fields = line.split()
            if fields[2] == "tmpfs" and fields[1] in ("/tmp", "/run"):
                tmpfs.append(fields[1])
    return {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "read_only_root": bool(os.statvfs("/").f_flag & os.ST_RDONLY),
        "tmpfs": tmpfs,
        "cap_eff": status.get("CapEff", "?"),
        "no_new_privs": status.get("NoNewPrivs", "?") == "1",
        "rss_kib": int(status.get("VmRSS", "0 kB").split()[0]),
        "threads": int(status.get("Threads", "0")),
        "hostname": socket.gethostname(),
    }


class Board:
    def __init__(self, probes: list[Probe], interval: float, snapshot: str, domain: str) -> None:
        self.probes, self.interval, self.snapshot, self.domain = probes, interval, snapshot, domain
        self.lock = threading.Lock()
        self.results: dict[str, dict[str, object]] = {}
        self.events: list[str] = []  # the last transitions, newest first
        self.rounds = 0
        self.last_round = 0.0
        self.started = time.time()

    def round(self, pool: concurrent.futures.Executor) -> None:
        done = list(pool.map(run_probe, self.probes))
        now = time.time()
        with self.lock:
            for result in done:
                before = self.results.get(str(result["service"]))
                if before is None or before["ok"] != result["ok"]:
                    result["since"] = now
                    result["changes"] = 0 if before is None else int(before["changes"]) + 1
                    word = "up" if result["ok"] else "down"
                    self.events.insert(0, f"{time.strftime('%H:%M:%S', time.gmtime(now))} "
                                          f"{result['service']} {word}: {result['detail']}")  # fmt: skip
                    del self.events[20:]
                else:
                    result["since"], result["changes"] = before["since"], before["changes"]
                self.results[str(result["service"])] = result
            self.rounds += 1
            self.last_round = now
            state = self.state()
        tmp = f"{self.snapshot}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(state, handle)
        os.replace(tmp, self.snapshot)

    def state(self) -> dict[str, object]:
        services = [self.results[p.service] for p in self.probes if p.service in self.results]
        return {
            "domain": self.domain,
            "time": time.time(),
            "rounds": self.rounds,
            "last_round": self.last_round,
            "interval": self.interval,
            "up": sum(1 for s in services if s["ok"]),
            "services": services,
            "events": list(self.events),
            "sandbox": own_sandbox(),
        }

    def fresh(self) -> bool:
        return self.rounds > 0 and time.time() - self.last_round < 3 * self.interval + TIMEOUT

    def page(self) -> str:
        with self.lock:
            state = self.state()
        now = float(state["time"])
        rows = []
        for item in state["services"]:
            ok = bool(item["ok"])
            since = int(now - float(item["since"]))
            rows.append(
                f'<tr class="{"up" if ok else "down"}"><td>{html.escape(str(item["service"]))}</td>'
                f'<td>{"up" if ok else "DOWN"}</td><td><code>{html.escape(str(item["target"]))}</code> '
                f'&rarr; <code>{html.escape(str(item["address"]) or "?")}</code></td>'
                f"<td>{html.escape(str(item['kind']))}</td><td>{html.escape(str(item['detail']))}</td>"
                f'<td class="n">{item["ms"]} ms</td><td class="n">{since} s</td>'
                f'<td class="n">{item["changes"]}</td></tr>'
            )
        sandbox = state["sandbox"]
        events = "".join(f"<li>{html.escape(e)}</li>" for e in state["events"]) or "<li>none yet</li>"
        title = f"Inception status \u2014 {html.escape(self.domain)}"
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{max(1, round(self.interval))}">
<title>{title}</title>
<style>
body {{ font: 15px/1.4 sans-serif; margin: 2em auto; max-width: 70em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }} th, td {{ padding: .3em .6em; text-align: left; }}
tr.up td:nth-child(2) {{ color: #0a7a2f; font-weight: bold; }}
tr.down {{ background: #fde8e8; }} tr.down td:nth-child(2) {{ color: #b00020; font-weight: bold; }}
th {{ border-bottom: 2px solid #ccc; }} td {{ border-bottom: 1px solid #eee; }}
.n {{ text-align: right; white-space: nowrap; }}
</style></head><body>
<h1>{title}</h1>
<p>{state["up"]} of {len(state["services"])} services answer. Probed every {self.interval:g} s by name over the
stack's private network (names from composer's embedded DNS, 127.0.0.11); round {state["rounds"]}.</p>
<table><tr><th>service</th><th>state</th><th>name &rarr; address</th><th>probe</th><th>answer</th>
<th>time</th><th>for</th><th>changes</th></tr>
{"".join(rows)}
</table>
<h2>Last changes</h2><ul>{events}</ul>
<h2>This container</h2>
<p>PID {sandbox["pid"]} (the board itself), uid {sandbox["uid"]}, read-only root: {sandbox["read_only_root"]},
tmpfs: {", ".join(sandbox["tmpfs"]) or "none"}, effective capabilities: {sandbox["cap_eff"]},
no_new_privs: {sandbox["no_new_privs"]}, {sandbox["threads"]} threads, {sandbox["rss_kib"]} KiB resident.</p>
</body></html>
"""


def serve(board: Board, address: str, port: int) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "inception-status"

        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            path = self.path.split("?", 1)[0]
            if path == "/":
                self.reply(200, "text/html; charset=utf-8", board.page())
            elif path == "/status.json":
                with board.lock:
                    body = json.dumps(board.state(), indent=1)
                self.reply(200, "application/json", body)
            elif path == "/healthz":
                fresh = board.fresh()
                self.reply(200 if fresh else 503, "text/plain", "ok\n" if fresh else "stale\n")
            else:
                self.reply(404, "text/plain", "not found\n")

        def reply(self, status: int, kind: str, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            if not self.path.startswith("/healthz"):
                sys.stderr.write(f"board: {self.address_string()} {format % args}\n")

    server = http.server.ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    return server


def check(snapshot: str, port: int) -> int:
    """The healthcheck: a recent round in the snapshot file, and the page server answers."""
    try:
        with open(snapshot, encoding="utf-8") as handle:
            state = json.load(handle)
        age = time.time() - float(state["last_round"])
        if age > 3 * float(state["interval"]) + TIMEOUT:
            print(f"the last round is {age:.0f} s old", file=sys.stderr)
            return 1
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT) as answer:
            return 0 if answer.status == 200 else 1
    except (OSError, ValueError, KeyError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


def main() -> int:
    parser = argparse.ArgumentParser(description="The inception stack's status board.")
    parser.add_argument("--probes", default="/etc/status/probes.conf")
    parser.add_argument("--listen", default="0.0.0.0:8080")
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--snapshot", default="/tmp/status.json")
    parser.add_argument("--check", action="store_true", help="the healthcheck")
    options = parser.parse_args()
    address, _, port = options.listen.rpartition(":")
    if options.check:
        return check(options.snapshot, int(port))

    board = Board(read_probes(options.probes), options.interval, options.snapshot,
                  os.environ.get("DOMAIN_NAME", "localhost"))  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # PID 1 has no default action for SIGTERM
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = serve(board, address, int(port))
    # serve_forever looks for shutdown() between polls: a short poll keeps `composer stop` quick
    web = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="web")
    web.start()
    print(f"board: {len(board.probes)} probes every {options.interval:g} s; serving on {options.listen}",
          file=sys.stderr, flush=True)  # fmt: skip
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(board.probes)) as pool:
        while not stop.is_set():
            started = time.monotonic()
            board.round(pool)
            stop.wait(max(0.0, options.interval - (time.monotonic() - started)))
    server.shutdown()
    web.join()
    server.server_close()
    print("board: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
