"""The information buffer: per-element stacks of 64-bit words in a device-resident arena.

Each buffer element (one row and one unit of a half state) owns a current word ``W`` that the
exact multiplies of :mod:`revrnn.cells.reversible.fixed` grow by at most k = ``forget_bits`` bits
each, and a stack of full words spilled from it.

**Spill policy** (fixed, because it decides the low bits of the forward trajectory, spec §2.3).
Before a multiply, an element whose word has reached ``W >= 2**(53 - k)`` spills: the word is
pushed on that element's stack and ``W`` restarts at 0. Every word therefore stays below
2**53 and a spilled word holds between 53 - k and 53 bits. The index of the multiply within
its chunk (< 1024) is stored in bits 53..62 of the spilled word: that tag tells the reverse
pass at which multiply to pop, so no per-multiply flag is stored at all. Masked-off rows
neither multiply nor spill.

**Arena.** The forward runs in chunks of at most 1024 multiplies per element. Inside a chunk,
spills go to a dense scratch of ``S = ceil(ops / floor(53 / k))`` words per element (after a
spill, a word needs at least floor(53 / k) multiplies to fill again). At the end of a chunk the
spilled words are compacted into one segment, and the per-element spill counts of the chunk are
kept beside it as uint8. That compaction is the buffer's only host synchronisation: one per
chunk, none per step. The reverse pass expands the chunk's segment back into a scratch.

**Accounting.** :attr:`used_bits` counts everything the buffer holds: 64 bits per current word
and per spilled word, 8 per count. :attr:`optimal_bits` is the information optimum
Σ -log2(n / 1024) over every multiply of an active element: the quantised gate n / 1024 is the
factor actually applied, so this is exactly what the multiplies discard (the float gate z
differs from it by less than 2**-11).

:class:`KernelBuffer` is the same buffer handed to compiled half-updates: :class:`TritonBuffer`
(Triton kernels, one per multiply or the fused half-updates of
:mod:`revrnn.cells.reversible.triton`) and the CPU executor's (:mod:`revrnn.cells.reversible.cpu`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import fixed

#: multiplies per element in one chunk: the spill tag has 10 bits
MAX_CHUNK_OPS = 1 << 10
#: a current word stays below 2**WORD_BITS; bits WORD_BITS.. of a spilled word hold its tag
WORD_BITS = 53
WORD_MASK = (1 << WORD_BITS) - 1


class InformationBuffer:
    """The bits discarded by the exact multiplies of one reversible stack (LIFO).

    Args:
        shape: shape of one buffer slab, (batch, half hidden size).
        forget_bits: k, the most bits one multiply can add (gates are >= 2**-k); 1..10.
        device: where the words live.
    """

    def __init__(self, shape: tuple[int, ...], forget_bits: int, device: torch.device | str | None = None) -> None:
        if not isinstance(forget_bits, int) or not 1 <= forget_bits <= fixed.GATE_BITS:
            raise ValueError(f"forget_bits must be an int in [1, {fixed.GATE_BITS}], got {forget_bits!r}")
        self.forget_bits = forget_bits
        self.word = torch.zeros(shape, dtype=torch.int64, device=device)
        self.spill_at = 1 << (WORD_BITS - forget_bits)
        self.segments: list[Tensor] = []
        self.counts: list[Tensor] = []
        self._optimal = torch.zeros((), dtype=torch.float64, device=device)
        self._scratch: Tensor | None = None
        self._height: Tensor | None = None
        self._op = 0
        self._bad = torch.zeros((), dtype=torch.bool, device=device)

    # -- chunks ---------------------------------------------------------------------------
    def scratch_words(self, ops: int) -> int:
        """Most words one element can spill in a chunk of ``ops`` multiplies."""
        return max(1, -(-ops // (WORD_BITS // self.forget_bits)))

    def _check_ops(self, ops: int) -> None:
        if not 1 <= ops <= MAX_CHUNK_OPS:
            raise ValueError(f"a buffer chunk holds 1..{MAX_CHUNK_OPS} multiplies per element, got {ops}")

    def begin_chunk(self, ops: int) -> None:
        """Start a forward chunk of ``ops`` multiplies per element."""
        self._check_ops(ops)
        self._scratch = self.word.new_zeros((self.scratch_words(ops), *self.word.shape))
        self._height = torch.zeros_like(self.word)
        self._op = 0

    def end_chunk(self) -> None:
        """Compact the chunk's spilled words into a new arena segment (one host sync)."""
        valid = self._valid(self._height)
        self.segments.append(self._scratch[valid])
        self.counts.append(self._height.to(torch.uint8))
        self._scratch = self._height = None

    def begin_reverse_chunk(self, ops: int) -> None:
        """Start undoing the last forward chunk, which had ``ops`` multiplies per element."""
        self._check_ops(ops)
        if not self.segments:
            raise RuntimeError("the reversible buffer is empty: this graph was already backpropagated "
                               "(the reverse pass consumes the buffer; retain_graph is not supported)")
        height = self.counts.pop().long()
        self._scratch = self.word.new_zeros((self.scratch_words(ops), *self.word.shape))
        self._scratch.masked_scatter_(self._valid(height), self.segments.pop())
        self._height, self._op = height, ops

    def end_reverse_chunk(self) -> None:
        self._bad |= (self._height != 0).any()
        self._scratch = self._height = None

    def _valid(self, height: Tensor) -> Tensor:
        rows = torch.arange(self._scratch.shape[0], device=height.device)
        return rows.view(-1, *([1] * height.dim())) < height

    # -- the multiplies -------------------------------------------------------------------
    def multiply(self, h: Tensor, n: Tensor, active: Tensor | None = None, update: Tensor | None = None) -> Tensor:
        """``h · n / 1024`` exactly, plus the fixed-point ``update`` if given, spilling first
        where a word is full; rows where ``active`` is false are left untouched."""
        h_new = self._multiply(h, n, active, update)
        bits = (fixed.GATE_BITS - torch.log2(n.double())).expand(h.shape)
        self._optimal += (bits if active is None else bits * active).sum()
        self._op += 1
        return h_new

    def divide(self, h: Tensor, n: Tensor, active: Tensor | None = None, update: Tensor | None = None) -> Tensor:
        """The inverse of the matching :meth:`multiply` (``update`` is subtracted first); pops
        the word spilled there."""
        self._op -= 1
        return self._divide(h, n, active, update)

    def _multiply(self, h: Tensor, n: Tensor, active: Tensor | None, update: Tensor | None) -> Tensor:
        """The spill and the multiply of :meth:`multiply` (tag: the op index before counting it)."""
        word = self.word
        spill = word >= self.spill_at
        if active is not None:
            spill &= active
        top = self._height.clamp(max=self._scratch.shape[0] - 1).unsqueeze(0)
        kept = self._scratch.gather(0, top).squeeze(0)
        self._scratch.scatter_(0, top, torch.where(spill, word | (self._op << WORD_BITS), kept).unsqueeze(0))
        self._height += spill
        word = torch.where(spill, 0, word)
        h_new, word_new = fixed.multiply(h, n, word)
        if update is not None:
            h_new = h_new + update
        if active is not None:
            h_new, word_new = torch.where(active, h_new, h), torch.where(active, word_new, word)
        self.word = word_new
        return h_new

    def _divide(self, h: Tensor, n: Tensor, active: Tensor | None, update: Tensor | None) -> Tensor:
        """The inverse and the pop of :meth:`divide` (the op index already counted back)."""
        c = h if update is None else h - update
        h_old, word = fixed.divide(c, n, self.word)
        if active is not None:
            h_old, word = torch.where(active, h_old, h), torch.where(active, word, self.word)
        height = self._height
        top = self._scratch.gather(0, (height - 1).clamp(min=0).unsqueeze(0)).squeeze(0)
        pop = (height > 0) & ((top >> WORD_BITS) == self._op)
        if active is not None:
            pop &= active
        self._bad |= (pop & (word != 0)).any()  # a word restarts at 0 after a spill
        self.word = torch.where(pop, top & WORD_MASK, word)
        self._height = height - pop.long()
        return h_old

    # -- accounting and checks ------------------------------------------------------------
    def tensors(self) -> list[Tensor]:
        """Every tensor the buffer holds between forward and backward."""
        return [self.word, *self.segments, *self.counts]

    @property
    def used_bits(self) -> int:
        words = self.word.numel() + sum(s.numel() for s in self.segments)
        return 64 * words + 8 * sum(c.numel() for c in self.counts)

    @property
    def optimal_bits(self) -> float:
        return self._optimal.item()

    def check_empty(self) -> None:
        """Raise unless the reverse pass returned the buffer exactly to its initial state."""
        if self.segments or self._bad.item() or bool(self.word.any()):
            raise RuntimeError("reversible reconstruction failed: the information buffer did not "
                               "return to empty; the reverse pass did not undo the forward exactly")


class KernelBuffer(InformationBuffer):
    """The same buffer, bit for bit, for compiled half-updates that take the buffer's tensors
    (:meth:`claim`, :meth:`unclaim`), update them in place and add each multiply's information
    cost to a float64 per element, summed at the end of the chunk. Subclasses run a single
    multiply or divide (:meth:`_multiply`, :meth:`_divide`) in their backend too."""

    def __init__(self, shape: tuple[int, ...], forget_bits: int, device: torch.device | str | None = None) -> None:
        super().__init__(shape, forget_bits, device)
        self._bits: Tensor | None = None
        # the information cost of a gate n, as the reference accounts it (n = 0 never occurs)
        self._costs = fixed.GATE_BITS - torch.log2(torch.arange(fixed.GATE_ONE + 1, dtype=torch.float64,
                                                                device=self.word.device))

    def begin_chunk(self, ops: int) -> None:
        super().begin_chunk(ops)
        self._bits = torch.zeros_like(self.word, dtype=torch.float64)

    def end_chunk(self) -> None:
        super().end_chunk()
        self._optimal += self._bits.sum()
        self._bits = None

    def claim(self, ops: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, int, int]:
        """Operands of a kernel that runs the next ``ops`` multiplies of every element: (word,
        scratch, height, information cost, cost table, index of its first multiply, spill
        threshold)."""
        op, self._op = self._op, self._op + ops
        return self.word, self._scratch, self._height, self._bits, self._costs, op, self.spill_at

    def unclaim(self, ops: int) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        """Operands of a kernel that undoes the last ``ops`` multiplies: (word, scratch, height,
        error flag, index of the first of them)."""
        self._op -= ops
        return self.word, self._scratch, self._height, self._bad, self._op


class TritonBuffer(KernelBuffer):
    """The buffer run by Triton kernels: each multiply or divide (spill or pop, exact arithmetic
    and update term) one kernel (:mod:`revrnn.kernels.reversible`), or the fused half-updates of
    :mod:`revrnn.cells.reversible.triton`. ``active`` must be a row mask (batch, 1). Needs
    Triton, imported here on first use."""

    def __init__(self, shape: tuple[int, ...], forget_bits: int, device: torch.device | str | None = None) -> None:
        super().__init__(shape, forget_bits, device)
        from ...kernels import reversible
        self._kernels = reversible

    def _multiply(self, h: Tensor, n: Tensor, active: Tensor | None, update: Tensor | None) -> Tensor:
        h_new, self.word = self._kernels.multiply(h, n, update, active, self.word, self._scratch, self._height,
                                                  self._op, self.spill_at)
        return h_new

    def _divide(self, h: Tensor, n: Tensor, active: Tensor | None, update: Tensor | None) -> Tensor:
        h_old, self.word = self._kernels.divide(h, n, update, active, self.word, self._scratch, self._height,
                                                self._bad, self._op)
        return h_old
