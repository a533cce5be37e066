"""What both runtimes share and no SDK knows: the bridge from the event loop to blocking calls and
the bounded buffer that counts what it drops."""
