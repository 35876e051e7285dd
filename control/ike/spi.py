"""SPIs we choose: IKE SPIs (8 octets, never zero) and ESP SPIs (never in the IANA-reserved 0..255)."""

from __future__ import annotations

import os

from control.ike.constants import MIN_NEGOTIATED_SPI


def random_spi() -> bytes:
    while True:
        spi = os.urandom(8)
        if spi != bytes(8):
            return spi


def random_esp_spi() -> int:
    while True:
        spi = int.from_bytes(os.urandom(4), "big")
        if spi >= MIN_NEGOTIATED_SPI:
            return spi
