"""Transport and protocol: codec, MDP/0.2 broker/worker/client, pub/sub, topics, errors, REST edge.

The bottom layer: it imports nothing else of ml-processing.
"""
