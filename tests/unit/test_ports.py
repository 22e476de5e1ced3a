"""Start-up port checks: a taken port is named, with its holder."""

from __future__ import annotations

import os
import socket

import pytest

from extproc.ports import PortInUse, check_free, holders


def test_a_listening_port_is_refused_and_its_holder_named() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert [pid for pid, _ in holders(port)] == [os.getpid()]
        with pytest.raises(PortInUse) as caught:
            check_free([("127.0.0.1", port, "the gateway's")])
        message = str(caught.value)
        assert f"the gateway's port 127.0.0.1:{port} is already in use by pid {os.getpid()}" in (
            message
        )
    check_free([("127.0.0.1", port, "the gateway's")])  # closed: free again
