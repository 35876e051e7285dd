"""The soak (``make soak``): a gateway pair under load, rekeys and abuse for many minutes, sampled and
judged (run_soak.py is the driver; docs/soak.md says what it checks)."""
