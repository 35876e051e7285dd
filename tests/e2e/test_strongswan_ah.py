"""AH CHILD SAs negotiated between ``ipsecgw run`` (kernel I/O, gateway A) and strongSwan 5.9.8's charon
(gateway B of ``Topology``).

What strongSwan can and cannot show here (found by experiment, 5.9.8 on Debian 12):

- charon can *negotiate* AH (swanctl ``ah_proposals``) but cannot *carry* it on this machine: its
  kernel-libipsec plugin has no AH at all, and this kernel's XFRM has no AH either (``ip xfrm state add
  ... proto ah`` answers "Requested type not found"; charon's kernel-netlink gets EPROTONOSUPPORT).  So no
  AH packet ever flows between charon and us: the AH data plane is shown against scapy's AH instead
  (tests/unit/test_ah_reference.py, tests/e2e/test_kio_ah.py).
- With kernel-libipsec loaded (the plugin set every other charon test uses) charon fakes a NAT
  ("faking NAT situation to enforce UDP encapsulation") whatever the connection's ``encap`` says, so
  our side sees a NAT and refuses the AH child with "AH cannot traverse NAT".  That is the only AH
  outcome reachable with kernel-libipsec.
- With kernel-libipsec left out of charon's plugin list (kernel-netlink only) there is no faked NAT,
  the exchange runs to the end, and charon fails only at installing the SAs; what it does then is
  what these tests assert: as initiator it sends a Delete for the AH child, as responder it answers
  NO_PROPOSAL_CHOSEN after selecting our proposal.  Either way no AH CHILD SA stays up with charon.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from support.gateway_harness import GatewayProc, gateway_a_with_charon
from support.netns_tools import PSK, Topology, gateway_config
from support.strongswan import Charon, interop_marks, swanctl_conf

pytestmark = interop_marks()
TAG = f"sa{os.getpid() % 10000}"


def _charon(t: Topology, child: str, *, encap: bool, libipsec: bool) -> Charon:
    """charon as gateway B with one child whose proposal line is ``child`` (e.g. "ah_proposals =
    sha512,sha256"); libipsec False drops kernel-libipsec from its plugins, leaving kernel-netlink."""
    conf = swanctl_conf(local="192.0.2.2", remote="192.0.2.1", local_id="gw-b.example", remote_id="gw-a.example",
                        psk=PSK, ike="aes128gcm16-prfsha256-x25519", esp="@CHILD@", local_ts="10.2.0.0/24",
                        remote_ts="10.1.0.0/24")
    conf = conf.replace("esp_proposals = @CHILD@", child).replace("encap = yes", f"encap = {'yes' if encap else 'no'}")
    charon = Charon(t.gB, conf)
    if not libipsec:
        path = charon.dir / "strongswan.conf"
        text = path.read_text()
        assert "kernel-libipsec " in text
        path.write_text(text.replace("kernel-libipsec ", ""))
    return charon


def _our_config(tmp: Path, child: str | None) -> tuple[Path, Path]:
    """Gateway A's config with its child's proposals replaced by ``child`` (a YAML line's value part,
    e.g. "ah_proposals: [sha256]"), or kept ESP (aes128gcm16) when None."""
    cfg, sock, _ = gateway_config(tmp, "A", encap=False)
    if child is not None:
        text = cfg.read_text()
        assert "esp_proposals: [aes128gcm16]" in text
        cfg.write_text(text.replace("esp_proposals: [aes128gcm16]", child))
    return cfg, sock


def _wait_for(read, pattern: str, what: str, timeout: float = 20) -> re.Match:
    """The first match of pattern in read() once it appears (logs are written a moment after the event)."""
    deadline = time.monotonic() + timeout
    while True:
        m = re.search(pattern, read(), re.M)
        if m:
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: no /{pattern}/ within {timeout} s:\n{read()[-4000:]}")
        time.sleep(0.1)


def _initiate(charon: Charon) -> str:
    """``swanctl --initiate`` of the child: its output whether charon says it succeeded or not."""
    try:
        return charon.swanctl("--initiate", "--child", "net", timeout=30)
    except RuntimeError as e:
        return str(e)


def _established_ike(gw: GatewayProc) -> dict:
    ikes = gw.json("list-sas")
    assert len(ikes) == 1 and ikes[0]["state"] == "ESTABLISHED", ikes
    return ikes[0]


@pytest.mark.parametrize(("theirs", "ours", "offered", "selected", "our_name"), [
    ("sha512,sha256", "[sha256]", "AH:HMAC_SHA2_512_256/NO_EXT_SEQ, AH:HMAC_SHA2_256_128/NO_EXT_SEQ",
     "AH:HMAC_SHA2_256_128/NO_EXT_SEQ", "AH/hmac-sha256-128"),
    ("aes256gmac,sha1", "[aes256gmac]", "AH:AES_256_GMAC/NO_EXT_SEQ, AH:HMAC_SHA1_96/NO_EXT_SEQ",
     "AH:AES_256_GMAC/NO_EXT_SEQ", "AH/aes-gmac-256"),
    ("sha384-esn", "[sha384-esn]", "AH:HMAC_SHA2_384_192/EXT_SEQ", "AH:HMAC_SHA2_384_192/EXT_SEQ",
     "AH/hmac-sha384-192/ESN"),
], ids=["sha256", "aes256gmac", "sha384-esn"])
def test_charon_initiates_ah_and_fails_the_install_then_deletes_it(tmp_path: Path, theirs: str, ours: str,
                                                                   offered: str, selected: str,
                                                                   our_name: str) -> None:
    """charon (kernel-netlink only, ``encap = no``) initiates an AH child (e.g. ``ah_proposals =
    sha512,sha256`` to our ``[sha256]``; also AES-256-GMAC, and HMAC-SHA2-384 with ESN).

    Shown: charon's offer reaches us and our answer is the AH proposal charon accepts ("selected
    proposal: AH:HMAC_SHA2_256_128/NO_EXT_SEQ" etc.: integrity transform and ESN both understood), and
    we install our side of the pair; charon's install fails (for the HMACs the kernel refuses our SPIs:
    no AH in XFRM here; for AES-GMAC kernel-netlink gives up without a netlink request); charon then
    sends a Delete for the AH child naming our outbound SPI, which we answer and act on (the child
    removed, "deleted by the peer"); both IKE SAs stay up with the same SPIs.
    Not shown: any AH packet between charon and us (charon has nowhere to install AH)."""
    with Topology(TAG) as t:
        cfg, sock = _our_config(tmp_path, f"ah_proposals: {ours}")
        charon = _charon(t, f"ah_proposals = {theirs}", encap=False, libipsec=False)
        with gateway_a_with_charon(t, cfg, sock, tmp_path / "gwA.log", charon) as gw:
            _initiate(charon)
            got = _wait_for(gw.text, rf"CHILD SA net\{{peer\[\d+\]\}} installed: {re.escape(our_name)}, "
                            r"SPIs in 0x([0-9a-f]{8}) out 0x([0-9a-f]{8})", "our install")
            spi_in, spi_out = got.group(1), got.group(2)
            log = charon.log_text
            assert f"configured proposals: {offered}\n" in log()
            _wait_for(log, rf"selected proposal: {re.escape(selected)}$", "charon's choice")
            _wait_for(log, r"unable to install inbound and outbound IPsec SA \(SAD\) in kernel", "install")
            if "GMAC" in selected:
                # kernel-netlink gives up on AH-GMAC before asking the kernel: no netlink error is logged
                assert "unable to add SAD entry" not in log()
            else:
                assert f"unable to add SAD entry with SPI {spi_out} " in log()
                assert f"unable to add SAD entry with SPI {spi_in} " in log()
            _wait_for(log, rf"sending DELETE for AH CHILD_SA with SPI {spi_out}$", "charon's Delete")
            _wait_for(gw.text, rf"CHILD SA net of peer removed \(deleted by the peer\): SPIs in 0x{spi_in} "
                      rf"out 0x{spi_out}", "our removal")
            _wait_for(log, r"parsed INFORMATIONAL response \d+ \[ D \]", "our Delete answer")
            ike = _established_ike(gw)
            assert ike["children"] == [] and not ike["initiator"] and ike["nat"] == {"local": False, "remote": False}
            listing = charon.list_sas()
            assert "ESTABLISHED" in listing and ike["spi_i"] in listing and ike["spi_r"] in listing, listing
            assert "INSTALLED" not in listing, listing
            assert gw.proc.poll() is None and "Traceback" not in gw.text()


@pytest.mark.parametrize("encap", [False, True], ids=["encap-no", "encap-yes"])
def test_kernel_libipsec_fakes_a_nat_so_we_refuse_its_ah_child(tmp_path: Path, encap: bool) -> None:
    """charon with kernel-libipsec (the usual plugin set) initiates an AH child (``ah_proposals =
    sha256``), with ``encap = no`` and with ``encap = yes``.

    Shown: in both cases charon logs "faking NAT situation to enforce UDP encapsulation" and moves to
    port 4500; we see the NAT, refuse the child with NO_PROPOSAL_CHOSEN and log "AH cannot traverse
    NAT"; charon logs the NO_PROPOSAL_CHOSEN notify and keeps the IKE SA, as do we.
    Not shown: that ``encap = no`` changes anything (kernel-libipsec fakes the NAT regardless)."""
    with Topology(f"{TAG}{'y' if encap else 'n'}") as t:
        cfg, sock = _our_config(tmp_path, "ah_proposals: [sha256]")
        charon = _charon(t, "ah_proposals = sha256", encap=encap, libipsec=True)
        with gateway_a_with_charon(t, cfg, sock, tmp_path / "gwA.log", charon) as gw:
            out = _initiate(charon)
            assert "establishing CHILD_SA 'net' failed" in out, out
            # the last line charon logs for this child: every line asserted below comes before it
            _wait_for(charon.log_text, r"failed to establish CHILD_SA, keeping IKE_SA", "charon")
            log = charon.log_text()
            assert "faking NAT situation to enforce UDP encapsulation" in log
            assert "configured proposals: AH:HMAC_SHA2_256_128/NO_EXT_SEQ" in log
            assert "received NO_PROPOSAL_CHOSEN notify, no CHILD_SA built" in log
            assert "failed to establish CHILD_SA, keeping IKE_SA" in log
            _wait_for(gw.text, r"CHILD SA net of peer\[\d+\] failed: NO_PROPOSAL_CHOSEN sent to the peer "
                      r"\(AH cannot traverse NAT: CHILD SA net is AH and a NAT was detected", "our refusal")
            ike = _established_ike(gw)
            assert ike["children"] == [] and ike["nat"]["remote"] and ike["remote"]["port"] == 4500
            assert "ESTABLISHED" in charon.list_sas()
            assert gw.proc.poll() is None and "Traceback" not in gw.text()


def test_we_initiate_ah_and_charon_answers_no_proposal_chosen_after_its_failed_install(tmp_path: Path) -> None:
    """We initiate (host A's ping raises the ACQUIRE) with ``ah_proposals: [sha512, sha256]``;
    charon (kernel-netlink only, responder) is configured with ``ah_proposals = sha384,sha256``.

    Shown: charon parses our AH offer as the two proposals we encoded, selects
    AH:HMAC_SHA2_256_128/NO_EXT_SEQ, tries to install both SAs before answering, fails in the kernel
    and then answers IKE_AUTH with NO_PROPOSAL_CHOSEN (not with the SA it had selected); we log the
    refused child and keep the IKE SA, which charon keeps too.
    Not shown: an AH CHILD SA with charon as responder, nor any AH packet (no AH in charon's kernel)."""
    with Topology(f"{TAG}i") as t:
        cfg, sock = _our_config(tmp_path, "ah_proposals: [sha512, sha256]")
        charon = _charon(t, "ah_proposals = sha384,sha256", encap=False, libipsec=False)
        with gateway_a_with_charon(t, cfg, sock, tmp_path / "gwA.log", charon) as gw:
            assert not t.ping(1, 0.5)["got"]
            _wait_for(gw.text, r"CHILD SA net of peer\[\d+\] failed: NO_PROPOSAL_CHOSEN from the peer "
                      r"\(peer refused the CHILD SA\)", "our refused child")
            log = charon.log_text()
            assert "received proposals: AH:HMAC_SHA2_512_256/NO_EXT_SEQ, AH:HMAC_SHA2_256_128/NO_EXT_SEQ" in log, log
            assert re.search(r"selected proposal: AH:HMAC_SHA2_256_128/NO_EXT_SEQ$", log, re.M), log
            assert len(re.findall(r"unable to add SAD entry with SPI [0-9a-f]{8} ", log)) == 2, log
            assert "unable to install inbound and outbound IPsec SA (SAD) in kernel" in log
            assert "generating IKE_AUTH response 1 [ IDr AUTH N(NO_PROP) ]" in log
            ike = _established_ike(gw)
            assert ike["initiator"] and ike["children"] == [] and ike["nat"] == {"local": False, "remote": False}
            listing = charon.list_sas()
            assert "ESTABLISHED" in listing and ike["spi_i"] in listing and "INSTALLED" not in listing, listing
            assert gw.proc.poll() is None and "Traceback" not in gw.text()


@pytest.mark.parametrize(("theirs", "ours", "our_reason"), [
    ("esp_proposals = aes128gcm16", "ah_proposals: [sha256]", "no acceptable AH proposal for net"),
    ("ah_proposals = sha384,sha256", None, "no acceptable ESP proposal for net"),
], ids=["charon-esp-we-ah", "charon-ah-we-esp"])
def test_ah_against_esp_is_no_proposal_chosen_in_both_logs(tmp_path: Path, theirs: str, ours: str | None,
                                                           our_reason: str) -> None:
    """charon (kernel-netlink only, so no NAT is faked) initiates a child with the other protocol than
    ours: an ESP offer to our AH child, and an AH offer to our ESP child.

    Shown: we answer NO_PROPOSAL_CHOSEN and log which protocol we wanted; charon logs the notify and
    keeps the IKE SA, as we do.  This path never reaches charon's kernel, so nothing is left unshown."""
    with Topology(f"{TAG}m") as t:
        cfg, sock = _our_config(tmp_path, ours)
        charon = _charon(t, theirs, encap=False, libipsec=False)
        with gateway_a_with_charon(t, cfg, sock, tmp_path / "gwA.log", charon) as gw:
            out = _initiate(charon)
            assert "establishing CHILD_SA 'net' failed" in out, out
            # the last line charon logs for this child: every line asserted below comes before it
            _wait_for(charon.log_text, r"failed to establish CHILD_SA, keeping IKE_SA", "charon")
            log = charon.log_text()
            assert "parsed IKE_AUTH response 1 [ IDr AUTH N(NO_PROP) ]" in log
            assert "received NO_PROPOSAL_CHOSEN notify, no CHILD_SA built" in log
            assert "failed to establish CHILD_SA, keeping IKE_SA" in log
            _wait_for(gw.text, rf"CHILD SA net of peer\[\d+\] failed: NO_PROPOSAL_CHOSEN sent to the peer "
                      rf"\({our_reason}\)", "our refusal")
            ike = _established_ike(gw)
            assert ike["children"] == [] and ike["nat"] == {"local": False, "remote": False}
            assert "ESTABLISHED" in charon.list_sas()
            assert gw.proc.poll() is None and "Traceback" not in gw.text()
