"""Callers that never re-read their token file, seen from the receiver.

The kubelet writes a fresh token into the Pod's projected volume once the current one is older than
80% of its lifetime or 24 hours, whichever comes first (``requiresRefresh`` in
kubernetes/pkg/kubelet/token/token_manager.go, less a jitter of up to 10 s). It does so when it next
syncs the Pod, every minute plus up to 50% jitter (``--sync-frequency``, ``workerResyncIntervalJitterFactor``),
so a new token is on disk at most ~90 s after that point. A caller that re-reads the file sends the new
one within a second. A *valid* token presented well after its refresh point therefore means its
sender read the file once and keeps a copy: it works until ``exp``, then every call fails with 401,
typically an hour after a deployment. The receiver is the one place where that shows early.

:class:`StaleTokenWatch` is handed each accepted token's unverified claims (``iat``, ``exp``, and
``kubernetes.io.warnafter`` when the API server extended a token's life, in which case the kubelet
refreshes by the requested lifetime) and the verified :class:`~audience_token.identity.Identity`. Past
the refresh point plus ``grace`` it logs one warning per caller (namespace, service account, Pod) and
``period``, naming those and never the token, and counts it. It decides nothing: the token is
still accepted. Framework-neutral, thread-safe, bounded in memory.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Final

from audience_token.counts import Counts
from audience_token.identity import Identity

log = logging.getLogger("audience_token")

KUBELET_REFRESH_FRACTION: Final = 0.8
"""The kubelet refreshes a token older than 80% of its lifetime..."""
KUBELET_MAX_AGE_SECONDS: Final = 24 * 3600.0
"""...or older than 24 hours, whichever comes first."""
DEFAULT_GRACE_SECONDS: Final = 120.0
"""After the refresh point: the kubelet's next Pod sync (60-90 s), the caller's next read (1 s), clock skew."""
DEFAULT_PERIOD_SECONDS: Final = 3600.0
DEFAULT_MAX_CALLERS: Final = 10_000


def refresh_point(claims: Mapping[str, Any]) -> float | None:
    """When the kubelet starts refreshing this token (Unix seconds), from its unverified claims.

    None when the claims do not say (no numeric ``iat`` and ``exp``, a lifetime that is not positive,
    or values too large to be times): then nothing is judged.
    """
    issued = _number(claims.get("iat"))
    end = _number(claims.get("exp"))
    kubernetes = claims.get("kubernetes.io")
    if isinstance(kubernetes, Mapping):
        # An extended token (kube-apiserver's --service-account-extend-token-expiration): exp is a
        # year away; the kubelet still refreshes by the lifetime asked for, which warnafter holds.
        warn_after = _number(kubernetes.get("warnafter"))
        if warn_after is not None:
            end = warn_after
    if issued is None or end is None or end <= issued:
        return None
    return issued + min(KUBELET_REFRESH_FRACTION * (end - issued), KUBELET_MAX_AGE_SECONDS)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer with hundreds of digits
        return None
    return number if math.isfinite(number) and abs(number) < 1e12 else None


class StaleTokenWatch:
    """Warns, once per caller and ``period``, about valid tokens presented past their refresh point."""

    def __init__(
        self,
        *,
        counts: Counts | None = None,
        grace: float = DEFAULT_GRACE_SECONDS,
        period: float = DEFAULT_PERIOD_SECONDS,
        max_callers: int = DEFAULT_MAX_CALLERS,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if grace < 0 or period <= 0 or max_callers < 1:
            raise ValueError("grace must be 0 or more seconds, period more than 0 s, max_callers at least 1")
        self.counts = counts if counts is not None else Counts()
        self.grace = grace
        self.period = period
        self._max_callers = max_callers
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._warned: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    def __repr__(self) -> str:
        return f"StaleTokenWatch(grace={self.grace}, period={self.period}, callers={len(self._warned)})"

    def observe(self, identity: Identity, claims: Mapping[str, Any]) -> bool:
        """Note an accepted token; True when this call warned (a stale token, first time this period)."""
        point = refresh_point(claims)
        if point is None:
            return False
        now = self._wall_clock()
        late = now - point
        if late <= self.grace:
            return False
        caller = (identity.namespace, identity.service_account, identity.pod_name or "")
        with self._lock:
            last = self._warned.get(caller)
            if last is not None and now - last < self.period:
                return False
            self._warned[caller] = now
            self._warned.move_to_end(caller)
            while len(self._warned) > self._max_callers:
                self._warned.popitem(last=False)
        self.counts.stale_token(identity.namespace, identity.service_account)
        issued = _number(claims.get("iat"))
        age = f"{now - issued:.0f} s old" if issued is not None else "old"
        pod = f", Pod {identity.pod_name}" if identity.pod_name else ""
        log.warning(
            "caller %s/%s%s sent a token %s, %.0f s past the point where the kubelet writes a new one: "
            "it keeps a copy of its token file instead of reading it again, and its calls will fail with 401 "
            "once that token expires. Fix the caller: read the file before each call (audience_token's "
            "TokenFile and BearerAuth do), never cache it.",
            identity.namespace,
            identity.service_account,
            pod,
            age,
            late,
        )
        return True
