"""The wheel carries everything a broker needs: install it into a fresh virtualenv (no
checkout on the path) and run `fleet broker` and `fleet device add` from it."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker.runner import wait_for_port
from fleet.contract import telemetry_topic
from fleet.storage.embedded import free_port
from tests.fixtures.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_fleet_broker_runs_from_the_installed_wheel(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(ROOT)],
        check=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    [wheel] = dist.glob("makassar_fleet-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # dependencies from this environment, but not the checkout (its editable finder lives
    # in a .pth file, which a plain path line does not run)
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    site.mkdir(parents=True, exist_ok=True)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--no-deps", "-q", str(wheel)],
        check=True, timeout=300,
    )  # fmt: skip
    fleet = venv / "bin" / "fleet"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env["PYTHONPATH"] = ""
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import broker; print(broker.__file__)"],
        capture_output=True, text=True, check=True, cwd=tmp_path, env=env,
    ).stdout  # fmt: skip
    assert str(venv) in where, f"broker imported from the checkout, not the wheel: {where}"

    data, port, tls_port = tmp_path / "data", free_port(), free_port()
    proc = subprocess.Popen(
        [str(fleet), "broker", "--port", str(port), "--data-dir", str(data),
         "--tls-local-ca", "--tls-port", str(tls_port)],
        cwd=tmp_path, env={**env, "FLEET_BROKER_TLS_BIND": "127.0.0.1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert wait_for_port("127.0.0.1", tls_port, 30), "fleet broker (wheel) did not listen"
        added = subprocess.run(
            [str(fleet), "device", "add", "PP-WHEEL", "--data-dir", str(data)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env, check=False,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        password = added.stdout.split("password (shown once): ")[1].strip()
        acked: list[int] = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="PP-WHEEL", protocol=mqtt.MQTTv5)
        c.username_pw_set("PP-WHEEL", password)
        c.tls_set(ca_certs=str(data / "broker" / "tls" / "ca.crt"), cert_reqs=ssl.CERT_REQUIRED)
        c.on_publish = lambda cl, u, mid, rc, p: acked.append(rc.value)
        c.connect("127.0.0.1", tls_port)
        c.loop_start()
        fix = b'{"ts": %d, "lat": -5.1, "lon": 119.4}' % int(time.time() * 1000)
        c.publish(telemetry_topic("PP-WHEEL"), fix, qos=1)
        wait_for(lambda: bool(acked), 10, "PUBACK over TLS")
        assert acked[0] < 0x80  # 0x10 (no subscribers) is a success code: nothing listens here
        c.disconnect()
        c.loop_stop()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
