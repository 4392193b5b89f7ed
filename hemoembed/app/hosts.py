"""Which host names are this machine only: ``serve`` refuses an open address without a token before it loads
anything, and the server refuses requests naming another host (DNS rebinding)."""
from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "testserver")


def is_loopback(host: str) -> bool:
    """True for a loopback name or address (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
