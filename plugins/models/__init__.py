"""Models: registry, versioning, inference, caches, ensembles, online learning, training.

Built by the models issues; the folder exists so the layout and packaging are complete.
"""
