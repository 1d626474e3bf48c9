"""``fleet bench live``: websocket clients receiving live frames while fixes flow.

Everything runs on this machine: Mosquitto and an embedded PostgreSQL (unless given),
the API as its own process (``fleet api``), a publisher process sending fixes as
``svc-gateway`` at a fixed rate (QoS 1, one fix per message, ``ts`` = the publish time
in epoch ms), and N websocket clients in this process.  Every ``measure_every``-th
client (default every 10th: the clients share this machine's two cores with the system
under test, and JSON-decoding 800 frames of ~130 KB a second would take half a core)
decodes each delta and records, for every van in it, ``receive time - fix ts``: the fix's
whole way from publish through broker, API, coalescing and fan-out to the client.  The
other clients receive and count every frame.  Clients closed (1013 or otherwise) before
the end count as dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from pathlib import Path

import httpx
import msgspec
import numpy as np
import numpy.typing as npt
import psycopg
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from api.tokens import Role, create_token
from broker.runner import MosquittoBroker
from devtools.api_child import ApiChild
from devtools.metrics_text import metric_value
from devtools.processes import ChildProcess, cpu_seconds
from fleet.storage.embedded import EmbeddedPostgres, free_port
from fleet.storage.migrate import migrate
from mqtt5 import Publisher

__all__ = ["BenchOptions", "run_bench"]

ROUTES = tuple(f"R{n:02d}" for n in range(1, 21))


@dataclass(frozen=True)
class BenchOptions:
    clients: int = 200
    rate: int = 5000
    vans: int = 2000
    duration_s: float = 20.0
    warmup_s: float = 5.0
    dsn: str | None = None
    mqtt_port: int | None = None
    data_dir: Path | None = None
    interval_ms: int = 250
    measure_every: int = 10  # every Nth client decodes and times every van it receives
    bbox_km: float = 0.0  # > 0: each client filters its own square neighbourhood this wide
    seed: int = 1


class _Van(msgspec.Struct):
    ts: int


class _Frame(msgspec.Struct):
    type: str
    ts: int = 0
    vehicles: list[_Van] = msgspec.field(default_factory=list)


_decode = msgspec.json.Decoder(_Frame).decode
DELTA_PREFIX = b'{"type":"delta"'


@dataclass
class _Clients:
    measuring: bool = False
    samples: list[npt.NDArray[np.int32]] = field(default_factory=list)
    frame_delays: list[float] = field(default_factory=list)  # frame ts → client receive
    frames: int = 0
    closed: dict[int, int] = field(default_factory=dict)  # client index → close code
    connected: int = 0


# -- where the vans are: a grid of 100 rows (222 m apart) by vans/100 columns (445 m) ---

LAT0, LAT_STEP, LON0, LON_STEP, ROWS = -5.2, 0.002, 119.38, 0.004, 100


def client_bboxes(opts: BenchOptions) -> list[list[float] | None]:
    """Each client's ``[minLon, minLat, maxLon, maxLat]``: a ``bbox_km`` square centred on
    a random point of the fleet's area (None: no filter, every van)."""
    if opts.bbox_km <= 0:
        return [None] * opts.clients
    rng = np.random.default_rng(opts.seed)
    lat = rng.uniform(LAT0, LAT0 + LAT_STEP * min(ROWS, opts.vans), opts.clients)
    lon = rng.uniform(LON0, LON0 + LON_STEP * -(-opts.vans // ROWS), opts.clients)
    half_lat = opts.bbox_km / 2 / 111.195
    half_lon = half_lat / np.cos(np.radians(lat))
    return [
        [
            float(lon[i] - half_lon[i]),
            float(lat[i] - half_lat),
            float(lon[i] + half_lon[i]),
            float(lat[i] + half_lat),
        ]
        for i in range(opts.clients)
    ]


# -- publisher process ------------------------------------------------------------------


def _publish(port: int, password: str, rate: int, vans: int, seconds: float, out: Queue) -> None:  # type: ignore[type-arg]
    # mqtt5's lean publisher: paho at 5,000 messages/s would take a third of a core
    # away from the system under test on this 2-core box.
    pub = Publisher(f"bench-pub-{os.getpid()}", "svc-gateway", password)
    pub.connect("127.0.0.1", port)
    topics = [f"fleet/bench-{i:05d}/telemetry" for i in range(vans)]
    sent = 0
    start = time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end:
        due = int((now - start) * rate)
        ts = int(time.time() * 1000)
        burst = []
        while sent < due:
            i = sent % vans
            step = sent // vans
            payload = (
                f'{{"ts":{ts},"lat":{LAT0 + (i % ROWS) * LAT_STEP + (step % 50) * 1e-5:.6f},'
                f'"lon":{LON0 + (i // ROWS) * LON_STEP:.6f},"speed":{(step % 15) * 1.0:.1f},'
                f'"heading":{(i * 7) % 360}.0,"route":"{ROUTES[i % len(ROUTES)]}"}}'
            )
            burst.append((topics[i], payload.encode()))
            sent += 1
        if burst:
            pub.publish_many(burst)
        pub.pump(0.004)
    elapsed = time.monotonic() - start
    pub.wait_acked(timeout=10)
    pub.close()
    out.put((sent, elapsed, pub.acked))


# -- websocket clients ------------------------------------------------------------------


CLOSE_RATE_LIMITED = 4429  # the API's failed-authentication limit (lookups in flight count)
CONNECT_ATTEMPTS = 20


async def _client(
    index: int,
    url: str,
    headers: dict[str, str],
    state: _Clients,
    stop: asyncio.Event,
    measure: bool,
    bbox: list[float] | None,
) -> None:
    """One client; refused at the door (4429: too many token lookups in flight from this
    one address, as a thousand clients on 127.0.0.1 are), it retries like a browser."""
    rng = np.random.default_rng(index)
    for _ in range(CONNECT_ATTEMPTS):
        code = await _session(url, headers, state, stop, measure, bbox)
        if code != CLOSE_RATE_LIMITED or stop.is_set():
            break
        await asyncio.sleep(float(rng.uniform(0.2, 1.0)))
    if code is not None and not stop.is_set():
        state.closed[index] = code


async def _session(
    url: str,
    headers: dict[str, str],
    state: _Clients,
    stop: asyncio.Event,
    measure: bool,
    bbox: list[float] | None,
) -> int | None:
    """Connect and receive until ``stop``; the close code if the server closed first."""
    try:
        async with connect(
            url,
            additional_headers=headers,
            compression=None,
            max_size=None,
            ping_interval=None,
            open_timeout=60,
        ) as ws:
            await ws.recv(decode=False)  # the snapshot: in (a refusal closes instead)
            if bbox is not None:
                await ws.send(msgspec.json.encode({"type": "filter", "bbox": bbox}), text=True)
            state.connected += 1
            while not stop.is_set():
                try:
                    async with asyncio.timeout(1):
                        raw = await ws.recv(decode=False)
                except TimeoutError:
                    continue
                received = time.time() * 1000
                if not state.measuring or not raw.startswith(DELTA_PREFIX):
                    continue
                if not measure:
                    state.frames += 1
                    continue
                frame = _decode(raw)
                state.frames += 1
                state.frame_delays.append(received - frame.ts)
                ts = np.fromiter((v.ts for v in frame.vehicles), np.float64, len(frame.vehicles))
                state.samples.append((received - ts).astype(np.int32))
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else 1006
    except OSError:
        return 1006
    return None


async def _run_clients(
    url: str,
    headers: dict[str, str],
    bboxes: list[list[float] | None],
    measure_every: int,
    state: _Clients,
    stop: asyncio.Event,
    ready: asyncio.Event,
) -> None:
    tasks = []
    n = len(bboxes)
    for i, bbox in enumerate(bboxes):
        measure = i % measure_every == 0
        tasks.append(asyncio.create_task(_client(i, url, headers, state, stop, measure, bbox)))
        if i % 20 == 19:
            await asyncio.sleep(0.05)  # do not stampede the accept queue
    deadline = time.monotonic() + 60
    while state.connected + len(state.closed) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    ready.set()
    await asyncio.gather(*tasks)


# -- orchestration ----------------------------------------------------------------------


def runqueue_wait_s(pid: int | None) -> float:
    """Seconds the process's threads spent runnable but not running (scheduler run-queue
    wait, ``/proc/<pid>/task/*/schedstat``): on a shared machine, the time others took."""
    if pid is None:
        return 0.0
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(stat.read_text().split()[1])
    return total / 1e9


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (it is, with uvicorn[standard]): the clients need the speed."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_bench(opts: BenchOptions) -> Iterator[str]:
    own_root = opts.data_dir is None
    root = opts.data_dir or Path(tempfile.mkdtemp(prefix="fleet-bench-live-"))
    root.mkdir(parents=True, exist_ok=True)
    broker: MosquittoBroker | None = None
    pg: EmbeddedPostgres | None = None
    api: ChildProcess | None = None
    try:
        if opts.mqtt_port is None:
            broker = MosquittoBroker(root / "broker-state", port=free_port())
            broker.start()
            creds = broker.layout.service_credentials()
            mqtt_port = broker.port
        else:
            from broker.runner import BrokerLayout  # noqa: PLC0415

            creds = BrokerLayout(root).service_credentials()
            mqtt_port = opts.mqtt_port
        dsn = opts.dsn
        if dsn is None:
            pg = EmbeddedPostgres(root / "postgres", port=free_port())
            pg.start()
            dsn = pg.dsn
        migrate(dsn)
        with psycopg.connect(dsn) as conn:
            _, token = create_token(conn, "bench-live", Role.VIEWER)
        yield f"broker 127.0.0.1:{mqtt_port}, database {dsn}"

        api = ApiChild(
            dsn,
            mqtt_port,
            creds["svc-api"],
            root / "api.log",
            {
                "FLEET_WS_INTERVAL_MS": str(opts.interval_ms),
                # all clients share one token
                "FLEET_WS_MAX_PER_TOKEN": str(max(1, opts.clients)),
            },
        )
        api.start()
        port, base = api.port, api.base
        yield f"api {base} (pid {api.pid}); connecting {opts.clients} websocket clients"

        pids: dict[str, int | None] = {"API": api.pid}
        if broker is not None and broker.proc is not None:
            pids["Mosquitto"] = broker.proc.pid
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            state, result = runner.run(_measure(opts, port, token, mqtt_port, creds, pids))
        yield from result
        metrics = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}).text
        server_dropped = int(metric_value(metrics, "fleet_api_ws_dropped_clients_total"))
        dropped = max(len(state.closed), server_dropped)
        samples = np.concatenate(state.samples) if state.samples else np.zeros(1, np.int32)
        p50, p99 = np.percentile(samples, [50, 99])
        f50, f99 = np.percentile(np.asarray(state.frame_delays or [0.0]), [50, 99])
        per_delta = samples.size / max(1, len(state.frame_delays))
        yield (
            f"of which frame built → client received: p50_ms={f50:.0f} p99_ms={f99:.0f} "
            f"(fan-out to {opts.clients} sockets and the clients' own decoding); "
            f"{per_delta:.0f} vans per delta"
            + (f" (a {opts.bbox_km:g} km box each)" if opts.bbox_km > 0 else "")
        )
        published, elapsed = result.published, result.elapsed
        yield (
            f"clients={opts.clients} rate={published / elapsed:.0f} "
            f"p50_ms={p50:.0f} p99_ms={p99:.0f} dropped_clients={dropped}"
        )
    finally:
        if api is not None:
            api.stop()
        if pg is not None:
            pg.stop()
        if broker is not None:
            broker.stop()
        if own_root:
            shutil.rmtree(root, ignore_errors=True)


class _Result(list[str]):
    published: int = 0
    elapsed: float = 1.0


async def _measure(
    opts: BenchOptions,
    port: int,
    token: str,
    mqtt_port: int,
    creds: dict[str, str],
    pids: dict[str, int | None],
) -> tuple[_Clients, _Result]:
    result = _Result()
    state = _Clients()
    stop, ready = asyncio.Event(), asyncio.Event()
    url = f"ws://127.0.0.1:{port}/ws/live"
    headers = {"Authorization": f"Bearer {token}"}
    clients = asyncio.create_task(
        _run_clients(url, headers, client_bboxes(opts), opts.measure_every, state, stop, ready)
    )
    await ready.wait()
    result.append(f"{state.connected} clients connected; publishing {opts.rate} fixes/s")
    ctx = mp.get_context("spawn")
    out: Queue = ctx.Queue()  # type: ignore[type-arg]
    seconds = opts.warmup_s + opts.duration_s + 0.5
    pub = ctx.Process(
        target=_publish,
        args=(mqtt_port, creds["svc-gateway"], opts.rate, opts.vans, seconds, out),
        daemon=True,
    )
    pub.start()
    await asyncio.sleep(opts.warmup_s)
    pids = {**pids, "publisher": pub.pid}
    pids = {**pids, "clients": os.getpid()}
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    wait0 = {name: runqueue_wait_s(pid) for name, pid in pids.items()}
    own0, t0 = time.process_time(), time.monotonic()
    state.measuring = True
    await asyncio.sleep(opts.duration_s)
    state.measuring = False
    cpu1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    wait1 = {name: runqueue_wait_s(pid) for name, pid in pids.items()}
    own1, t1 = time.process_time(), time.monotonic()
    load = os.getloadavg()[0]
    published, elapsed, acked = await asyncio.to_thread(out.get, True, 60)
    if acked < published:
        result.append(f"warning: the broker acknowledged only {acked} of {published} fixes")
    result.published, result.elapsed = published, elapsed
    await asyncio.to_thread(pub.join, 10)
    stop.set()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            await clients
    served = [n for n in pids if n != "clients"]
    result.append(
        f"measured {opts.duration_s:.0f} s: {state.frames} delta frames received, "
        "CPU (% of one core): "
        + ", ".join(f"{n} {100 * (cpu1[n] - cpu0[n]) / (t1 - t0):.0f}%" for n in served)
        + f", websocket clients {100 * (own1 - own0) / (t1 - t0):.0f}%; load average {load:.1f}"
    )
    result.append(
        "runnable but waiting for a CPU (ms per s, all threads): "
        + ", ".join(f"{n} {1000 * (wait1[n] - wait0[n]) / (t1 - t0):.0f}" for n in pids)
    )
    return state, result
