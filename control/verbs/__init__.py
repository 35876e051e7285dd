"""The verbs of ``ipsecgw`` that drive control: run and check (run.py), the fastpath process started from a
configuration (fastpath.py), and the operator's verbs on a running gateway (running.py).  control/cli.py
dispatches to them."""
