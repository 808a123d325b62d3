"""Tests that run servers on 127.0.0.1 and must never reach anything else."""

from __future__ import annotations

import socket

import pytest


def allow_only_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test on any connection to an address other than 127.0.0.1."""
    connect = socket.socket.connect

    def loopback_only(sock: socket.socket, address) -> None:
        if address[0] != "127.0.0.1":
            pytest.fail(f"connection to {address}")
        connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
