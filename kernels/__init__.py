"""Triton kernels of revrnn, installed as ``revrnn.kernels``: one module per cell family plus
shared helpers, launched by the ``triton`` backend and testable on CPU with
``TRITON_INTERPRET=1``. None exist yet; this package is a placeholder for them."""
