"""Channel adapters: one module per channel and provider behind the protocol in `base`."""
