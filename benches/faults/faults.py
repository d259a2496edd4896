#!/usr/bin/env python3
"""Faults and floods against a release `tessera serve` on loopback, the
load generator included. Standard library only. Prints Markdown for
docs/benchmarks.md.

    cargo build --release -p tessera-cli
    python3 benches/faults/faults.py slowloris   # slow, silent, idle, trickling clients
    python3 benches/faults/faults.py logins      # a flood of password logins
    python3 benches/faults/faults.py growth [MINUTES]  # database size under load
    python3 benches/faults/faults.py firstseconds URL  # token latency right after a start, on PostgreSQL

TESSERA_BIN names another build (A/B runs).
"""

import asyncio
import base64
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("TESSERA_BIN", os.path.join(ROOT, "target", "release", "tessera"))


class Server:
    """`tessera serve` in a temporary directory."""

    def __init__(self, config="", env=None):
        if not os.path.exists(BIN):
            sys.exit("build it first: cargo build --release -p tessera-cli")
        self.dir = tempfile.mkdtemp(prefix="tessera-faults-")
        self.env = env or {}
        with open(os.path.join(self.dir, "tessera.toml"), "w") as f:
            f.write(config)
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:0", "--config", "tessera.toml"],
            cwd=self.dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TESSERA_LOG": "warn", **(env or {})},
            text=True,
        )
        for line in self.proc.stdout:
            if line.startswith("tessera: listening "):
                host, port = line.split()[2].rsplit(":", 1)
                self.host, self.port = host, int(port)
                break
        else:
            sys.exit("the server did not start")

    def admin(self, *args, stdin=None):
        out = subprocess.run(
            [BIN, *args, "--config", "tessera.toml"],
            cwd=self.dir,
            env={**os.environ, **self.env},
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


async def request(server, method, path, body=b"", headers=None, timeout=30):
    """One request on a new connection: (status, body, seconds)."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = [f"{method} {path} HTTP/1.1", "Host: x", "Connection: close"]
    for name, value in (headers or {}).items():
        head.append(f"{name}: {value}")
    if body:
        head.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    status = int(answer.split(b" ", 2)[1]) if answer else 0
    return status, answer.split(b"\r\n\r\n", 1)[-1], time.perf_counter() - started


def form(**fields):
    return urllib.parse.urlencode(fields).encode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def basic(client_id, secret):
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------- slowloris


async def hold(server, group, opened, closed, prologue=b"", drip=None):
    """A connection that sends `prologue`, then `drip` once a second (if
    any), until the server closes it; records when."""
    try:
        reader, writer = await asyncio.open_connection(server.host, server.port)
    except OSError:
        return
    started = time.perf_counter()
    opened[group] += 1
    if prologue:
        writer.write(prologue)
        await writer.drain()
    if prologue.startswith(b"GET /healthz") and b"keep-alive" in prologue:
        await reader.readuntil(b"ok\n")
    while True:
        try:
            data = await asyncio.wait_for(reader.read(1024), 1.0)
            if not data:
                break
        except asyncio.TimeoutError:
            if drip:
                try:
                    writer.write(drip)
                    await writer.drain()
                except (ConnectionError, OSError):
                    break
        except (ConnectionError, OSError):
            break
    closed[group].append(time.perf_counter() - started)
    writer.close()


async def slowloris():
    raise_nofile()
    server = Server()
    svc = json.loads(server.admin("client", "add", "svc", "--grant", "client_credentials", "--scope", "read", "--json"))
    creds = basic(svc["client_id"], svc["client_secret"])
    groups = {
        "slow headers, 1 byte/s": (500, b"GET /healthz HTTP/1.1\r\nX-Slow: ", b"a"),
        "silent (no byte sent)": (200, b"", None),
        "idle keep-alive after one request": (2000, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", None),
        "body trickled, 1 byte/s": (50, b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n", b"a"),
    }
    opened = {g: 0 for g in groups}
    closed = {g: [] for g in groups}
    tasks = []
    for group, (count, prologue, drip) in groups.items():
        for _ in range(count):
            tasks.append(asyncio.create_task(hold(server, group, opened, closed, prologue, drip)))
        await asyncio.sleep(0.2)
    healthz, tokens = [], []
    started = time.perf_counter()
    still_open_at = {}
    while time.perf_counter() - started < 85:
        status, _, took = await request(server, "GET", "/healthz")
        assert status == 200, status
        healthz.append(took)
        status, _, took = await request(server, "POST", "/oauth2/token", form(grant_type="client_credentials"), {**FORM, **creds})
        assert status == 200, status
        tokens.append(took)
        elapsed = time.perf_counter() - started
        for mark in (35, 80):
            if elapsed >= mark and mark not in still_open_at:
                still_open_at[mark] = {g: opened[g] - len(closed[g]) for g in groups}
        await asyncio.sleep(0.5)
    for t in tasks:
        t.cancel()
    print(f"server: header_timeout 30 s, request_timeout 30 s (defaults); {BIN}")
    print()
    print("| clients | opened | still open at 35 s | at 80 s | closed after (median) |")
    print("|---|---|---|---|---|")
    for g in groups:
        med = statistics.median(closed[g]) if closed[g] else float("nan")
        print(f"| {g} | {opened[g]} | {still_open_at[35][g]} | {still_open_at[80][g]} | {med:.1f} s |")
    print()
    print(f"meanwhile, new clients on new connections ({len(healthz)} each):")
    print(f"- GET /healthz: p50 {ms(pct(healthz, 50))}, max {ms(max(healthz))}")
    print(f"- client_credentials token: p50 {ms(pct(tokens, 50))}, max {ms(max(tokens))}")
    print(f"- server RSS at the end: {server.rss_mib():.1f} MiB")
    server.stop()


# ---------------------------------------------------------------- logins


def probe_healthz(host, port, stop, out):
    """GET /healthz every 20 ms on a new connection until `stop`; the
    latencies, to `out`."""
    import socket

    took = []
    while not stop.is_set():
        started = time.perf_counter()
        with socket.create_connection((host, port)) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while s.recv(4096):
                pass
        took.append(time.perf_counter() - started)
        time.sleep(0.02)
    out.put(took)


async def logins():
    raise_nofile()
    # No failed-login limit, so the flood measures the hashing queue alone.
    server = Server("[logins]\nmax_failures = 0\n")
    server.admin("user", "add", "alice", "--password-stdin", "--scope", "read", stdin="correct horse\n")
    web = json.loads(server.admin("client", "add", "web", "--grant", "password", "--public", "--scope", "read", "--json"))
    body = form(grant_type="password", client_id=web["client_id"], username="alice", password="correct horse")
    rss_before = server.rss_mib()
    results = []

    async def one():
        results.append(await request(server, "POST", "/oauth2/token", body, FORM, timeout=120))

    # The probe runs in a process of its own, so that what it measures is
    # the server, not this process's event loop busy with the flood.
    probes = multiprocessing.Queue()
    stop = multiprocessing.Event()
    prober = multiprocessing.Process(target=probe_healthz, args=(server.host, server.port, stop, probes))
    prober.start()
    time.sleep(0.3)
    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(850)))
    flood = time.perf_counter() - started
    stop.set()
    healthz = probes.get()
    prober.join()
    rss_after = server.rss_mib()
    ok = [r[2] for r in results if r[0] == 200]
    busy = [r[2] for r in results if r[0] == 503]
    other = [r[0] for r in results if r[0] not in (200, 503)]
    # A legitimate login right after the flood.
    _, _, after = await request(server, "POST", "/oauth2/token", body, FORM)
    server.stop()

    # The failed-login limit under concurrency, with the defaults.
    server = Server()
    server.admin("user", "add", "bob", "--password-stdin", "--scope", "read", stdin="battery staple\n")
    web = json.loads(server.admin("client", "add", "web", "--grant", "password", "--public", "--scope", "read", "--json"))
    wrong = form(grant_type="password", client_id=web["client_id"], username="bob", password="wrong guess")
    guesses = await asyncio.gather(*(request(server, "POST", "/oauth2/token", wrong, FORM) for _ in range(40)))
    checked = sum(1 for g in guesses if g[0] == 400)
    limited = sum(1 for g in guesses if g[0] == 429)
    server.stop()

    cores = os.cpu_count()
    print(f"850 simultaneous password logins (correct password, Argon2id m=19 MiB t=2; {cores} cores, queue 40 per core):")
    print()
    print("| answer | count | latency p50 | p99 | max |")
    print("|---|---|---|---|---|")
    print(f"| 200 (checked) | {len(ok)} | {ms(pct(ok, 50))} | {ms(pct(ok, 99))} | {ms(max(ok) if ok else 0)} |")
    print(f"| 503 + Retry-After (queue full) | {len(busy)} | {ms(pct(busy, 50))} | {ms(pct(busy, 99))} | {ms(max(busy) if busy else 0)} |")
    if other:
        print(f"| other | {len(other)} | {sorted(set(other))} | | |")
    print()
    print(f"- whole flood answered in {flood:.1f} s; a login right after: {ms(after)}")
    print(f"- GET /healthz during the flood ({len(healthz)} probes): p50 {ms(pct(healthz, 50))}, p99 {ms(pct(healthz, 99))}, max {ms(max(healthz))}")
    print(f"- server RSS: {rss_before:.1f} MiB before, {rss_after:.1f} MiB after")
    print(f"- 40 simultaneous wrong passwords for one user (limit 5 per 5 min): {checked} checked, {limited} answered 429")


# ---------------------------------------------------------------- growth


async def growth(minutes):
    server = Server(
        "[audit]\nretain = \"2m\"\n[tokens]\nrefresh_ttl = \"2m\"\nsession_max = \"3m\"\n"
        # The sessions are one user's, rotating as fast as they can: past
        # the user's allowance, so none.
        "refreshes_per_minute = 0\n"
        # Eight sessions log in at once from one address.
        "[logins]\nmax_failures = 0\n"
    )
    svc = json.loads(server.admin("client", "add", "svc", "--grant", "client_credentials", "--scope", "read", "--json"))
    creds = basic(svc["client_id"], svc["client_secret"])
    server.admin("user", "add", "alice", "--password-stdin", "--scope", "read", stdin="correct horse\n")
    web = json.loads(server.admin("client", "add", "web", "--grant", "password", "--grant", "refresh_token", "--public", "--scope", "read", "--json"))
    db = os.path.join(server.dir, "tessera-data", "tessera.db")

    def size_mib():
        return sum(os.path.getsize(db + s) for s in ("", "-wal") if os.path.exists(db + s)) / 2**20

    stop = time.perf_counter() + minutes * 60
    counts = {"tokens": 0, "refreshes": 0}

    async def tokens():
        while time.perf_counter() < stop:
            status, _, _ = await request(server, "POST", "/oauth2/token", form(grant_type="client_credentials"), {**FORM, **creds})
            counts["tokens"] += status == 200

    async def sessions():
        login = form(grant_type="password", client_id=web["client_id"], username="alice", password="correct horse")
        while time.perf_counter() < stop:
            status, body, _ = await request(server, "POST", "/oauth2/token", login, FORM)
            if status != 200:
                await asyncio.sleep(0.5)
                continue
            token = json.loads(body)["refresh_token"]
            for _ in range(50):
                status, body, _ = await request(server, "POST", "/oauth2/token", form(grant_type="refresh_token", client_id=web["client_id"], refresh_token=token), FORM)
                if status != 200:
                    break
                counts["refreshes"] += 1
                token = json.loads(body)["refresh_token"]

    async def sample():
        rows = []
        started = time.perf_counter()
        while time.perf_counter() < stop:
            rows.append((time.perf_counter() - started, size_mib(), counts["tokens"], counts["refreshes"]))
            await asyncio.sleep(30)
        return rows

    results = await asyncio.gather(sample(), *(tokens() for _ in range(8)), *(sessions() for _ in range(8)))
    rows = results[0]
    print("retention 2 min for audit events and refresh tokens (sessions 3 min); 8 token and 8 refresh clients:")
    print()
    print("| minute | database + WAL | access tokens so far | refreshes so far |")
    print("|---|---|---|---|")
    for at, size, t, r in rows:
        print(f"| {at / 60:.1f} | {size:.1f} MiB | {t:,} | {r:,} |")
    server.stop()


# ---------------------------------------------------------------- first seconds


async def firstseconds(url, starts=5, seconds=20, clients=32):
    """Start the server on the PostgreSQL database `url` (emptied first)
    `starts` times; each time, `clients` loops ask for tokens from the
    first moment for `seconds`. The slowest requests show connections
    being opened under load."""
    import uuid

    rows = []
    for start in range(starts):
        schema = "faults_" + uuid.uuid4().hex[:8]
        subprocess.run(["psql", "-q", "-d", url, "-c", f"CREATE SCHEMA {schema}"], check=True)
        sep = "&" if "?" in url else "?"
        env = {"TESSERA_DATABASE_URL": f"{url}{sep}options=-c%20search_path%3D{schema}", "TESSERA_MASTER_KEY": "q6sFQ0y1mJmQ4f3xk0PEXW0ZCb8oN3b0nq7yWg1M0aQ"}
        # Set up with one server, measure a fresh one on the same database.
        setup = Server(env=env)
        svc = json.loads(setup.admin("client", "add", "svc", "--grant", "client_credentials", "--scope", "read", "--json"))
        setup.stop()
        creds = basic(svc["client_id"], svc["client_secret"])
        server = Server(env=env)
        server.env = env
        took = []
        stop = time.perf_counter() + seconds

        async def loop():
            while time.perf_counter() < stop:
                status, _, t = await request(server, "POST", "/oauth2/token", form(grant_type="client_credentials"), {**FORM, **creds})
                assert status == 200, status
                took.append(t)

        await asyncio.gather(*(loop() for _ in range(clients)))
        server.stop()
        subprocess.run(["psql", "-q", "-d", url, "-c", f"DROP SCHEMA {schema} CASCADE"], check=True)
        slow = sum(1 for t in took if t > 0.05)
        rows.append((start + 1, len(took), pct(took, 50), pct(took, 99), max(took), slow))
    print(f"{clients} clients asking for tokens from the first moment after a start, {seconds} s each, PostgreSQL:")
    print()
    print("| start | requests | p50 | p99 | max | over 50 ms |")
    print("|---|---|---|---|---|---|")
    for n, count, p50, p99, top, slow in rows:
        print(f"| {n} | {count:,} | {ms(p50)} | {ms(p99)} | {ms(top)} | {slow} |")


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "slowloris"
    if what == "slowloris":
        asyncio.run(slowloris())
    elif what == "logins":
        asyncio.run(logins())
    elif what == "firstseconds":
        asyncio.run(firstseconds(sys.argv[2] if len(sys.argv) > 2 else "postgres://postgres@127.0.0.1:5432/test"))
    elif what == "growth":
        asyncio.run(growth(float(sys.argv[2]) if len(sys.argv) > 2 else 8))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
