"""The backends: one module per way of running a recurrent layer, behind one contract.

``registry`` names them and resolves ``"auto"``; each other module implements the one-layer
contract of :mod:`fusedrnn.ops.layer` (see ``registry``'s docstring for the four methods).
"""
