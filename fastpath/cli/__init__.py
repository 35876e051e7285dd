"""The verbs of ``ipsecgw`` that drive the fastpath alone (pcap, bench, caps): each module's ``register(sub)``
adds its parser, and control/cli.py, which dispatches, imports it only when that verb is asked for."""
