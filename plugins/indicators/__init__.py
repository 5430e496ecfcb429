"""Indicators: TA-Lib indicators in batch and streaming, live market state, multi-timeframe analysis.

Built by the indicators issue; the folder exists so the layout and packaging are complete.
"""
