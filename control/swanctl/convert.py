"""A parsed swanctl.conf (control/swanctl/parse.py) into ipsecgw's configuration (control/config/) as
plain data, with the list of what did not convert.

Only what maps is converted: a value ipsecgw would read differently is never passed on silently.  Each
thing left out is a ``Note`` with its swanctl path (``connections.rw.pools``) and why.  Settings at the
value that switches their feature off (``ipcomp = no``, ``reqid = 0``) are dropped without a note: ipsecgw
behaves that way already.  The mapping table is docs/migrating-from-strongswan.md.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control.config.child_section import _parse_ts
from control.ike.proposals import ProposalError, parse_proposals
from control.swanctl.parse import Section
from control.swanctl.secrets import convert_identity, convert_secrets

__all__ = ["Conversion", "Note", "convert"]


@dataclass(frozen=True)
class Note:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Conversion:
    """The ipsecgw configuration as data (connections and secrets) and what did not convert."""

    config: dict[str, Any] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)

    @property
    def converted(self) -> bool:
        return bool(self.config.get("connections"))


# swanctl connection settings ipsecgw has no counterpart for, with why; the value in _OFF is swanctl's
# default that leaves the feature off, so that spelling converts to nothing lost
_CONN_UNSUPPORTED = {
    "vips": "virtual IPs (configuration payload) are not supported",
    "pools": "address pools are not supported yet",
    "aggressive": "IKEv1 Aggressive Mode: only IKEv2 is spoken",
    "pull": "Mode Config is not supported",
    "dscp": "setting DSCP on IKE packets is not supported",
    "dpd_timeout": "IKEv1 only",
    "childless": "childless IKE_SA initiation is not supported",
    "send_certreq": "certificate requests are always sent with auth: pubkey",
    "send_cert": "our certificate is always sent with auth: pubkey",
    "ppk_id": "post-quantum preshared keys (RFC 8784) are not supported",
    "ppk_required": "post-quantum preshared keys (RFC 8784) are not supported",
    "keyingtries": "the number of connection attempts is not configurable",
    "unique": "connection uniqueness policies are not supported",
    "if_id_in": "XFRM interface IDs do not apply (no kernel IPsec)",
    "if_id_out": "XFRM interface IDs do not apply (no kernel IPsec)",
    "mediation": "IKE mediation is not supported",
    "mediated_by": "IKE mediation is not supported",
    "mediation_peer": "IKE mediation is not supported",
    "local_port": "the IKE port is gateway-wide here: set gateway.ike_port",
}
_CONN_OFF = {"aggressive": "no", "pull": "yes", "dscp": "000000", "if_id_in": "0", "if_id_out": "0",
             "mediation": "no", "ppk_required": "no", "local_port": "500", "send_certreq": "yes",
             "vips": "", "pools": "", "ppk_id": "", "mediated_by": "", "mediation_peer": "", "unique": "no"}
_CHILD_UNSUPPORTED = {
    "sha256_96": "96-bit truncated HMAC-SHA-256 is not supported",
    "rand_time": "child rekey jitter is not configurable",
    "rand_bytes": "child rekey jitter is not configurable",
    "rand_packets": "child rekey jitter is not configurable",
    "updown": "updown scripts are not run",
    "hostaccess": "updown scripts are not run",
    "policies": "policies are always installed",
    "policies_fwd_out": "there are no kernel forward policies",
    "dpd_action": "the action after a failed DPD is not configurable",
    "ipcomp": "IPComp is not supported",
    "inactivity": "inactivity timeouts are not supported",
    "reqid": "reqids do not apply (no kernel IPsec)",
    "priority": "policy priorities follow the selectors' specificity",
    "interface": "policies are not bound to interfaces",
    "mark_in": "XFRM marks do not apply (no kernel IPsec)", "mark_in_sa": "XFRM marks do not apply (no kernel IPsec)",
    "mark_out": "XFRM marks do not apply (no kernel IPsec)",
    "set_mark_in": "XFRM marks do not apply (no kernel IPsec)",
    "set_mark_out": "XFRM marks do not apply (no kernel IPsec)",
    "if_id_in": "XFRM interface IDs do not apply (no kernel IPsec)",
    "if_id_out": "XFRM interface IDs do not apply (no kernel IPsec)",
    "label": "security labels are not supported", "label_mode": "security labels are not supported",
    "tfc_padding": "traffic flow confidentiality padding is not supported",
    "replay_window": "the replay window is fixed",
    "hw_offload": "kernel hardware offload does not apply (see gateway.fastpath.offload)",
    "copy_df": "DF, ECN and DSCP copying is not configurable", "copy_ecn": "DF, ECN and DSCP copying is not "
    "configurable", "copy_dscp": "DF, ECN and DSCP copying is not configurable",
    "close_action": "the action when the peer closes a CHILD SA is not configurable",
}
_CHILD_OFF = {"sha256_96": "no", "updown": "", "hostaccess": "no", "policies": "yes", "policies_fwd_out": "no",
              "dpd_action": "clear", "ipcomp": "no", "inactivity": "0", "reqid": "0", "priority": "0",
              "interface": "", "mark_in": "0/0x00000000", "mark_in_sa": "no", "mark_out": "0/0x00000000",
              "set_mark_in": "0/0x00000000", "set_mark_out": "0/0x00000000", "if_id_in": "0", "if_id_out": "0",
              "label": "", "tfc_padding": "0", "hw_offload": "no", "close_action": "none"}
_AUTH_UNSUPPORTED = {
    "eap_id": "EAP is not supported", "aaa_id": "EAP is not supported", "xauth_id": "XAuth is not supported",
    "groups": "group membership checks are not supported",
    "cert_policy": "certificate policy checks are not supported",
    "ca_id": "CA identities are not supported: name the CA certificate in cacerts",
    "revocation": "revocation checks (CRL, OCSP) are not done",
    "round": "only one authentication round per side is supported",
}
# what control/config uses when a connection or child names no proposals
_DEFAULT_IKE = ("aes128gcm16-prfsha256-x25519", "aes128-sha256-modp2048")
_DEFAULT_ESP = ("aes128gcm16", "aes128-sha256")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)\s*$")
_TRUE, _FALSE = ("yes", "true", "enabled", "1"), ("no", "false", "disabled", "0")


def _split(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


def _bool(value: str) -> bool | None:
    v = value.strip().lower()
    return True if v in _TRUE else False if v in _FALSE else None


class _Converter:
    def __init__(self, root: Section, swanctl_dir: Path):
        self.root, self.dir = root, swanctl_dir
        self.notes: list[Note] = []
        self.child_names: set[str] = set()

    def note(self, path: str, reason: str) -> None:
        self.notes.append(Note(path, reason))

    def unsupported(self, sec: Section, path: str, table: dict[str, str], off: dict[str, str]) -> None:
        for key, s in sec.settings.items():
            if key in table and off.get(key) != s.value.strip().lower():
                self.note(f"{path}.{key}", table[key])

    # -- scalars ------------------------------------------------------------------------------------------

    def duration(self, sec: Section, key: str, path: str, out: dict[str, Any], to: str | None = None) -> None:
        v = sec.get(key)
        if v is None:
            return
        if _DURATION.match(v):
            out[to or key] = v.strip().replace(" ", "")
        else:
            self.note(f"{path}.{key}", f"{v!r} is not a time in seconds or with s, m, h or d")

    def size(self, sec: Section, key: str, path: str, out: dict[str, Any]) -> None:
        v = sec.get(key)
        if v is None:
            return
        if _SIZE.match(v):
            out[key] = v.strip().replace(" ", "")
        else:
            self.note(f"{path}.{key}", f"{v!r} is not a count (a number, optionally with k, M or G)")

    def proposals(self, value: str, path: str, protocol: str) -> list[str] | None:
        """The proposals ipsecgw understands; None (key left out: ipsecgw's defaults) when none is left."""
        kept = []
        for p in _split(value):
            p = p.rstrip("!")
            if p.lower() == "default":
                self.note(path, "'default' is strongSwan's default list: ipsecgw's own defaults are used "
                          "(docs/operator-guide.md)")
                continue
            try:
                parse_proposals(p, protocol)
            except ProposalError as exc:
                self.note(path, f"proposal {p!r} left out: {exc}")
                continue
            kept.append(p)
        return kept or None

    def addrs(self, value: str, path: str, remote: bool) -> list[str]:
        out = []
        for a in _split(value):
            if a in ("%any", "%any4", "%any6"):
                out.append("%any")
                continue
            try:
                out.append(str(ipaddress.ip_address(a)))
            except ValueError:
                what = "a subnet or range" if any(c in a for c in "/-") else "a host name"
                self.note(path, f"{a!r} left out: {what}; only IP addresses and %any are accepted")
        if remote and not out and _split(value):
            self.note(path, "no address left: the peer is accepted from any address (%any), and not initiated to")
        if "%any" in out and len(out) > 1:
            self.note(path, "%any left out: ipsecgw takes either addresses or %any alone")
            out = [a for a in out if a != "%any"]
        return out

    # -- connections --------------------------------------------------------------------------------------

    def connections(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        conns = self.root.sections.get("connections")
        if conns is None:
            return out
        for key in conns.settings:
            self.note(f"connections.{key}", "a setting outside any connection")
        for name, sec in conns.sections.items():
            c = self.connection(name, sec)
            if c is not None:
                out[name] = c
        return out

    def connection(self, name: str, sec: Section) -> dict[str, Any] | None:
        path = f"connections.{name}"
        version = (sec.get("version") or "0").strip()
        if version == "1":
            self.note(path, "IKEv1 connection not converted: only IKEv2 is spoken")
            return None
        if version not in ("0", "2"):
            self.note(f"{path}.version", f"{version!r} is not 0, 1 or 2: connection not converted")
            return None
        c: dict[str, Any] = {}
        for key, remote in (("local_addrs", False), ("remote_addrs", True)):
            if sec.get(key) is not None:
                a = self.addrs(sec.get(key) or "", f"{path}.{key}", remote)
                if a:
                    c[key] = a
        if sec.get("remote_port") is not None:
            port = sec.get("remote_port") or ""
            if port.isdigit() and 1 <= int(port) <= 65535:
                c["remote_port"] = int(port)
            else:
                self.note(f"{path}.remote_port", f"{port!r} is not a UDP port")
        if sec.get("proposals") is not None:
            props = self.proposals(sec.get("proposals") or "", f"{path}.proposals", "ike")
            if props:
                c["proposals"] = props
        else:
            self.note(f"{path}.proposals", "not set: strongSwan's default list is not ipsecgw's; ipsecgw's "
                      f"defaults are used ({', '.join(_DEFAULT_IKE)})")
        for key in ("encap", "mobike"):
            v = sec.get(key)
            if v is None:
                continue
            b = _bool(v)
            if b is None:
                self.note(f"{path}.{key}", f"{v!r} is not yes or no")
            elif key == "mobike" and b:
                self.note(f"{path}.mobike", "MOBIKE is not supported: converted as mobike: no")
                c["mobike"] = False
            else:
                c[key] = b
        frag = sec.get("fragmentation")
        if frag is not None:
            if frag.strip().lower() in ("yes", "accept", "force", "no"):
                c["fragmentation"] = frag.strip().lower()
            else:
                self.note(f"{path}.fragmentation", f"{frag!r} is not yes, accept, force or no")
        for key in ("dpd_delay", "rekey_time", "reauth_time", "over_time", "rand_time"):
            self.duration(sec, key, path, c)
        self.unsupported(sec, path, _CONN_UNSUPPORTED, _CONN_OFF)
        known = {"version", "local_addrs", "remote_addrs", "remote_port", "proposals", "encap", "mobike",
                 "fragmentation", "dpd_delay", "rekey_time", "reauth_time", "over_time", "rand_time",
                 *_CONN_UNSUPPORTED}
        for key in sec.settings:
            if key not in known:
                self.note(f"{path}.{key}", "not a connection setting swanctl.conf(5) documents")
        for side in ("local", "remote"):
            auth = self.auth_side(sec, side, path)
            if auth is False:
                return None
            if auth:
                c[side] = auth
        children = self.children(sec, path, c)
        for sub in sec.sections:
            if sub != "children" and not re.match(r"^(local|remote)", sub):
                self.note(f"{path}.{sub}", "not a section swanctl.conf(5) documents in a connection")
        if not children:
            self.note(path, "connection not converted: none of its children converted")
            return None
        c["children"] = children
        return c

    # -- local / remote -----------------------------------------------------------------------------------

    def auth_side(self, conn: Section, side: str, path: str) -> dict[str, Any] | None | bool:
        """The local or remote section: its data, None when absent, False when its method cannot be done
        (the connection is then left out)."""
        rounds = sorted((s for n, s in conn.sections.items() if n.startswith(side)),
                        key=lambda s: (int(s.get("round") or 0) if (s.get("round") or "0").isdigit() else 0))
        if not rounds:
            return None
        sec = rounds[0]
        p = f"{path}.{sec.name}"
        for extra in rounds[1:]:
            self.note(f"{path}.{extra.name}", "a second authentication round is not supported: connection "
                      "not converted")
            return False
        out: dict[str, Any] = {}
        method = (sec.get("auth") or "pubkey").strip().lower()
        if method == "psk":
            out["auth"] = "psk"
        elif method == "pubkey" or method.startswith(("pubkey-", "rsa", "ecdsa", "ed25519", "ed448")):
            out["auth"] = "pubkey"
            if method.startswith("rsa/pss"):
                out["rsa_pss"] = True
            elif method != "pubkey":
                self.note(f"{p}.auth", f"{method!r} converted as pubkey: signature scheme constraints are not "
                          "checked")
        else:
            kind = "EAP" if method.startswith("eap") else "XAuth" if method.startswith("xauth") else repr(method)
            self.note(f"{p}.auth", f"{kind} authentication is not supported: connection not converted")
            return False
        ident, why = convert_identity(sec.get("id") or "")
        if why:
            # without it the identity would be another (local) or any (remote)
            self.note(f"{p}.id", f"{(sec.get('id') or '').strip()!r}: {why}; connection not converted")
            return False
        if ident is not None:
            out["id"] = ident
        self.unsupported(sec, p, _AUTH_UNSUPPORTED, {"revocation": "relaxed"})
        for key in ("certs", "cacerts", "pubkeys"):
            files = self.files(sec, key, p)
            if files and key == "pubkeys":
                self.note(f"{p}.pubkeys", "raw public keys are not supported")
            elif files and key == "certs" and side == "remote":
                self.note(f"{p}.certs", "pinning the peer's certificate is not supported: cacerts decide")
            elif files:
                out[key] = files
        if out["auth"] == "pubkey":
            self.pubkey_material(out, side, p)
        known = {"auth", "id", "certs", "cacerts", "pubkeys", *_AUTH_UNSUPPORTED}
        for key in sec.settings:
            if key not in known and not key.startswith(("cert", "cacert")):
                self.note(f"{p}.{key}", "not an authentication setting swanctl.conf(5) documents")
        return out

    def files(self, sec: Section, key: str, path: str) -> list[str]:
        """certs/cacerts/pubkeys (comma lists) and cert<suffix>/cacert<suffix> sections, as paths: swanctl
        resolves a relative name in x509/, x509ca/ or pubkey/ of its directory."""
        sub = {"certs": "x509", "cacerts": "x509ca", "pubkeys": "pubkey"}[key]
        names = _split(sec.get(key) or "")
        prefix = {"certs": "cert", "cacerts": "cacert"}.get(key)
        for n, s in sec.sections.items():
            if prefix and n.startswith(prefix):
                if s.get("file"):
                    names.append(s.get("file") or "")
                else:
                    self.note(f"{path}.{n}", "certificates on tokens (handle, slot, module) are not supported")
        return [n if n.startswith("/") else str(self.dir / sub / n) for n in names if n]

    def pubkey_material(self, out: dict[str, Any], side: str, path: str) -> None:
        if side == "local":
            if not out.get("certs"):
                self.note(f"{path}.certs", "auth: pubkey without a certificate file (swanctl would pick one from "
                          "x509/): name it in local.certs")
                return
            key = self.private_key_for(out["certs"][0])
            if key is None:
                self.note(f"{path}.certs", f"no private key for {out['certs'][0]} found in "
                          f"{self.dir}/private, rsa, ecdsa or pkcs8: add local.key")
            else:
                out["key"] = key
        elif not out.get("cacerts"):
            cas = sorted(str(p) for p in (self.dir / "x509ca").glob("*") if p.is_file())
            if cas:
                out["cacerts"] = cas
                self.note(f"{path}.cacerts", f"not set: every CA certificate in {self.dir}/x509ca is trusted for "
                          "this connection, as charon does")
            else:
                self.note(f"{path}.cacerts", f"not set and {self.dir}/x509ca holds none: name the CA certificate "
                          "the peer's certificate chains to")

    def private_key_for(self, cert_path: str) -> str | None:
        """swanctl loads every key in private/, rsa/, ecdsa/ and pkcs8/ and picks the one matching the
        certificate; ipsecgw names the file, so find it the same way."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        try:
            data = Path(cert_path).read_bytes()
            cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(
                data)
            want = cert.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        except (OSError, ValueError):
            return None
        for sub in ("private", "rsa", "ecdsa", "pkcs8"):
            for p in sorted((self.dir / sub).glob("*")):
                try:
                    raw = p.read_bytes()
                    load = serialization.load_pem_private_key if b"-----BEGIN" in raw else \
                        serialization.load_der_private_key
                    key = load(raw, password=None)
                    have = key.public_key().public_bytes(serialization.Encoding.DER,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)
                except (OSError, ValueError, TypeError):
                    continue
                if have == want:
                    return str(p)
        return None

    # -- children -----------------------------------------------------------------------------------------

    def children(self, conn: Section, path: str, c: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        kids = conn.sections.get("children")
        if kids is None:
            self.note(f"{path}.children", "no children: ipsecgw needs at least one CHILD SA per connection")
            return out
        for name, sec in kids.sections.items():
            child = self.child(sec, f"{path}.children.{name}", c)
            if child is None:
                continue
            new = name
            if new in self.child_names:
                new = f"{path.split('.', 1)[1]}-{name}"
                self.note(f"{path}.children.{name}", f"renamed {new}: child names are unique across connections "
                          "in ipsecgw (initiate/terminate NAME)")
            self.child_names.add(new)
            out[new] = child
        return out

    def dynamic_ts(self, c: dict[str, Any], key: str) -> str | None:
        addrs = [a for a in c.get(key, []) if a != "%any"]
        if len(addrs) != 1:
            return None
        a = ipaddress.ip_address(addrs[0])
        return f"{a}/{a.max_prefixlen}"

    def ts(self, sec: Section, key: str, path: str, c: dict[str, Any]) -> list[str] | None:
        value = sec.get(key) or "dynamic"
        out = []
        for t in _split(value):
            text = t
            if t.startswith("dynamic"):
                host = self.dynamic_ts(c, "local_addrs" if key == "local_ts" else "remote_addrs")
                if host is None:
                    self.note(f"{path}.{key}", f"{t!r}: dynamic (the IKE address) is resolved here only with "
                              "exactly one address in " + ("local_addrs" if key == "local_ts" else "remote_addrs"))
                    return None
                text = host + t[len("dynamic"):]
            ports = re.search(r"\[[^\]]*/([^\]]*)\]", text)
            if ports and re.search(r"[A-Za-z]", ports.group(1)) and ports.group(1).strip() not in ("%any", "any"):
                self.note(f"{path}.{key}", f"{t!r} left out: service names are not supported: write the port number")
                continue
            try:
                net = text.split("[", 1)[0].strip()
                if "/" not in net:      # a host: ipsecgw takes the prefix spelled out
                    text = f"{net}/{ipaddress.ip_address(net).max_prefixlen}" + text[len(text.split('[', 1)[0]):]
                _parse_ts(text)
            except ValueError as exc:
                self.note(f"{path}.{key}", f"{t!r} left out: {exc}")
                continue
            out.append(text)
        return out or None

    def child(self, sec: Section, path: str, c: dict[str, Any]) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        # what is lost is listed even when the child then fails on something else
        self.unsupported(sec, path, _CHILD_UNSUPPORTED, _CHILD_OFF)
        known = {"mode", "local_ts", "remote_ts", "esp_proposals", "ah_proposals", "start_action", "rekey_time",
                 "life_time", "rekey_bytes", "life_bytes", "rekey_packets", "life_packets", *_CHILD_UNSUPPORTED}
        for key in sec.settings:
            if key not in known:
                self.note(f"{path}.{key}", "not a child setting swanctl.conf(5) documents")
        for sub in sec.sections:
            self.note(f"{path}.{sub}", "not a section swanctl.conf(5) documents in a child")
        mode = (sec.get("mode") or "tunnel").strip().lower()
        if mode not in ("tunnel", "transport"):
            self.note(f"{path}.mode", f"{mode} is not supported (tunnel or transport): child not converted")
            return None
        for key in ("local_ts", "remote_ts"):
            ts = self.ts(sec, key, path, c)
            if ts is None:
                self.note(path, f"child not converted: no usable {key}")
                return None
            out[key] = ts
        esp, ah = sec.get("esp_proposals"), sec.get("ah_proposals")
        if esp is not None and ah is not None and ah.strip():
            self.note(f"{path}.ah_proposals", "AH+ESP bundles are not supported: child not converted")
            return None
        if ah is not None and ah.strip():
            props = self.proposals(ah, f"{path}.ah_proposals", "ah")
            if props is None:
                self.note(path, "child not converted: no AH proposal ipsecgw supports")
                return None
            out["ah_proposals"] = props
        elif esp is not None:
            props = self.proposals(esp, f"{path}.esp_proposals", "esp")
            if props:
                out["esp_proposals"] = props
        else:
            self.note(f"{path}.esp_proposals", "not set: strongSwan's default list is not ipsecgw's; ipsecgw's "
                      f"defaults are used ({', '.join(_DEFAULT_ESP)})")
        if mode != "tunnel":
            out["mode"] = mode
        start = (sec.get("start_action") or "none").strip().lower()
        if start not in ("none", "trap", "start"):
            self.note(f"{path}.start_action", f"{start!r} is not supported (none, trap or start): none used")
        elif start != "none" and not any(a != "%any" for a in c.get("remote_addrs", ["%any"])):
            self.note(f"{path}.start_action", f"{start}: remote_addrs is %any, there is no peer to initiate to: "
                      "none used")
        elif start != "none":
            out["start_action"] = start
        for key in ("rekey_time", "life_time"):
            self.duration(sec, key, path, out)
        for key in ("rekey_bytes", "life_bytes", "rekey_packets", "life_packets"):
            self.size(sec, key, path, out)
        return out


def convert(root: Section, swanctl_dir: str | Path) -> Conversion:
    """``root`` (a whole swanctl.conf) as ipsecgw configuration data; ``swanctl_dir`` is where relative
    certificate and key names are looked up (x509/, x509ca/, private/ ...), as swanctl's --dir."""
    cv = _Converter(root, Path(swanctl_dir))
    config: dict[str, Any] = {}
    conns = cv.connections()
    if conns:
        config["connections"] = conns
    secrets = convert_secrets(root.sections.get("secrets"), cv.note)
    if secrets:
        config["secrets"] = secrets
    for name, sec in root.sections.items():
        if name == "pools":
            for pool in sec.sections or {"": sec}:
                cv.note(f"pools.{pool}" if pool else "pools", "address pools are not supported yet")
        elif name == "authorities":
            for auth in sec.sections or {"": sec}:
                cv.note(f"authorities.{auth}" if auth else "authorities", "certification authority sections "
                        "(CRL/OCSP URIs, tokens) are not supported: name CA files in remote.cacerts")
        elif name not in ("connections", "secrets"):
            cv.note(name, "not a top-level section swanctl.conf(5) documents")
    for key in root.settings:
        cv.note(key, "a setting outside any section")
    return Conversion(config, cv.notes)
