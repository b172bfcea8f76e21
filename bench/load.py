"""Loads and what they cost: wrk for closed-loop loads (N connections, each sending its next
request when the last is answered), an open-loop crowd for the flash sale (arrivals at fixed
moments, whatever the answers), and CPU per process while they run."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servers import BIN, HOST, BenchError, Server, cpu_seconds, log, postgres_pids

BENCH = Path(__file__).resolve().parent
LUA = BENCH / "wrk" / "scenario.lua"
IMBALANCE = 0.10  # a worker with less than this share of the server's CPU: the load is rerun
MAX_RERUNS = 2


@dataclass
class Load:
    requests: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors + timeouts + unexpected statuses
    raw: dict[str, Any]
    cpu: dict[str, float] = field(default_factory=dict)


class Meter:
    """CPU used by the servers, PostgreSQL and wrk during one load."""

    def __init__(self, servers: dict[str, Server]) -> None:
        self.servers = servers

    def sample(self) -> dict[str, float]:
        values = {name: cpu_seconds([s.proc.pid, *s.workers()]) for name, s in self.servers.items()}
        for name, server in self.servers.items():  # per worker: is the load spread over both?
            for i, pid in enumerate(server.workers()):
                values[f"{name}_w{i + 1}"] = cpu_seconds([pid])
        values["postgres"] = cpu_seconds(postgres_pids())
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        values["wrk"] = usage.ru_utime + usage.ru_stime
        # Everything the machine did, to tell when other processes competed for the CPUs.
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        values["machine_busy"] = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        return values


def wrk(
    url: str, seconds: float, connections: int, mode: str, expected: int, args: list[str] = (),
    headers: list[str] = (), meter: Meter | None = None, profile_to: Path | None = None,
    profile_pid: int | None = None, profile_mode: str = "cpu",
) -> Load:
    """One wrk load of `url`; with `profile_to`, py-spy samples `profile_pid` meanwhile
    (`profile_mode` cpu: threads holding the GIL; wall: every thread, waiting too)."""
    exe = shutil.which("wrk") or "/usr/bin/wrk"
    threads = max(1, min(2, connections))
    command = [exe, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
               "--timeout", "10s", "--latency", "-s", str(LUA)]
    for header in headers:
        command += ["-H", header]
    command += [url, "--", mode, str(expected), str(threads), *args]
    spy = None
    if profile_to and profile_pid:
        spy = subprocess.Popen(
            [str(BIN / "py-spy"), "record", "--pid", str(profile_pid), "--subprocesses", "--nonblocking",
             *(["--gil"] if profile_mode == "cpu" else ["--idle"]),
             "--rate", "97", "--duration", str(max(1, round(seconds))), "--format", "raw", "--output", str(profile_to)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
    before = meter.sample() if meter else {}
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    after = meter.sample() if meter else {}
    if spy:
        try:
            _, err = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            err = b""
        if spy.returncode:
            log(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-400:]}")
    line = next((out for out in result.stdout.splitlines() if out.startswith("BENCH_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    raw = json.loads(line[len("BENCH_JSON "):])
    raw["wrk_output"] = result.stdout.replace(line, "").strip()
    secs = raw["duration_us"] / 1e6
    errors = (raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
              + max(raw["unexpected"], raw["status_errors"]))
    cpu = {}
    if meter:
        cpu = {name: round(100 * (after[name] - before[name]) / secs, 1) for name in after}  # % of one core
        ours = sum(v for k, v in cpu.items() if k in (*meter.servers, "postgres", "wrk"))
        cpu["other_processes"] = round(max(0.0, cpu.pop("machine_busy") - ours), 1)
    return Load(raw["requests"], secs, raw["requests"] / secs, raw["p50_us"] / 1000, raw["p99_us"] / 1000, errors, raw, cpu)


def worker_share(load: Load, server: str) -> float:
    """The least busy worker's share of the server's worker CPU during the load."""
    workers = [v for k, v in load.cpu.items() if k.startswith(f"{server}_w")]
    total = sum(workers)
    return min(workers) / total if len(workers) > 1 and total > 0 else 1.0


class Runner:
    """Runs loads, reruns one whose server left a worker nearly idle, and keeps every load."""

    def __init__(self, opts: argparse.Namespace, meter: Meter, servers: dict[str, Server]) -> None:
        self.opts = opts
        self.meter = meter
        self.servers = servers
        self.series: dict[str, list[Load]] = {}
        self.reruns: list[str] = []
        self.errors: list[str] = []

    def load(
        self, name: str, server: str, path: str, mode: str = "get", expected: int = 200, *,
        headers: list[str] = (), connections: int | None = None, seconds: float | None = None,
        prepare: Callable[[], tuple[list[str], list[str]]] | None = None,
        after: Callable[[Load], None] | None = None,
    ) -> Load:
        """One measured load of `server` (after a warm-up); `prepare` gives (args, warm-up args)."""
        url = self.servers[server].base + path
        connections = connections or self.opts.connections
        seconds = seconds or self.opts.duration
        for attempt in range(MAX_RERUNS + 1):
            args, warm_args = prepare() if prepare else ([], [])
            if self.opts.warmup:
                wrk(url, self.opts.warmup, connections, mode, expected, warm_args, headers)
            profile_to = BENCH / "results" / f"profile-{name}.raw" if self.opts.profile and server == "shop" else None
            load = wrk(url, seconds, connections, mode, expected, args, headers, self.meter,
                       profile_to, self.servers[server].proc.pid, self.opts.profile_mode)
            if profile_to:
                profile_to.with_suffix(".txt").write_text(summarise_profile(profile_to, self.opts.profile_mode))
            if after:
                after(load)
            share = worker_share(load, server)
            log(f"{name:<22} {load.rate:8,.0f} req/s  p50 {load.p50_ms:6.1f} ms  p99 {load.p99_ms:6.1f} ms"
                f"  errors {load.errors}  least busy worker {share:.0%}")
            if not load.requests:
                self.errors.append(f"{name}: no request finished within {seconds:g} s; raise --duration")
            if load.errors:
                self.errors.append(f"{name}: {load.errors} errors "
                                   f"({json.dumps({k: v for k, v in load.raw.items() if k != 'wrk_output'})})")
            if share >= IMBALANCE or connections < 4 or attempt == MAX_RERUNS:
                break
            self.reruns.append(f"{name}: one worker did {share:.0%} of the CPU, load run again")
            log(f"  {self.reruns[-1]}")
        self.series.setdefault(name, []).append(load)
        return load

    def rates(self, name: str) -> list[float]:
        return [load.rate for load in self.series.get(name, [])]


def summarise_profile(raw_path: Path, mode: str, top: int = 25) -> str:
    """py-spy raw (collapsed) stacks -> the functions with the most samples, self and total."""
    self_samples: Counter[str] = Counter()
    total_samples: Counter[str] = Counter()
    all_samples = 0
    with suppress(OSError):
        for line in raw_path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            all_samples += n
            self_samples[frames[-1]] += n
            for frame in set(frames):
                total_samples[frame] += n
    if not all_samples:
        return f"(no samples in {raw_path.name})\n"
    out = [f"{raw_path.name}: {all_samples} samples ({mode} mode)", "", "self %  function"]
    out += [f"{100 * n / all_samples:6.1f}  {name}" for name, n in self_samples.most_common(top)]
    out += ["", "total %  function (inclusive)"]
    out += [f"{100 * n / all_samples:6.1f}  {name}" for name, n in total_samples.most_common(top * 2)]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- an open-loop crowd


@dataclass(frozen=True)
class Arrival:
    """One shopper's click: a request sent at `at` seconds into the crowd, whatever came before."""

    at: float
    request: bytes


@dataclass
class Answer:
    started: float  # seconds after the crowd's start, as sent
    seconds: float  # until the answer's status line and headers, or until it failed
    status: int | None = None  # None: no answer (see `failure`)
    location: str = ""
    body: str = ""
    failure: str = ""  # "timeout", "reset", "refused", ...


@dataclass
class Crowd:
    answers: list[Answer]
    seconds: float  # from the first arrival to the last answer
    cpu: dict[str, float] = field(default_factory=dict)

    def latencies(self, ok: Callable[[Answer], bool]) -> list[float]:
        return sorted(a.seconds for a in self.answers if ok(a))

    def codes(self) -> dict[str, int]:
        return dict(Counter(str(a.status) if a.status else a.failure for a in self.answers))


def http_request(method: str, path: str, headers: dict[str, str], body: str = "") -> bytes:
    """An HTTP/1.1 request that closes its connection, as one browser click."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


async def _send(port: int, arrival: Arrival, start: float, timeout: float) -> Answer:
    await asyncio.sleep(max(0.0, start + arrival.at - time.monotonic()))
    sent = time.monotonic()
    answer = Answer(started=sent - start, seconds=0.0)
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(arrival.request)
            await writer.drain()
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            answer.seconds = time.monotonic() - sent
            status_line, *header_lines = head.split("\r\n")
            answer.status = int(status_line.split()[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
            answer.location = headers.get("location", "")
            answer.body = (await reader.read(200_000)).decode(errors="replace")
    except TimeoutError:
        answer.failure = "timeout"
    except ConnectionRefusedError:
        answer.failure = "refused"
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        answer.failure = f"reset ({type(exc).__name__})"
    except OSError as exc:
        answer.failure = f"socket error ({exc.strerror or type(exc).__name__})"
    finally:
        if answer.status is None:
            answer.seconds = time.monotonic() - sent
        if writer is not None:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()
    return answer


def crowd(port: int, arrivals: Sequence[Arrival], timeout: float, meter: Meter | None = None) -> Crowd:
    """Send every arrival at its moment on a connection of its own (open loop); wait for all answers.

    A browser waits for its answer however long it takes; `timeout` is where a shopper gives up.
    """

    async def everyone() -> list[Answer]:
        start = time.monotonic() + 0.2
        return await asyncio.gather(*(_send(port, arrival, start, timeout) for arrival in arrivals))

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a socket for every shopper still waiting
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    before = meter.sample() if meter else {}
    t0 = time.monotonic()
    answers = asyncio.run(everyone())
    seconds = max((a.started + a.seconds for a in answers), default=0.0) - min((a.started for a in answers), default=0.0)
    after = meter.sample() if meter else {}
    elapsed = time.monotonic() - t0
    cpu = {name: round(100 * (after[name] - before[name]) / elapsed, 1) for name in after if name != "machine_busy"}
    return Crowd(answers, seconds, cpu)
