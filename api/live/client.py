"""One live websocket client: a bounded frame queue and a sender task.

The hub only ever calls :meth:`LiveClient.offer` (never awaits a client).  Each client's
own sender task awaits its sends, each bounded by ``slow_after_s``; a client whose send
stays blocked that long, or whose queue overflows, is cut off with close code 1013.
The close frame is written straight into the transport's buffer (a blocked client would
never let an ordinary close through) and the connection is aborted if it has not
drained within ``CLOSE_GRACE_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from typing import Any, Final

from starlette.websockets import WebSocket, WebSocketDisconnect

from api.live.filters import LiveFilter

__all__ = ["CLOSE_TRY_AGAIN_LATER", "LiveClient"]

log = logging.getLogger(__name__)

CLOSE_TRY_AGAIN_LATER: Final = 1013
CLOSE_GRACE_S: Final = 5.0
RAW_SEND_SCOPE_KEY: Final = "fleet.raw_send"


def _close_frame(code: int, reason: str) -> bytes:
    payload = struct.pack("!H", code) + reason.encode()[:120]
    return bytes((0x88, len(payload))) + payload  # FIN + close opcode, unmasked (server)


class LiveClient:
    def __init__(
        self,
        websocket: WebSocket,
        live_filter: LiveFilter,
        *,
        queue_max: int,
        slow_after_s: float,
        on_cut_off: Callable[[LiveClient, str], None],
        on_sent: Callable[[], None],
    ) -> None:
        self.websocket = websocket
        self.filter = live_filter
        self.slow_after_s = slow_after_s
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_max)
        self.cut_off_reason: str | None = None
        self._on_cut_off = on_cut_off
        self._on_sent = on_sent
        self.done = asyncio.Event()
        self.sender: asyncio.Task[None] | None = None
        # State version of the snapshot just queued; until its first delta, moves up to
        # that version are left out (the snapshot already had them).
        self.snapshot_version: int | None = None

    @property
    def alive(self) -> bool:
        return self.cut_off_reason is None and not self.done.is_set()

    def offer(self, frame: str) -> None:
        """Queue a frame without waiting; a full queue cuts the client off."""
        if not self.alive:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.cut_off(f"more than {self.queue.maxsize} frames waiting")

    def replace_queue_with(self, frame: str) -> None:
        """Drop whatever is queued (superseded by a new snapshot) and queue ``frame``."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.offer(frame)

    async def run_sender(self) -> None:
        ws = self.websocket
        try:
            while True:
                frame = await self.queue.get()
                if self.cut_off_reason is not None:
                    return
                try:
                    async with asyncio.timeout(self.slow_after_s):
                        await ws.send_text(frame)
                except TimeoutError:
                    self.cut_off(f"send blocked for more than {self.slow_after_s} s")
                    return
                self._on_sent()
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the client went away; the receive side notices too
        finally:
            self.done.set()

    def cut_off(self, reason: str) -> None:
        """Close with 1013 now, from the shared path: never waits on this client."""
        if self.cut_off_reason is not None:
            return
        self.cut_off_reason = reason
        self._on_cut_off(self, reason)
        if self.sender is not None and self.sender is not asyncio.current_task():
            self.sender.cancel()
        transport = _transport_of(self.websocket)
        if transport is None:  # not uvicorn's sans-I/O protocol: ordinary close, bounded
            asyncio.get_running_loop().create_task(self._bounded_close())
            return
        with contextlib.suppress(Exception):
            transport.write(_close_frame(CLOSE_TRY_AGAIN_LATER, "slow client"))
            transport.close()  # flushes what is buffered, then closes
            asyncio.get_running_loop().call_later(CLOSE_GRACE_S, transport.abort)

    async def _bounded_close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_GRACE_S):
                await self.websocket.close(CLOSE_TRY_AGAIN_LATER, "slow client")


def _transport_of(websocket: WebSocket) -> Any:
    """The asyncio transport behind uvicorn's websocket protocol, when reachable."""
    raw_send = websocket.scope.get(RAW_SEND_SCOPE_KEY)
    protocol = getattr(raw_send, "__self__", None)
    return getattr(protocol, "transport", None)
