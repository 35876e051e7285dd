"""ipsecgw data plane: batches, ESP transforms, engines, packet I/O."""
