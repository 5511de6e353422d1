"""Peer systems the project compares itself with, each in its own pinned environment.

The product never imports anything here: it runs a peer as a subprocess of that peer's
interpreter and reads back files (score matrices, JSON), see :mod:`model.recbole_peer`.
"""
