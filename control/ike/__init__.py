"""IKEv2 (RFC 7296) control plane: the sans-IO core.  It imports no sockets and no asyncio (a lint-imports
contract); the thin asyncio UDP layer beside it is control/ike_udp.py.

``message`` is the codec, ``crypto`` the key schedule and SK payload protection,
``proposals`` maps strongSwan's proposal keywords to transforms, ``sa`` is the
IKE SA state machine and ``tasks`` its exchanges.  See docs/ike.md.
"""
