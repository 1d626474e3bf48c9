"""One live websocket client: frames written without waiting, slow clients cut off.

The hub only ever calls :meth:`LiveClient.offer` and :meth:`LiveClient.pump`; neither
awaits anything.  Under uvicorn (the server ``fleet api`` runs) the client writes each
shared, pre-framed :class:`~api.live.frames.OutFrame` straight into its asyncio
transport.  While the transport's buffer is above ``HIGH_WATER_BYTES`` (the client does
not read) frames wait in a bounded per-client queue, which :meth:`pump` flushes once the
buffer drains.  A client whose queue overflows, or whose frames stay blocked for
``slow_after_s``, is cut off with close code 1013: the close frame goes straight into
the transport's buffer (a blocked client would never let an ordinary close through) and
the connection is aborted if it has not drained within ``CLOSE_GRACE_S``.

Without a reachable transport (another ASGI server) a sender task awaits each send,
bounded by ``slow_after_s``, with the same queue bound and the same 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from starlette.websockets import WebSocket, WebSocketDisconnect

from api.live.filters import LiveFilter
from api.live.frames import OutFrame

__all__ = ["CLOSE_TRY_AGAIN_LATER", "RAW_SEND_SCOPE_KEY", "LiveClient"]

log = logging.getLogger(__name__)

CLOSE_TRY_AGAIN_LATER: Final = 1013
CLOSE_GRACE_S: Final = 5.0
HIGH_WATER_BYTES: Final = 1 << 20  # unsent bytes in the transport before frames queue
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
        on_sent: Callable[[int], None],
    ) -> None:
        self.websocket = websocket
        self.filter = live_filter
        self.slow_after_s = slow_after_s
        self.queue_max = queue_max
        self.cut_off_reason: str | None = None
        self._on_cut_off = on_cut_off
        self._on_sent = on_sent
        self.transport = _transport_of(websocket)
        self.pending: deque[OutFrame] = deque()
        self.blocked_since: float | None = None
        self.sender: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        # State version of the snapshot just queued; until its first delta, moves up to
        # that version are left out (the snapshot already had them).
        self.snapshot_version: int | None = None

    @property
    def alive(self) -> bool:
        return self.cut_off_reason is None

    @property
    def direct(self) -> bool:
        return self.transport is not None

    def start(self) -> None:
        """Start the sender task (only needed without a reachable transport)."""
        if not self.direct:
            self.sender = asyncio.create_task(self._run_sender(), name="ws-sender")

    def stop(self) -> None:
        if self.sender is not None:
            self.sender.cancel()

    # -- the shared path: never waits ---------------------------------------------------

    def offer(self, frame: OutFrame) -> None:
        """Send now, or queue behind a full buffer; an overflowing queue cuts the client off."""
        if self.cut_off_reason is not None:
            return
        transport = self.transport
        if transport is None:
            self._enqueue(frame)
            self._wakeup.set()
            return
        if transport.is_closing():
            return
        if self.pending or transport.get_write_buffer_size() > HIGH_WATER_BYTES:
            self._enqueue(frame)
            return
        transport.write(frame.wire)
        self._on_sent(1)

    def pump(self, now: float) -> None:
        """Flush queued frames once the buffer drained; cut off if blocked too long."""
        transport = self.transport
        if transport is None or not self.pending or self.cut_off_reason is not None:
            return
        if transport.is_closing():
            self.pending.clear()
            return
        sent = 0
        while self.pending and transport.get_write_buffer_size() <= HIGH_WATER_BYTES:
            transport.write(self.pending.popleft().wire)
            sent += 1
        if sent:
            self._on_sent(sent)
        if not self.pending:
            self.blocked_since = None
        elif self.blocked_since is not None and now - self.blocked_since > self.slow_after_s:
            self.cut_off(f"could not take frames for more than {self.slow_after_s} s")

    def replace_queue_with(self, frame: OutFrame) -> None:
        """Drop whatever is queued (superseded by a new snapshot) and send ``frame``."""
        self.pending.clear()
        self.blocked_since = None
        self.offer(frame)

    def _enqueue(self, frame: OutFrame) -> None:
        if len(self.pending) >= self.queue_max:
            self.cut_off(f"more than {self.queue_max} frames waiting")
            return
        self.pending.append(frame)
        if self.blocked_since is None:
            self.blocked_since = time.monotonic()

    # -- fallback: a sender task per client ---------------------------------------------

    async def _run_sender(self) -> None:
        ws = self.websocket
        try:
            while self.cut_off_reason is None:
                if not self.pending:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                frame = self.pending.popleft()
                try:
                    async with asyncio.timeout(self.slow_after_s):
                        for text in frame.texts():
                            await ws.send_text(text)
                except TimeoutError:
                    self.cut_off(f"send blocked for more than {self.slow_after_s} s")
                    return
                self.blocked_since = None if not self.pending else time.monotonic()
                self._on_sent(1)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the client went away; the receive side notices too

    # -- cut-off ------------------------------------------------------------------------

    def cut_off(self, reason: str) -> None:
        """Close with 1013 now, from the shared path: never waits on this client."""
        if self.cut_off_reason is not None:
            return
        self.cut_off_reason = reason
        self.pending.clear()
        self._on_cut_off(self, reason)
        if self.sender is not None and self.sender is not asyncio.current_task():
            self.sender.cancel()
        transport = self.transport
        if transport is None:  # not uvicorn: an ordinary close, bounded in time
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
    transport = getattr(protocol, "transport", None)
    if transport is None or not hasattr(transport, "get_write_buffer_size"):
        return None
    return transport
