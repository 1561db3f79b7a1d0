"""The training strategies a memory sweep compares."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = ("bptt", "tbptt", "ckpt", "revolve", "reversible")


@dataclass(frozen=True)
class Strategy:
    """One way to train: build with :meth:`bptt`, :meth:`tbptt`, :meth:`checkpoint`,
    :meth:`revolve`, :meth:`reversible`, or :meth:`parse` (``"tbptt:50"``, ``"ckpt:sqrt"``...).

    ``k`` is the truncation window (``tbptt``), the chunk length (``ckpt``, ``None`` = ⌈√T⌉)
    or the number of kept states (``revolve``).
    """

    kind: str
    k: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"strategy kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        needs_k = self.kind in ("tbptt", "revolve")
        if self.k is None and needs_k or self.k is not None and self.kind in ("bptt", "reversible"):
            raise ValueError(f"strategy {self.kind!r} {'needs' if needs_k else 'takes no'} k, got {self.k!r}")
        if self.k is not None and (not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1):
            raise ValueError(f"strategy {self.kind!r}: k must be a positive int, got {self.k!r}")

    @classmethod
    def bptt(cls) -> "Strategy":
        """Full backpropagation through time: every step's activations kept."""
        return cls("bptt")

    @classmethod
    def tbptt(cls, k: int) -> "Strategy":
        """Truncated BPTT: backward every ``k`` steps, state carried detached (biased gradient)."""
        return cls("tbptt", k)

    @classmethod
    def checkpoint(cls, every: int | str = "sqrt") -> "Strategy":
        """``memory="recompute"`` keeping a state every ``every`` steps (``"sqrt"``: ⌈√T⌉)."""
        return cls("ckpt", None if every == "sqrt" else every)

    @classmethod
    def revolve(cls, slots: int) -> "Strategy":
        """``memory="recompute", checkpoint_slots=slots``: the binomial schedule for that budget."""
        return cls("revolve", slots)

    @classmethod
    def reversible(cls) -> "Strategy":
        """``memory="reversible"`` of the reversible cells: states reconstructed in backward."""
        return cls("reversible")

    @classmethod
    def parse(cls, text: str) -> "Strategy":
        """``bptt``, ``tbptt:K``, ``ckpt`` / ``ckpt:sqrt`` / ``ckpt:K``, ``revolve:S``, ``reversible``."""
        kind, _, arg = text.strip().partition(":")
        if kind == "ckpt" and arg in ("", "sqrt"):
            return cls.checkpoint()
        if not arg:
            return cls(kind)
        try:
            k = int(arg)
        except ValueError:
            raise ValueError(f"strategy {text!r}: expected an integer after ':', got {arg!r}") from None
        return cls(kind, k)

    @property
    def name(self) -> str:
        if self.kind == "ckpt":
            return f"ckpt({self.k or 'sqrt'})"
        return self.kind if self.k is None else f"{self.kind}({self.k})"

    @property
    def text(self) -> str:
        """The form :meth:`parse` reads back."""
        return self.kind if self.k is None else f"{self.kind}:{self.k}"

    @property
    def exact(self) -> bool:
        """Whether the gradient equals full BPTT's (up to rounding); truncation is not."""
        return self.kind != "tbptt"

    def module_kwargs(self) -> dict[str, Any]:
        """Keywords that give a revrnn module this strategy's memory setting."""
        if self.kind == "ckpt":
            return {"memory": "recompute", "checkpoint_every": self.k}
        if self.kind == "revolve":
            return {"memory": "recompute", "checkpoint_slots": self.k}
        return {"memory": "reversible" if self.kind == "reversible" else "store"}

    def __str__(self) -> str:
        return self.name
