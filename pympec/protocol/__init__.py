"""What the three processes share: how they talk, and how their ranks sleep.

    client ── wire (TCP: signed frames) ──> controller ── mpiwire (MPI) ──> engines
               handshake: how a connection first proves the key, both sides
               commands: every verb, declared once and checked where it enters
               serialize: objects <-> frames (clients and engines only; the controller
                          moves frames as bytes and never imports it)
               buffers, backoff, doorbell: warm receive buffers, and how idle ranks sleep
"""
