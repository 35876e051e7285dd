"""IKE SA lifetimes: reauthentication (RFC 7296 §2.8.3), the hard expiry and NAT-T keepalives.

Reauthentication is make before break, as strongSwan's ``make_before_break``: a *new* IKE SA to the
same peer runs IKE_SA_INIT and IKE_AUTH (fresh authentication) and re-creates every CHILD SA of the
old one (the first in IKE_AUTH, the rest with CREATE_CHILD_SA); each new pair names the pair it
replaces (``ChildSaEstablished.rekey_of``), so a caller installs the new inbound SA while the old one
still takes traffic.  Once the new IKE SA has nothing left to do, the old IKE SA sends its Delete and
its CHILD SAs go.  Should the new IKE SA fail, the old one tries again a little later, until its
hard lifetime.

Hard lifetime (swanctl's ``over_time``): an IKE SA that is neither rekeyed nor reauthenticated within
``over_time`` after its rekey/reauth time removes its CHILD SAs at once and sends a Delete.

The functions here are called by ``IkeSA``'s timer code; the state lives on the ``IkeSA``
(``reauth_at``, ``expire_at``, ``reauth_by``/``reauth_of``, ``last_sent``).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from control.ike.constants import NATT_KEEPALIVE
from control.ike.events import ChildStatus, Datagram, IkeSaReauthenticated, IkeSaReauthStarted, State
from control.ike.tasks.ike_delete import IkeDeleteInitiator

if TYPE_CHECKING:
    from control.ike.sa import IkeSA

REAUTH_RETRY = 10.0         # seconds before a failed reauthentication is tried again


def schedule_lifetimes(sa: IkeSA, now: float) -> None:
    """Reauth time (with jitter) and hard expiry, from the moment the IKE SA is established."""
    cfg = sa.config
    if cfg.reauth_time > 0:
        sa.reauth_at = now + cfg.reauth_time - random.uniform(0, cfg.rand_time)
        sa.expire_at = now + cfg.reauth_time + cfg.hard_over_time
    elif cfg.rekey_time > 0:
        sa.expire_at = now + cfg.rekey_time + cfg.hard_over_time


def lifetimes_due(sa: IkeSA, now: float) -> bool:
    """Run the lifetime timers of an established IKE SA; True when it is being deleted (hard expiry)."""
    if sa.expire_at is not None and now >= sa.expire_at:
        expire(sa, now)
        return True
    if sa.reauth_at is not None and now >= sa.reauth_at and sa.reauth_by is None:
        sa.reauth_at = None
        start_reauth(sa, now)
    due = sa.keepalive_due
    if due is not None and now >= due:
        # RFC 3948 §2.3: one 0xFF byte keeps the NAT's mapping for our NAT-T port alive
        port, remote = sa.endpoint
        sa.send([Datagram(NATT_KEEPALIVE, port, remote)])
        sa.last_sent = now
        sa.stats["keepalives_sent"] += 1
    return False


def expire(sa: IkeSA, now: float) -> None:
    """The hard lifetime passed without a replacement: CHILD SAs out now, then the Delete."""

    sa.expire_at = None
    sa.stats["hard_expired"] += 1
    reason = "IKE SA hard lifetime reached without " + ("reauthentication" if sa.config.reauth_time > 0
                                                        else "rekey")
    for c in list(sa.children):
        sa.remove_child(c, reason)
    sa.take_tasks()
    sa.queue(IkeDeleteInitiator(reason=reason), now)


def start_reauth(old: IkeSA, now: float) -> IkeSA | None:
    """Begin a make-before-break reauthentication of ``old``; the new (initiator) IKE SA, or None."""
    from control.ike.tasks.child_create import ChildCreateInitiator
    from control.ike.tasks.ike_auth import IkeAuthInitiator

    if old.state != State.ESTABLISHED or old.reauth_by is not None:
        return None
    if not old.initiator and old.nat_remote:
        # a peer behind a NAT cannot be reached with a new IKE_SA_INIT; it has to reauthenticate itself
        old.stats["reauth_impossible_behind_nat"] += 1
        return None
    new = type(old)(old.config, initiator=True, local=(str(old.local_ip), old.config.local_port),
                remote=(old.remote[0], old.config.remote_port))
    new.reauth_of, old.reauth_by = old, new
    old.reauth_at = None
    kids = [c for c in old.children if c.status in (ChildStatus.INSTALLED, ChildStatus.REKEYING)]
    new.initiate(now, children=[c.config for c in kids])
    # tell each CHILD SA task which old pair it replaces (ChildSaEstablished.rekey_of)
    tasks = [t for t in new.queued(object) if isinstance(t, (IkeAuthInitiator, ChildCreateInitiator))]
    for task, kid in zip(tasks, kids, strict=False):
        task.replaces = kid.spi_in
    old.stats["reauth_started"] += 1
    old.emit(IkeSaReauthStarted(old.spi_i, old.spi_r, new))
    return new


def finish_reauth(new: IkeSA, now: float) -> None:
    """Once the new IKE SA is up and its CHILD SAs are done, the old one is deleted."""

    old = new.reauth_of
    if old is None or new.state != State.ESTABLISHED or new.queued(object):
        return
    new.reauth_of = None
    if old.reauth_by is new:
        old.reauth_by = None
    new.stats["reauth_completed"] += 1
    if old.state == State.DEAD:
        return
    old.take_tasks()                # nothing more on the old IKE SA: the new one carries on
    old.queue(IkeDeleteInitiator(reason="reauthenticated", replaced=True), now)
    new.emit(IkeSaReauthenticated(old))


def reauth_abandoned(new: IkeSA, reason: str) -> None:
    """The new IKE SA of a reauthentication died before it was up: the old one tries again later."""
    old = new.reauth_of
    new.reauth_of = None
    if old is None or old.reauth_by is not new:
        return
    old.reauth_by = None
    old.stats["reauth_failed"] += 1
    if old.state == State.ESTABLISHED:
        retry = new.now_seen + REAUTH_RETRY
        old.reauth_at = retry if old.expire_at is None else min(retry, old.expire_at)


__all__ = ["schedule_lifetimes", "lifetimes_due", "expire", "start_reauth", "finish_reauth", "reauth_abandoned",
           "REAUTH_RETRY"]
