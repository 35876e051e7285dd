"""IKEv1 (ISAKMP, RFC 2408/2409), sans-IO: the codec, phase 1 (main and aggressive mode, PSK), quick mode
and informational exchanges.  Like control.ike it does no I/O: datagrams and times go in, datagrams,
timers and events come out.  Not yet wired into the daemon (docs/ikev1.md)."""
