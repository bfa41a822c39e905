"""fusedrnn: fused GPU kernels for the Elman RNN, LSTM and GRU, drop-in for ``torch.nn``.

>>> import fusedrnn
>>> lstm = fusedrnn.LSTM(32, 64, num_layers=2, backend="auto")

See README.md for the backends and DESIGN.md for the architecture.
"""

from . import functional
from .ops import cell as _cell_op  # noqa: F401  (registers torch.ops.fusedrnn.cell_*)
from .ops import layer as _layer_op  # noqa: F401  (registers torch.ops.fusedrnn.*)
from .ops import variant_layer as _variant_layer_op  # noqa: F401  (fusedrnn.variant_layer_*)
from .backends.cell.registry import NAMES as CELL_BACKENDS
from .backends.registry import NAMES as BACKENDS
from .cells import GRUCell, LSTMCell, RNNCell
from .modules import GRU, LSTM, RNN, convert
from .layernorm_modules import LayerNormGRU, LayerNormLSTM

__version__ = "0.1.0"

__all__ = ["BACKENDS", "CELL_BACKENDS", "GRU", "GRUCell", "LSTM", "LSTMCell", "LayerNormGRU", "LayerNormLSTM", "RNN", "RNNCell",
           "convert", "functional", "__version__"]
