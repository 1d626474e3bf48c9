"""free_port: bindable, and outside the kernel's range for outgoing connections, so a
server restarted on its port cannot find it taken by a client's local end."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import fleet.storage.embedded as embedded
from fleet.storage.embedded import FREE_PORT_LOW, free_port


def test_free_ports_are_bindable_and_below_the_ephemeral_range() -> None:
    low = embedded._ephemeral_low()
    for _ in range(50):
        port = free_port()
        if low - 1 - FREE_PORT_LOW >= 1000:
            assert FREE_PORT_LOW <= port < low
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))


def test_no_room_below_the_range_falls_back_to_any_free_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    narrow = tmp_path / "ip_local_port_range"
    narrow.write_text(f"{FREE_PORT_LOW + 10}\t60999\n")
    monkeypatch.setattr(embedded, "EPHEMERAL_RANGE_FILE", narrow)
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))
    monkeypatch.setattr(embedded, "EPHEMERAL_RANGE_FILE", tmp_path / "missing")
    assert embedded._ephemeral_low() == 32_768
