"""Sub-commands of the `bluesky-ptychonn` command line, one module each (see `cli`).

A module here parses arguments and calls the library; it holds no physics or algorithms.
"""
