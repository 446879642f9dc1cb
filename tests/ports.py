"""Ports for the servers the tests start: always free ones, never the stack's defaults, so the
suite passes beside a user's running stack (`mlops up` holds 4200, 5000, 8000, ...).

`port_settings` finds every port a config can start a service on (a field named `port` or
`*_port`, at any depth), so a port a later change adds is covered without naming it here.
"""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

from pydantic import BaseModel

Config = TypeVar("Config", bound=BaseModel)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """Distinct free ports (two quick calls to free_port can return the same one)."""
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port()) not in ports:
            ports.append(port)
    return ports


def port_settings(config: BaseModel, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], int]]:
    """(field path, port) for every port setting of a config section and its subsections."""
    for name, value in config:
        if isinstance(value, BaseModel):
            yield from port_settings(value, (*path, name))
        elif (name == "port" or name.endswith("_port")) and isinstance(value, int):
            yield (*path, name), value


def _replace(model: BaseModel, path: tuple[str, ...], value: Any) -> BaseModel:
    head, *rest = path
    new = _replace(getattr(model, head), tuple(rest), value) if rest else value
    return model.model_copy(update={head: new})


def with_free_ports(config: Config) -> Config:
    """`config` with every port setting moved to a port that is free now."""
    settings = [path for path, _ in port_settings(config)]
    for path, port in zip(settings, free_ports(len(settings)), strict=True):
        config = _replace(config, path, port)
    return config


class PortHolder:
    """Listens on the given loopback ports that are free, as another program would, and
    answers every connection by closing it: a test that uses a default port fails fast,
    as it would beside a user's stack. Ports already taken are left to whoever holds them."""

    def __init__(self, ports: list[int]) -> None:
        self.selector = selectors.DefaultSelector()
        self.held: list[int] = []
        for port in ports:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sock.listen()
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.held.append(port)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="default-port-holder", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            for key, _ in self.selector.select(timeout=0.2):
                try:
                    connection, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    connection.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        for key in list(self.selector.get_map().values()):
            self.selector.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()
