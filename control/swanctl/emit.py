"""A ``Conversion`` as the YAML file ``ipsecgw run -c`` reads, what did not convert as comments on top."""

from __future__ import annotations

import yaml

from control.swanctl.convert import Conversion

__all__ = ["to_yaml"]


def to_yaml(conv: Conversion, source: str) -> str:
    head = [f"# converted from {source} by ipsecgw import-swanctl",
            "# the gateway section is left at its defaults (docs/operator-guide.md)"]
    if conv.notes:
        head.append("# not converted:")
        head.extend(f"#   {n}" for n in conv.notes)
    body = yaml.safe_dump(conv.config, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)
    return "\n".join(head) + "\n" + (body if conv.config else "")
