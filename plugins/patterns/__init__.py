"""Patterns: candlestick and chart patterns.

Built by the patterns issue; the folder exists so the layout and packaging are complete.
"""
