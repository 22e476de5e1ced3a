"""The pod's ``preStop``: drain the Envoy container beside the sidecar before either stops.

Kubernetes sends SIGTERM to every container of a pod at once, after its ``preStop`` hook.
Envoy exits at once on SIGTERM, so the drain ``ai-gateway run`` does on a signal
(:class:`extproc.supervisor.EnvoyDrain`) runs here, from the sidecar container, over Envoy's
admin socket on the volume both share. The Envoy container's own ``preStop`` only sleeps
until this is over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from extproc.supervisor import EnvoyDrain

log = logging.getLogger("extproc.podstop")

_TICK = 0.2


def drain_pod(
    drain: EnvoyDrain,
    endpoints_delay: float,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Keep serving for ``endpoints_delay`` (the pod's removal from the Service's endpoints
    reaches every node's proxy meanwhile, so no new connection is sent to a closed listener),
    then drain; True once no request is open, False when the drain time ran out first."""
    sleep(endpoints_delay)
    try:
        drain.begin()
    except OSError as exc:
        log.warning("could not start the drain (%s)", exc)
        return False
    deadline = time.monotonic() + drain.seconds
    idle_checks = 0
    while time.monotonic() < deadline:
        # Twice in a row, as the supervisor does: a request accepted just before the listener
        # closed may not be counted at the first look.
        idle_checks = idle_checks + 1 if drain.idle() else 0
        if idle_checks >= 2:
            return True
        sleep(_TICK)
    return False
