"""Construct schemas of every binary layout p2mdump reads or writes.

Importing this package imports :mod:`construct`; the hot paths of the walker
use the numpy views derived from the same :class:`~p2mdump.layout.Layout`
instead (a test checks that both decode pages identically).
"""
