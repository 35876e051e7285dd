"""The gateway's YAML configuration, shaped like strongSwan's swanctl.conf.

``load_config(path)`` returns a ``Config`` or raises one ``ConfigError`` that
lists every problem found.  Each problem names the file, the line, the path to
the field (``connections.site-b.children.net.esp_proposals[0]``) and what was
expected.  Unknown keys are errors, not silently ignored.  Secrets never appear
in a message or a repr: a bad secret is described by its shape only.

Layout (see examples/ and docs/daemon.md)::

    gateway:      shm {path, sa_capacity, policy_capacity, ring_size}, control_socket,
                  ike_port, natt_port, export_keys, log_level, log_format, keep_alive, window_size,
                  metrics {listen},
                  fastpath {io, engine, clear, clear_interface, tun, tun_mtu, tun_addrs, outer_mtu, batch,
                            hold, offload}
    connections:  NAME: local_addrs (or %any), remote_addrs, remote_port, remote_natt_port, proposals,
                  encap, dpd_delay, rekey_time, reauth_time, over_time, rand_time, fragmentation, fragment_size,
                  local {auth, id, certs}, remote {auth, id, cacerts},
                  children: NAME: local_ts, remote_ts, esp_proposals, mode, start_action,
                            rekey_time, life_time, rekey_bytes, life_bytes, rekey_packets, life_packets
    secrets:      ike-NAME: {id: [..], secret: ..}
"""

from control.config.checker import parse_duration
from control.config.errors import ConfigError
from control.config.loader import load_config, load_config_or_report, parse_config
from control.config.model import (
    ChildSpec,
    Config,
    ConnectionConfig,
    GatewayConfig,
    SecretEntry,
    core_schedules_rekeys,
)
from fastpath.plan import FastpathConfig

__all__ = ["ConfigError", "Config", "GatewayConfig", "ConnectionConfig", "ChildSpec", "SecretEntry",
           "load_config", "parse_config", "parse_duration", "load_config_or_report", "core_schedules_rekeys",
           "FastpathConfig"]
