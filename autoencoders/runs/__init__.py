"""Run directories and what lies in them.

``directory``: claiming a fresh run directory and locking it (one writer at a time, an ownership
marker); ``checkpoint``: the weights, optimizer state and JSON written atomically, read back with
bounded readers and never unpickled; ``load``: a finished or interrupted run as a Python object.
"""
