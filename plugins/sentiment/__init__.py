"""Sentiment: market (price-derived) and text sentiment.

Built by the sentiment issue; the folder exists so the layout and packaging are complete.
"""
