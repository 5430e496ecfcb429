"""Plugins shipped with ml-processing, written exactly as a third-party package would write them."""
