"""Build hook: compile the cffi modules, but never fail the install over them.

A machine without a C compiler or without libcrypto's headers still gets a
working package (the pure-Python reference engine); ``ipsecgw caps`` then says
which compiled engines are missing and why.
"""

import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure leaves the pure-Python path
            print(f"ipsecgw: compiled engines not built ({exc}); the reference engine remains", file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"ipsecgw: {ext.name} not built ({exc})", file=sys.stderr)


setup(
    cffi_modules=[
        "cdefs/esp/build_esp.py:ffibuilder",
        "cdefs/esp/build_esp_ipsecmb.py:ffibuilder",
        "cdefs/shm/build_shm.py:ffibuilder",
        "cdefs/kio/build_kio.py:ffibuilder",
        "cdefs/dpdk/build_dpdk.py:ffibuilder",
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
