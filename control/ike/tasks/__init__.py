"""One module per exchange, as strongSwan's ``sa/ikev2/tasks``.

A task builds its request (``build_request``, returning None when nothing is left
to do) and handles the response (``process_response``, returning True when it
resent its request itself), or as responder turns a request into response
payloads (``process_request``, then optionally ``after_response``).  Tasks raise
``IkeError`` only for errors that end the IKE SA; Message IDs, retransmission and
timers stay in ``IkeSA``.
"""
