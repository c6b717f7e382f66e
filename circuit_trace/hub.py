"""Fail fast when the Hugging Face hub cannot be used.

Without this, a hub id on a machine with no network spends tens of seconds in huggingface_hub's
retries before failing. We decide once, up front, whether the hub may be asked at all: not when
`HF_HUB_OFFLINE` is set, and not when a TCP connection to the hub endpoint (`HF_ENDPOINT`, default
https://huggingface.co; or to the HTTP(S) proxy set for it) cannot be opened within
`PROBE_TIMEOUT_S`. Then only the local HF cache is used (`local_files_only=True`), and a miss
becomes one `HubUnavailableError` line saying why and how to point at a local copy. Used by
`models.loading` and `transcoders.formats` alike.
"""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import urlparse
from urllib.request import getproxies, proxy_bypass

__all__ = [
    "cached_file",
    "clear_probe_cache",
    "PROBE_TIMEOUT_S",
    "HubUnavailableError",
    "hub_endpoint",
    "hub_offline",
    "hub_reachable",
    "unavailable_message",
    "use_local_files_only",
]

# Seconds to wait for a TCP connection to the hub. A refused or unresolvable host fails at once;
# only a silently dropped connection waits this long.
PROBE_TIMEOUT_S = 2.0
# A probe result is reused for this long, so loading a model and its transcoders probes once.
_PROBE_TTL_S = 60.0
_probe_cache: dict[str, tuple[float, bool]] = {}


class HubUnavailableError(OSError):
    """A hub id was asked for while the hub is switched off or unreachable, and the local HF cache
    does not hold it. An OSError, like the errors of a missing local path."""


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set now (read on every call, unlike huggingface_hub's constant)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub endpoint opens within `timeout` seconds (cached 60 s)."""
    endpoint = hub_endpoint()
    now = time.monotonic()
    hit = _probe_cache.get(endpoint)
    if hit is not None and now - hit[0] < _PROBE_TTL_S:
        return hit[1]
    url = urlparse(endpoint)
    proxy = getproxies().get(url.scheme) or getproxies().get("all")
    if proxy and not proxy_bypass(url.hostname or ""):
        url = urlparse(proxy if "://" in proxy else f"http://{proxy}")  # behind a proxy, probe the proxy
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            ok = True
    except OSError:
        ok = False
    _probe_cache[endpoint] = (now, ok)
    return ok


def clear_probe_cache() -> None:
    """Forget earlier probe results, so the next `hub_reachable` asks the network again (after the
    proxy or endpoint settings changed)."""
    _probe_cache.clear()


def use_local_files_only() -> bool:
    """True when hub calls must not touch the network (offline flag, or the hub does not answer)."""
    return hub_offline() or not hub_reachable()


def cached_file(repo_id: str, filename: str) -> bool:
    """Whether `filename` of hub repo `repo_id` (main revision) is in the local HF cache; asks
    nothing of the network, so a cache miss is known before any library tries the hub."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except ValueError:  # not a valid repo id
        return False


def unavailable_message(what: str, ref: str, local_hint: str) -> str:
    """One line: which hub object could not be had, why, and how to use a local copy instead."""
    repo = "/".join(ref.removeprefix("hf://").split("@")[0].split("?")[0].split("/")[:2])
    why = "HF_HUB_OFFLINE is set" if hub_offline() else f"the hub ({hub_endpoint()}) cannot be reached"
    return (
        f"{what} {ref!r} is not in the local Hugging Face cache and {why}; download it where the "
        f"hub is reachable (e.g. `huggingface-cli download {repo}`) or pass a local copy: {local_hint}"
    )
