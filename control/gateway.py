"""The control process as ``ipsecgw run`` runs it: the IKE daemon with the gateway's parts plugged in.

- the control socket's commands: ``initiate``/``terminate``/``rekey``, ``list-sas`` (with each CHILD
  SA's engine, placement and counters, ``control.fastpath_view``), ``export-keys``, ``status`` (with
  processes, I/O mode, engines and totals), ``list-policies`` and ``reload`` (``control.commands``);
- **adoption after a restart** (supervised mode only, ``control.adoption``): a crashed predecessor's
  SAs and policies keep forwarding until their children are renegotiated;
- ``gateway.metrics.listen``: Prometheus's /metrics (``control.metrics``);
- a rekeyed CHILD SA's inbound SA outlives the peer's Delete by ``REKEYED_INBOUND_DELAY``.
"""

from __future__ import annotations

from control.adoption import Adoption
from control.commands.gateway_status import GatewayStatus
from control.commands.keys import KeyExport
from control.commands.lifecycle import LifecycleCommands
from control.commands.policies import PolicyListing
from control.commands.pools import PoolListing
from control.commands.reload import ReloadCommand
from control.commands.sas import SaListing
from control.config import Config
from control.daemon import Daemon, run_until_signal
from control.fastpath_view import FastpathView

__all__ = ["build_gateway", "run_gateway", "REKEYED_INBOUND_DELAY"]

REKEYED_INBOUND_DELAY = 3.0  # a rekeyed CHILD SA's inbound SA outlives the peer's Delete this long (as
                             # strongSwan's delete_rekeyed_delay): packets sent on it just before still arrive


def build_gateway(config: Config, config_path: str | None = None, *, supervised: bool = False) -> Daemon:
    """The daemon with every part ``ipsecgw run`` has."""
    daemon = Daemon(config, control_only=not supervised, rekeyed_inbound_delay=REKEYED_INBOUND_DELAY)
    adoption = Adoption(daemon)
    if supervised:
        daemon.region_opener = adoption.open_region
    view = FastpathView(daemon, adoption)
    reload = ReloadCommand(daemon, config_path)
    daemon.parts += [
        LifecycleCommands(daemon),
        SaListing(daemon, view),
        KeyExport(daemon),
        GatewayStatus(daemon, view, config_path, lambda: reload.count),
        PolicyListing(daemon, adoption),
        PoolListing(daemon),
        reload,
        adoption,
    ]
    if config.gateway.metrics_listen is not None:     # gateway.metrics.listen: /metrics (docs/metrics.md)
        from control.metrics.server import MetricsServer

        daemon.parts.append(MetricsServer(daemon, view, config.gateway.metrics_listen))
    return daemon


async def run_gateway(config: Config, config_path: str, *, supervised: bool) -> int:
    """The control process: run until SIGTERM/SIGINT; returns the exit code."""
    return await run_until_signal(build_gateway(config, config_path, supervised=supervised))
