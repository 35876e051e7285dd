"""A Debian 13 (trixie) root with strongSwan 6.1 from Debian forky, for the post-quantum interop tests.

Debian 13's own strongSwan 6.0.1 offers no ML-KEM; 6.1.0 from forky (testing) does through its openssl
plugin, against trixie's OpenSSL 3.5.  The root is built once with debootstrap from the machine's apt
mirror and cached outside the repository (``IPSECGW_PQ_ROOT``, default /var/cache/ipsecgw/pq-trixie-sw61);
only the strongSwan packages are pinned to forky.  The mirror's forky Release file is past its Valid-Until
date, so that source carries ``Check-Valid-Until: no`` (signatures are still checked).

``python tests/support/pq_root.py`` builds it (root, network to the mirror, a few minutes);
``pq_root()`` gives its path, or raises ``RootUnavailable`` with the reason a test skips with.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(os.environ.get("IPSECGW_PQ_ROOT", "/var/cache/ipsecgw/pq-trixie-sw61"))
STAMP = "ipsecgw-pq-root.ok"
MIRROR = os.environ.get("IPSECGW_DEBIAN_MIRROR", "http://deb.debian.org/debian")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
FORKY_PACKAGES = ("charon-systemd", "strongswan-swanctl", "strongswan-libcharon", "libstrongswan",
                  "libstrongswan-standard-plugins", "libstrongswan-extra-plugins", "libcharon-extra-plugins")
# forky's strongSwan 6.1.0-2 is built against forky's glibc (libc6 >= 2.42): that comes along, the rest
# (OpenSSL 3.5 above all) stays trixie's
FORKY_ALSO = ("libc6", "libc-bin")


class RootUnavailable(RuntimeError):
    """The strongSwan 6.1 root is not built and cannot be built here (the message says why)."""


def _run(cmd: list[str], log) -> None:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, timeout=1800)


def build(root: Path = ROOT) -> Path:
    """Build the root (idempotent: a finished root is reused).  Raises RootUnavailable on failure."""
    if (root / STAMP).exists():
        return root
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        raise RootUnavailable("building the strongSwan 6.1 root needs root and debootstrap")
    tmp = root.with_name(root.name + ".tmp")
    if not (tmp / "debootstrap.ok").exists():      # a failed package step keeps the base system
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    log_path = root.with_name(root.name + ".log")
    with open(log_path, "w") as log:
        try:
            if not (tmp / "debootstrap.ok").exists():
                _run(["debootstrap", "--variant=minbase", f"--keyring={KEYRING}", "trixie", str(tmp), MIRROR], log)
                (tmp / "debootstrap.ok").write_text("")
            (tmp / "etc/apt/sources.list.d/forky.sources").write_text(
                f"Types: deb\nURIs: {MIRROR}\nSuites: forky\nComponents: main\nSigned-By: {KEYRING}\n"
                "Check-Valid-Until: no\n")
            (tmp / "etc/apt/preferences.d/strongswan-forky").write_text(
                "Package: *\nPin: release n=forky\nPin-Priority: 100\n\n"
                f"Package: {' '.join(FORKY_PACKAGES + FORKY_ALSO)}\nPin: release n=forky\nPin-Priority: 990\n")
            # no service starts inside the chroot while packages install
            (tmp / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
            (tmp / "usr/sbin/policy-rc.d").chmod(0o755)
            env = ["env", "DEBIAN_FRONTEND=noninteractive"]
            _run(["chroot", str(tmp), *env, "apt-get", "update"], log)
            _run(["chroot", str(tmp), *env, "apt-get", "install", "-y", "--no-install-recommends",
                  *FORKY_PACKAGES, "iproute2"], log)
            out = subprocess.run(["chroot", str(tmp), "dpkg-query", "-W", "-f=${Version}", "charon-systemd"],
                                 capture_output=True, text=True, check=True).stdout
            if not out.startswith("6.1"):
                raise RootUnavailable(f"forky gave charon-systemd {out!r}, not 6.1")
        except (subprocess.SubprocessError, OSError) as exc:
            raise RootUnavailable(f"building the strongSwan 6.1 root failed ({exc}); see {log_path}") from None
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    (root / STAMP).write_text("strongSwan 6.1 from forky on trixie\n")
    return root


def pq_root() -> Path:
    """The built root; RootUnavailable (a skip reason) when it is not there."""
    if (ROOT / STAMP).exists():
        return ROOT
    raise RootUnavailable(f"no strongSwan 6.1 root at {ROOT}: build it with `python tests/support/pq_root.py` "
                          "(root, debootstrap, the Debian mirror)")


if __name__ == "__main__":
    try:
        print(build())
    except RootUnavailable as exc:
        sys.exit(str(exc))
