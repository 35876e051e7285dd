"""The ``extra=`` fields that tie a log record to the SA it is about (fastpath/logs.py's ``SA_FIELDS``).

The text format shows only the message, which already names the SA; the JSON format carries these as keys,
so a log shipper can select every line about one IKE SA, CHILD SA, peer or SPI without parsing messages.
SPIs and labels only: nothing here is secret.
"""

from __future__ import annotations

from typing import Any

from control.sa_records import ChildEntry, IkeEntry

__all__ = ["child_fields", "ike_fields"]


def ike_fields(entry: IkeEntry) -> dict[str, Any]:
    """conn, ike_sa (the label the text uses, ``conn[N]``), ike_spi (ours, hex) and peer (its address)."""
    return {"conn": entry.conn.name, "ike_sa": entry.label, "ike_spi": entry.spi.hex(),
            "peer": entry.ike.remote[0]}


def child_fields(child: ChildEntry, entry: IkeEntry | None = None) -> dict[str, Any]:
    """conn, child, spi (inbound, 0x-hex as ``list-sas`` shows it), spi_out, and the IKE SA's fields when it
    is known (a CHILD SA outlives a rekeyed IKE SA record only briefly)."""
    fields = {**ike_fields(entry)} if entry is not None else {"conn": child.conn, "ike_spi": child.ike_spi.hex()}
    fields.update({"child": child.name, "spi": f"0x{child.spi_in:08x}", "spi_out": f"0x{child.spi_out:08x}"})
    return fields
