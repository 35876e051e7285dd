"""IKEv2 (RFC 7296) control plane: a sans-IO core with a thin asyncio UDP layer beside it.

``message`` is the codec, ``crypto`` the key schedule and SK payload protection,
``proposals`` maps strongSwan's proposal keywords to transforms, ``sa`` is the
IKE SA state machine and ``tasks`` its exchanges.  See docs/ike.md.
"""
