"""The Prometheus endpoint of the control process (``gateway.metrics.listen``, docs/metrics.md).

``snapshot`` copies what the gateway knows into plain data on the event loop (the same sources as
``status`` and ``list-sas``: the daemon's SA records, the region's per-SA counters, the fastpath's totals
file); ``collector`` turns one snapshot into metric families; ``server`` is the daemon part that runs
prometheus-client's HTTP server thread and fetches a snapshot from the loop for each scrape."""
