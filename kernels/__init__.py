"""Triton kernels of revrnn, installed as ``revrnn.kernels``: one module per cell family plus
shared helpers (:mod:`.common`). The ``triton`` backend (:mod:`revrnn.backends.triton`) drives
them; each launcher is a ``torch.library`` custom op (``revrnn::<name>``), so the kernels are
opaque to ``torch.compile``.

On CPU tensors they run under the Triton interpreter when ``TRITON_INTERPRET=1`` is set before
Triton is imported; that is how CI tests them.
"""
