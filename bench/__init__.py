"""``make bench``: the gateway against bare Envoy on the same fast local upstream."""
