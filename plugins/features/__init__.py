"""Features: named, versioned feature pipelines.

Built by the features issue; the folder exists so the layout and packaging are complete.
"""
