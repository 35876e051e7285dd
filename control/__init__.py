"""Control plane and operator tooling: the ``ipsecgw`` command line, SA files."""
