"""The kernel: configuration, plugin manager, hookspecs, actors, supervision, command line."""
