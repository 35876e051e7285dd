"""What ``ipsecgw bench`` runs: ESP engines on one core (esp.py, against the per-packet Python baseline in
naive.py) and the DPDK fastpath (dpdk.py: frames, SA and the loop mode; dpdk_gateway.py: the gateway worker
with control attached).  The pytest benchmark grids that drive them are in bench/."""
