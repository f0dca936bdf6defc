"""A TCP proxy on loopback that tests control: pass bytes, stall them, reset every
connection, or drop connections and refuse new ones for a while. It runs its own event
loop in a thread, so a test can use it around real agent and coordinator processes."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)  # kept in a set by identity
class _Link:
    sockets: list[socket.socket] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class TcpProxy:
    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.connections = 0  # accepted so far, refused ones included
        self.recorded = bytearray()  # every byte relayed, both ways (what a wiretap sees)
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None
        self._refusing = False
        self._links: set[_Link] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.port: int = self._call(self._listen())

    # ---- what tests call ---------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stall(self) -> None:
        """Connections stay open but no byte goes through until resume()."""
        self._call(self._set_flowing(False))

    def resume(self) -> None:
        self._refusing = False
        self._call(self._set_flowing(True))

    def reset(self) -> None:
        """Every open connection is reset (RST), as by a router that lost its state."""
        self._call(self._close_all(rst=True))

    def drop(self) -> None:
        """Every open connection is closed and new ones are refused until resume()."""
        self._refusing = True
        self._call(self._close_all(rst=False))

    def close(self) -> None:
        self._call(self._close_all(rst=True))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # ---- inside the proxy's loop -------------------------------------------------

    def _call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=10)

    async def _listen(self) -> int:
        self._flowing = asyncio.Event()
        self._flowing.set()
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(server.sockets[0].getsockname()[1])

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _close_all(self, *, rst: bool) -> None:
        for link in list(self._links):
            for sock in link.sockets:
                if rst:  # linger 0: close() sends RST instead of FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            for writer in link.writers:
                writer.transport.abort() if rst else writer.close()
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._refusing:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        link = _Link(
            sockets=[writer.get_extra_info("socket"), up_writer.get_extra_info("socket")],
            writers=[writer, up_writer],
        )
        self._links.add(link)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        self._links.discard(link)
        for end in link.writers:
            end.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        while data := await reader.read(65536):
            await self._flowing.wait()
            self.recorded += data
            writer.write(data)
            await writer.drain()
        writer.close()
