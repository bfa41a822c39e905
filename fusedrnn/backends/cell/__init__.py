"""The single-step cell backends (``fusedrnn.RNNCell/LSTMCell/GRUCell``): one module per
backend behind the op contract of :mod:`fusedrnn.ops.cell`, named by ``registry``. The same
names as the layer backends one folder up, for one step instead of a sequence."""
