"""CHILD SA keying, shared by IKE_AUTH and CREATE_CHILD_SA: the responder's ESP or AH choice, the
initiator's selector checks, and KEYMAT into the inbound/outbound SA pair (RFC 7296 §2.17) that leaves the
IKE core as plain data (``cdefs.sa.SA`` in a ``ChildSaEstablished`` event).

AH (RFC 4302) authenticates the outer addresses, which a NAT rewrites, and UDP encapsulation (RFC 3948)
carries ESP only: an AH child is never negotiated over an IKE SA that detected a NAT or forces encap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cdefs.sa import SA, Mode
from control.ike.config import ChildConfig
from control.ike.constants import MIN_NEGOTIATED_SPI, Notify, ProtocolId
from control.ike.crypto import child_keymat
from control.ike.events import ChildSaEstablished, ChildState, IkeError
from control.ike.explain import ts_widened
from control.ike.message import Message
from control.ike.proposals import EspSuite, ProposalError, child_suite
from control.ike.sa_payload import Proposal
from control.ike.ts import covered, to_fastpath
from control.ike.ts_payload import TrafficSelectorEntry, TSPayload

if TYPE_CHECKING:
    from control.ike.sa import IkeSA


def install_child(sa: IkeSA, child: ChildState, *, exchange_initiator: bool | None = None,
                  nonce_i: bytes | None = None, nonce_r: bytes | None = None, g_ir: bytes = b"",
                  rekey_of: int | None = None) -> ChildSaEstablished:
    """Derive KEYMAT and build the inbound and outbound fastpath SAs (RFC 7296 §2.17).

    In IKE_AUTH the nonces are the IKE SA's and there is no g^ir; in CREATE_CHILD_SA they are the
    exchange's nonces and, with PFS, its new shared secret.  "Initiator" is the exchange's initiator:
    its outbound keys come first in KEYMAT."""
    assert sa.suite is not None and sa.keys is not None and child.suite is not None
    s = child.suite
    ini = sa.initiator if exchange_initiator is None else exchange_initiator
    ei, ai, er, ar = child_keymat(sa.suite.prf, sa.keys.sk_d, sa.nonce_i if nonce_i is None else nonce_i,
                                  sa.nonce_r if nonce_r is None else nonce_r, s.enc_key_len, s.integ_key_len,
                                  g_ir)
    (out_e, out_a), (in_e, in_a) = ((ei, ai), (er, ar)) if ini else ((er, ar), (ei, ai))
    local, remote = sa.local_ip, sa.remote_ip
    encap = sa.use_natt
    if s.proto == "ah" and encap:
        # the tasks refuse an AH child behind a NAT before keying; this keeps any path from getting here
        raise IkeError(Notify.NO_PROPOSAL_CHOSEN, ah_nat_reason(sa, child.config.name))
    ours, theirs = sa.esp_ports
    lts = [to_fastpath(t) for t in child.local_ts]
    rts = [to_fastpath(t) for t in child.remote_ts]
    common = dict(enc=s.enc, integ=s.integ, mode=child.config.mode, esn=s.esn, udp_encap=encap,
                  local_ts=lts, remote_ts=rts, proto=s.proto)
    outbound = SA(spi=child.spi_out, src=local, dst=remote, enc_key=out_e, integ_key=out_a, sport=ours,
                  dport=theirs, **common)
    inbound = SA(spi=child.spi_in, src=remote, dst=local, enc_key=in_e, integ_key=in_a, sport=theirs,
                 dport=ours, **common)
    sa.children.append(child)
    return ChildSaEstablished(child.config.name, inbound, outbound, s, child.local_ts, child.remote_ts, rekey_of,
                              initiator=ini)


def ah_nat_reason(sa: IkeSA, name: str) -> str:
    why = "encap is forced" if sa.config.encap else "a NAT was detected"
    return f"AH cannot traverse NAT: CHILD SA {name} is AH and {why} (UDP encapsulation carries ESP only)"


def ah_blocked(sa: IkeSA, child: ChildConfig) -> bool:
    """Whether child is AH on an IKE SA whose traffic must go in UDP (a NAT, or encap forced)."""
    return child.protocol == ProtocolId.AH and sa.use_natt


def child_choice(child: ChildConfig, chosen: Proposal | None, transport: bool, sa: IkeSA | None = None) -> EspSuite:
    """A responder's checks on the ESP or AH proposal it chose for child (None: none fitted): the suite,
    or IkeError with what to refuse the child with.  With ``sa``, an AH child behind a NAT is refused."""
    what = "AH" if child.protocol == ProtocolId.AH else "ESP"
    if chosen is None or len(chosen.spi) != 4 or int.from_bytes(chosen.spi, "big") < MIN_NEGOTIATED_SPI:
        raise IkeError(Notify.NO_PROPOSAL_CHOSEN, f"no acceptable {what} proposal for {child.name}")
    if chosen.protocol != child.protocol:
        raise IkeError(Notify.NO_PROPOSAL_CHOSEN, f"{child.name} is configured for {what}")
    if sa is not None and ah_blocked(sa, child):
        sa.stats["child_ah_refused_nat"] += 1
        raise IkeError(Notify.NO_PROPOSAL_CHOSEN, ah_nat_reason(sa, child.name))
    try:
        suite = child_suite(chosen)
    except ProposalError as exc:
        raise IkeError(Notify.NO_PROPOSAL_CHOSEN, str(exc)) from None
    if transport != (child.mode == Mode.TRANSPORT):
        raise IkeError(Notify.NO_PROPOSAL_CHOSEN, f"mode mismatch for {child.name}")
    return suite


def accept_selectors(state: ChildState, msg: Message, tsi: TSPayload, tsr: TSPayload,
                     local_ts: list[TrafficSelectorEntry], remote_ts: list[TrafficSelectorEntry], mode: Mode) -> None:
    """An initiator's checks on the responder's TSi/TSr (within what it asked for) and mode;
    the selectors then become the CHILD SA's."""
    if not all(covered(t, local_ts) for t in tsi.selectors) or \
            not all(covered(t, remote_ts) for t in tsr.selectors):
        raise IkeError(Notify.TS_UNACCEPTABLE, "responder widened the traffic selectors",
                       detail=ts_widened(tsi.selectors, tsr.selectors, local_ts, remote_ts))
    if bool(msg.notifies(Notify.USE_TRANSPORT_MODE)) != (mode == Mode.TRANSPORT):
        raise IkeError(Notify.NO_PROPOSAL_CHOSEN, "responder did not agree on the mode")
    state.local_ts, state.remote_ts = list(tsi.selectors), list(tsr.selectors)
