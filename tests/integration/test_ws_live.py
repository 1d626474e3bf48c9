"""The live websocket against a real app: uvicorn, Mosquitto and PostgreSQL."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from websockets.exceptions import ConnectionClosed

from api.app import create_app
from broker.runner import MosquittoBroker
from fleet.settings import ApiSettings
from tests.fixtures.api import (
    Gateway,
    StalledClient,
    make_token,
    now_ms,
    recv_json,
    recv_until,
    running_api,
    ws_connect,
)
from tests.fixtures.mqtt import add_device
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.timeout(60)


def _ids(frame: dict) -> set[str]:
    return {v["id"] for v in frame["vehicles"]}


def test_no_token_or_bad_token_is_refused_with_4401(db_dsn: str, broker: MosquittoBroker) -> None:
    with running_api(db_dsn, broker) as api:
        for token in (None, "flt_not-a-real-token"):
            ws = ws_connect(api, token)
            with pytest.raises(ConnectionClosed) as err:
                ws.recv(timeout=5)  # closed before any frame
            assert err.value.rcvd is not None
            assert err.value.rcvd.code == 4401


def test_revoked_token_is_refused(db_dsn: str, broker: MosquittoBroker) -> None:
    token = make_token(db_dsn)
    with psycopg.connect(db_dsn) as conn:
        conn.execute("UPDATE api_tokens SET revoked_at = now()")
    with running_api(db_dsn, broker) as api:
        ws = ws_connect(api, token)
        with pytest.raises(ConnectionClosed) as err:
            ws.recv(timeout=5)
        assert err.value.rcvd is not None and err.value.rcvd.code == 4401


def test_snapshot_then_coalesced_deltas(db_dsn: str, broker: MosquittoBroker) -> None:
    token = make_token(db_dsn)
    gw = Gateway(broker)
    with running_api(db_dsn, broker, ws_interval_ms=200) as api:
        t0 = now_ms()
        gw.fix("van-a", t0, -5.14, 119.41, speed=5.0, heading=90.0)
        gw.fix("van-b", t0, -5.15, 119.42, route="C2")
        wait_for(lambda: len(api.hub().state.vans) == 2, 5, "fixes to reach the live state")

        ws = ws_connect(api, token)
        snap = recv_json(ws)
        assert snap["type"] == "snapshot"
        assert _ids(snap) == {"van-a", "van-b"}
        a = next(v for v in snap["vehicles"] if v["id"] == "van-a")
        assert a == {
            "id": "van-a", "route": "B1", "ts": t0, "lat": -5.14, "lon": 119.41,
            "speed": 5.0, "heading": 90.0, "status": "online",
        }  # fmt: skip

        # Three fixes of one van inside one interval arrive as one delta with the latest.
        for i in range(1, 4):
            gw.fix("van-a", t0 + i * 10, -5.14 + i * 0.001, 119.41)
        delta = recv_until(ws, lambda f: f["type"] == "delta" and f["vehicles"][0]["ts"] == t0 + 30)
        assert _ids(delta) == {"van-a"}  # van-b did not move
        assert delta["vehicles"][0]["lat"] == pytest.approx(-5.137)

        # Frames are at most one per interval: count frames while 40 fixes stream in.
        received: list[float] = []
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                try:
                    frame = recv_json(ws, 0.5)
                except TimeoutError:
                    continue
                if frame["type"] == "delta":
                    received.append(time.monotonic())

        th = threading.Thread(target=reader)
        th.start()
        start = time.monotonic()
        for i in range(40):
            gw.fix("van-b", t0 + 100 + i, -5.15, 119.42 + i * 1e-4, route="C2")
            time.sleep(0.02)
        time.sleep(0.5)
        stop.set()
        th.join()
        elapsed = time.monotonic() - start
        assert received, "no delta while van-b moved"
        assert len(received) <= elapsed / 0.2 + 2
        gaps = [b - a for a, b in zip(received, received[1:], strict=False)]
        assert all(g >= 0.15 for g in gaps), gaps
    gw.close()


def test_filter_change_on_open_socket(db_dsn: str, broker: MosquittoBroker) -> None:
    token = make_token(db_dsn)
    gw = Gateway(broker)
    with running_api(db_dsn, broker, ws_interval_ms=100) as api:
        t0 = now_ms()
        gw.fix("b1-x", t0, -5.10, 119.40, route="B1")
        gw.fix("b1-y", t0, -5.20, 119.50, route="B1")
        gw.fix("c2-x", t0, -5.10, 119.40, route="C2")
        wait_for(lambda: len(api.hub().state.vans) == 3, 5, "fixes")
        ws = ws_connect(api, token)
        assert _ids(recv_json(ws)) == {"b1-x", "b1-y", "c2-x"}

        ws.send('{"type": "filter", "routes": ["B1"], "bbox": null}')
        snap = recv_until(ws, lambda f: f["type"] == "snapshot")
        assert _ids(snap) == {"b1-x", "b1-y"}
        gw.fix("c2-x", t0 + 1, -5.11, 119.40, route="C2")
        gw.fix("b1-x", t0 + 1, -5.11, 119.40, route="B1")
        delta = recv_until(ws, lambda f: f["type"] == "delta")
        assert _ids(delta) == {"b1-x"}

        # Bounding box around b1-y only; b1-x moving outside it stays invisible...
        ws.send('{"type": "filter", "routes": null, "bbox": [119.45, -5.25, 119.55, -5.15]}')
        snap = recv_until(ws, lambda f: f["type"] == "snapshot")
        assert _ids(snap) == {"b1-y"}
        gw.fix("b1-x", t0 + 2, -5.12, 119.40, route="B1")
        gw.fix("b1-y", t0 + 2, -5.21, 119.51, route="B1")
        delta = recv_until(ws, lambda f: f["type"] == "delta")
        assert _ids(delta) == {"b1-y"}
        # ...and a van leaving the box is sent once more, so the client can drop it.
        gw.fix("b1-y", t0 + 3, -5.00, 119.30, route="B1")
        delta = recv_until(ws, lambda f: f["type"] == "delta")
        assert delta["vehicles"][0]["id"] == "b1-y" and delta["vehicles"][0]["lat"] == -5.0
        gw.fix("b1-y", t0 + 4, -5.01, 119.30, route="B1")
        gw.fix("c2-x", t0 + 4, -5.20, 119.50, route="C2")  # moves into the box
        delta = recv_until(ws, lambda f: f["type"] == "delta")
        assert _ids(delta) == {"c2-x"}

        ws.send('{"type": "filter", "routes": "B1"}')
        err = recv_until(ws, lambda f: f["type"] == "error")
        assert "filter" in err["error"]
        ws.send('{"type": "filter", "routes": null, "bbox": null}')
        assert _ids(recv_until(ws, lambda f: f["type"] == "snapshot")) == {"b1-x", "b1-y", "c2-x"}
    gw.close()


def test_late_batch_never_moves_a_van_back(db_dsn: str, broker: MosquittoBroker) -> None:
    token = make_token(db_dsn)
    gw = Gateway(broker)
    with running_api(db_dsn, broker, ws_interval_ms=100) as api:
        t0 = now_ms()
        ws = ws_connect(api, token)
        assert recv_json(ws)["type"] == "snapshot"
        gw.fix("van-l", t0, -5.10, 119.40)
        assert recv_until(ws, lambda f: f["type"] == "delta")["vehicles"][0]["ts"] == t0
        # A store-and-forward backlog (older fixes) and a redelivery of the current one.
        backlog = [{"ts": t0 - 60_000 + i * 1000, "lat": -5.3, "lon": 119.3} for i in range(50)]
        gw.batch("van-l", backlog)
        received = api.app.state.metrics.fixes_received
        wait_for(lambda: received._value.get() >= 51, 5, "the backlog to reach the API")
        wait_for(lambda: api.hub().state.late_fixes >= 1, 5, "the backlog judged late")
        gw.fix("van-l", t0, -5.10, 119.40)
        gw.fix("van-l", t0 + 1000, -5.101, 119.401)  # then a genuinely newer one
        seen = []
        while True:
            frame = recv_until(ws, lambda f: f["type"] == "delta")
            seen.extend(v["ts"] for v in frame["vehicles"])
            if t0 + 1000 in seen:
                break
        assert seen == [t0 + 1000]  # the backlog never appeared
        assert api.hub().state.vans["van-l"].ts == t0 + 1000
        ws2 = ws_connect(api, token)
        snap = recv_json(ws2)
        assert snap["vehicles"][0]["lat"] == -5.101
    gw.close()


def test_slow_client_is_cut_off_while_a_fast_one_keeps_receiving(
    db_dsn: str, broker: MosquittoBroker
) -> None:
    token = make_token(db_dsn)
    gw = Gateway(broker)
    with running_api(
        db_dsn, broker, ws_interval_ms=50, ws_slow_client_s=1.0, ws_queue_max=4
    ) as api:
        fast = ws_connect(api, token)
        assert recv_json(fast)["type"] == "snapshot"
        slow = StalledClient(api.settings.api_port, token)
        wait_for(lambda: len(api.hub().clients) == 2, 5, "both clients registered")
        fast_frames = 0
        stop = threading.Event()

        def publish() -> None:
            i = 0
            while not stop.is_set():  # ~300 vans every 50 ms: frames of ~30 KB
                t = now_ms()
                for v in range(300):
                    gw.client.publish(
                        f"fleet/v{v:03d}/telemetry",
                        f'{{"ts": {t}, "lat": -5.1{i % 10}, "lon": 119.4, "route": "B1"}}',
                        qos=0,
                    )
                i += 1
                time.sleep(0.05)

        pub = threading.Thread(target=publish)
        pub.start()
        try:
            dropped = api.app.state.metrics.dropped_clients
            deadline = time.monotonic() + 30
            while dropped._value.get() < 1:
                assert time.monotonic() < deadline, "slow client was never cut off"
                frame = recv_json(fast, 5)
                fast_frames += frame["type"] == "delta"
            # the fast client keeps receiving after the cut-off
            after = 0
            for _ in range(10):
                after += recv_json(fast, 5)["type"] == "delta"
            assert after >= 8
        finally:
            stop.set()
            pub.join()
        assert fast_frames > 0
        assert len(api.hub().clients) == 1
        assert slow.drain_close_code() == 1013
        slow.close()
    gw.close()


def test_status_events_offline_and_stale(db_dsn: str, broker: MosquittoBroker) -> None:
    token = make_token(db_dsn)
    gw = Gateway(broker)
    with running_api(db_dsn, broker, ws_interval_ms=100, stale_after_s=1) as api:
        ws = ws_connect(api, token)
        assert recv_json(ws)["type"] == "snapshot"
        gw.fix("van-s", now_ms(), -5.1, 119.4)
        gw.fix("van-o", now_ms(), -5.1, 119.4)
        # the last will of a device is a retained "offline" on its status topic
        gw.publish("fleet/van-o/status", b"offline", retain=True)
        ev = recv_until(ws, lambda f: f["type"] == "status" and f["vehicle_id"] == "van-o")
        assert ev["status"] == "offline"
        ev = recv_until(ws, lambda f: f["type"] == "status" and f["vehicle_id"] == "van-s", 5)
        assert ev["status"] == "stale"
        gw.fix("van-s", now_ms(), -5.1, 119.41)
        ev = recv_until(ws, lambda f: f["type"] == "status" and f["vehicle_id"] == "van-s", 5)
        assert ev["status"] == "online"
    gw.close()


def test_owntracks_location_moves_a_van(db_dsn: str, broker: MosquittoBroker) -> None:
    token = make_token(db_dsn)
    add_device(broker, "phone1", "pw-phone1")
    phone = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="phone1")
    phone.username_pw_set("phone1", "pw-phone1")

    def connected() -> bool:
        try:
            return phone.connect("127.0.0.1", broker.port) == 0
        except OSError:
            return False

    wait_for(connected, 5, "the phone to connect (after the broker reload)")
    phone.loop_start()
    with running_api(db_dsn, broker, ws_interval_ms=100) as api:
        ws = ws_connect(api, token)
        assert recv_json(ws)["type"] == "snapshot"
        tst = now_ms() // 1000
        doc = f'{{"_type": "location", "tst": {tst}, "lat": -5.13, "lon": 119.42, "vel": 36}}'
        phone.publish("owntracks/phone1/pixel", doc, qos=1).wait_for_publish(5)
        delta = recv_until(ws, lambda f: f["type"] == "delta")
        van = delta["vehicles"][0]
        assert van["id"] == "phone1" and van["ts"] == tst * 1000
        assert van["speed"] == pytest.approx(10.0)  # 36 km/h
    phone.loop_stop()


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_live_push_without_a_reachable_transport(db_dsn: str, broker: MosquittoBroker) -> None:
    """Under another ASGI server (here Starlette's TestClient) a sender task per client
    awaits each send: same snapshot → delta behaviour."""
    from starlette.testclient import TestClient  # noqa: PLC0415 (warns on import)

    token = make_token(db_dsn)
    gw = Gateway(broker)
    settings = ApiSettings(
        dsn=db_dsn,
        mqtt_port=broker.port,
        mqtt_password=broker.layout.service_credentials()["svc-api"],
        ws_interval_ms=100,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        wait_for(app.state.feed.connected.is_set, 10, "MQTT feed")
        with client.websocket_connect(
            "/ws/live", headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            assert ws.receive_json()["type"] == "snapshot"
            (live,) = app.state.hub.clients
            assert not live.direct and live.sender is not None
            gw.fix("van-t", now_ms(), -5.1, 119.4)
            frame = ws.receive_json()
            while frame["type"] != "delta":
                frame = ws.receive_json()
            assert frame["vehicles"][0]["id"] == "van-t"
    gw.close()


def test_live_feed_resubscribes_after_a_broker_restart(
    db_dsn: str, broker: MosquittoBroker
) -> None:
    token = make_token(db_dsn)
    with running_api(db_dsn, broker, ws_interval_ms=100) as api:
        ws = ws_connect(api, token)
        assert recv_json(ws)["type"] == "snapshot"
        feed = api.app.state.feed
        broker.kill()
        wait_for(lambda: not feed.connected.is_set(), 10, "the feed to notice")
        broker.start()
        wait_for(feed.connected.is_set, 20, "the feed to reconnect and resubscribe")
        gw = Gateway(broker)
        gw.fix("van-r", now_ms(), -5.1, 119.4)
        delta = recv_until(ws, lambda f: f["type"] == "delta", 10)
        assert delta["vehicles"][0]["id"] == "van-r"  # the socket stayed open throughout
        gw.close()


def test_many_vans_turning_stale_at_once(db_dsn: str, broker: MosquittoBroker) -> None:
    token = make_token(db_dsn)
    gw = Gateway(broker)
    with running_api(db_dsn, broker, ws_interval_ms=100, stale_after_s=1) as api:
        ws = ws_connect(api, token)
        assert recv_json(ws)["type"] == "snapshot"
        t = now_ms()
        fix = f'{{"ts":{t},"lat":-5.1,"lon":119.4}}'
        infos = [gw.client.publish(f"fleet/m{i:03d}/telemetry", fix, 1) for i in range(200)]
        for info in infos:
            info.wait_for_publish(10)
        stale: set[str] = set()
        deadline = time.monotonic() + 10
        while len(stale) < 200 and time.monotonic() < deadline:
            frame = recv_json(ws, 5)
            if frame["type"] == "status" and frame["status"] == "stale":
                stale.add(frame["vehicle_id"])
        assert len(stale) == 200  # one status frame per van, written in one go
    gw.close()
