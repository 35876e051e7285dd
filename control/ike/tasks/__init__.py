"""One module per exchange, as strongSwan's ``sa/ikev2/tasks``.

A task builds its request (``build_request``) and handles the response
(``process_response``, returning True when it resent its request itself), or as
responder turns a request into response payloads (``process_request``).  Tasks
raise ``IkeError`` to refuse; Message IDs and retransmission stay in ``IkeSA``.
"""
