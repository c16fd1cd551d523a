"""Fair turns between tenants: how much of one loop pass each tenant's requests may take.

Theory of operation
-------------------
The broker serves a request as soon as its datagram is read, in the order the datagrams
came. A tenant that sends a lot would then take whole loop passes: another tenant's single
publish, read in the same pass, would wait behind every batch the flooder had in flight.
So each pass gives each tenant a turn of at most :data:`PASS_QUANTUM` records
(:meth:`FairShare.admit`; a request that is not a publish or an enqueue counts as one).
The session asks before it serves a request; past the quantum the connection *yields*: the
request is kept and the connection's gate is throttled until the pass ends
(:meth:`Gate.throttle <felix_server.gate.Gate.throttle>` with the pass's ``now``), so
nothing more of it is parsed and its QUIC credit is held. The session's timer is then due
at once; the next pass reads the datagrams that came meanwhile first (every runtime reads
before it fires timers) and then serves the kept requests within a new quantum. Another
tenant's request thus waits behind at most one quantum of the flooder's records, and a
backlog is served in turns with everyone else's input: a deficit round robin whose quantum
is renewed every pass (:meth:`FairShare.new_pass`, called by the server at the end of each
pass).

The first request of a tenant in a pass is always admitted, however large, so a batch over
the quantum is never stuck. Turns are work-conserving: a tenant past its quantum yields
only when another tenant was served within :data:`ACTIVE_S` (``now`` enters as an
argument); a tenant alone on the broker is never held back.

Turns are per tenant: every connection of a tenant shares its quantum, so opening more
connections buys no more of a pass. The tenant is the one of the connection's principal;
an operator's connection (a broker without authentication) acts for the tenant each request
names, and so takes that tenant's turn.

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from felix_core.access import Principal
from felix_proto import messages as m

__all__ = ["ACTIVE_S", "PASS_QUANTUM", "FairShare", "request_cost", "turn_key"]

PASS_QUANTUM = 128
"""Records (or requests) one tenant may have served in one loop pass, while others are
active."""
ACTIVE_S = 1.0
"""A tenant served this recently competes for the passes: others past their quantum yield."""
_PRUNE_AT = 4096  # tenants remembered before the inactive ones are forgotten


def request_cost(msg: m.Message) -> int:
    """What a request takes of its tenant's turn: its records for a batch publish or an
    enqueue, otherwise one."""
    if type(msg) is m.PublishBatch or type(msg) is m.Enqueue:
        return max(len(msg.payloads), 1)
    return 1


def turn_key(principal: Principal | None, msg: m.Message) -> str:
    """Whose turn a request takes: the connection's tenant, or for an operator the tenant
    the request names (empty for none)."""
    if principal is not None and not principal.operator:
        return principal.tenant
    tenant = getattr(msg, "tenant", "")
    return tenant if isinstance(tenant, str) else ""


class FairShare:
    """The records each tenant was served in the current loop pass. See the module
    docstring.

    Args:
        quantum: records (or requests) a tenant may have served per pass.
    """

    __slots__ = ("_seen", "_spent", "quantum")

    def __init__(self, quantum: int = PASS_QUANTUM) -> None:
        if quantum < 1:
            raise ValueError("quantum must be at least 1")
        self.quantum = quantum
        self._spent: dict[str, int] = {}
        self._seen: dict[str, float] = {}  # tenant -> when it was last served

    def admit(self, key: str, cost: int, now: float) -> bool:
        """Whether a request of ``cost`` of tenant ``key`` may be served in this pass at
        ``now``; if so, it is counted. The tenant's first request of a pass always is, and
        so is any while no other tenant is active."""
        spent = self._spent.get(key, 0)
        if spent and spent + cost > self.quantum and self._contended(key, now):
            return False
        self._spent[key] = spent + cost
        seen = self._seen
        if key not in seen and len(seen) >= _PRUNE_AT:
            for other in [k for k, t in seen.items() if t < now - ACTIVE_S]:
                del seen[other]
        seen[key] = now
        return True

    def _contended(self, key: str, now: float) -> bool:
        """Whether a tenant other than ``key`` was served within :data:`ACTIVE_S`
        (forgetting those that were not: what is kept stays bounded by the active ones)."""
        since = now - ACTIVE_S
        stale = []
        found = False
        for other, seen in self._seen.items():
            if seen < since:
                stale.append(other)
            elif other != key:
                found = True
                break
        for other in stale:
            del self._seen[other]
        return found

    def spent(self, key: str) -> int:
        """What tenant ``key`` was served in this pass."""
        return self._spent.get(key, 0)

    def new_pass(self) -> None:
        """The pass ended: every tenant has a full quantum again."""
        if self._spent:
            self._spent.clear()
