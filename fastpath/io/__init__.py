"""Kernel packet I/O for the fastpath: a TUN device on the clear side, UDP 4500 and raw ESP sockets on the
protected side, moved in batches by the compiled module fastpath._kio (cdefs/kio/kio.c)."""
