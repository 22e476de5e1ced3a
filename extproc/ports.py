"""Start-up checks of the TCP ports a gateway listens on, and who holds one that is taken.

Envoy's listeners and the sidecar's sockets are bound without ``SO_REUSEPORT``, so a port
another program (or another gateway) listens on makes the start fail; this module makes that
failure say which port and, where the system tells us, which process. The holder is found the
way ``ss -lptn`` finds it, from ``/proc/net/tcp{,6}`` and each process's ``/proc/<pid>/fd``
(Linux only; written here because the standard library has no such lookup and ``ss`` is not
always installed). Processes of other users are not readable without privileges: then only
the port is named.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterable
from pathlib import Path

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


class PortInUse(Exception):
    """A port the gateway must listen on is taken; the message says by whom, if known."""


def _listening_inodes(port: int, proc: Path) -> set[str]:
    inodes = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            if int(fields[1].rpartition(":")[2], 16) == port:
                inodes.add(fields[9])
    return inodes


def holders(port: int, proc: Path = Path("/proc")) -> list[tuple[int, str]]:
    """The processes listening on TCP ``port``, as (pid, command line), as far as readable."""
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return []
    wanted = {f"socket:[{inode}]" for inode in inodes}
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        if _links(entry / "fd") & wanted:
            found.append((int(entry.name), _command(entry)))
    return sorted(found)


def _links(fd_dir: Path) -> set[str]:
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return set()  # gone, or another user's
    links = set()
    for fd in fds:
        try:
            links.add(os.readlink(fd))
        except OSError:
            continue  # closed meanwhile (the listing's own fd, in this very process)
    return links


def _command(entry: Path) -> str:
    try:
        argv = (entry / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    command = " ".join(a.decode(errors="replace") for a in argv if a)
    return " ".join(command.split())[:200] or "?"  # one line, however it was started


def describe(host: str, port: int, what: str) -> str:
    """The error message for a taken port, naming its holders when they can be found."""
    message = f"{what} port {host}:{port} is already in use"
    found = holders(port)
    if found:
        by = "; ".join(f"pid {pid}: {cmd}" for pid, cmd in found)
        return f"{message} by {by}"
    return f"{message} (by a process this user cannot see)"


def check_free(ports: Iterable[tuple[str, int, str]]) -> None:
    """Raise :class:`PortInUse` for the first (host, port, what) another socket listens on.

    Binds the way Envoy and the sidecar do (``SO_REUSEADDR``, no ``SO_REUSEPORT``): a port
    only held by closing connections (TIME_WAIT) counts as free, one with a listener does not.
    """
    for host, port, what in ports:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUse(describe(host, port, what)) from None
                raise PortInUse(f"cannot listen on {what} port {host}:{port}: {exc}") from None
