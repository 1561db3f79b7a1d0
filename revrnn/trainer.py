"""Training any cell on any task of :mod:`revrnn.tasks`, from Python and from ``revrnn train``.

Three ways to backpropagate a batch (``Config.mode``):

* ``full``: one call on the whole sequence, one backward; memory is what the module's strategy
  (``memory=store / recompute / reversible``) keeps, and the outputs;
* ``stream``: :func:`revrnn.stream_backward`, chunk by chunk (``window`` steps, ⌈√T⌉ by
  default): the exact gradient of ``full`` without the outputs ever all in memory;
* ``tbptt``: truncated backpropagation, windows of ``window`` steps, each backpropagated at once
  and its end state carried into the next window detached (gradients stop at window borders).

One optimiser step (AdamW, gradients clipped to ``clip``) per batch; the loss is the mean over
the batch's scored steps. Techniques on top: an auxiliary loss (``aux``, :mod:`revrnn.auxiliary`),
and for the g-LSTM a computational budget (``budget``) and a temporal curriculum
(``curriculum``: the sequences lengthen in phases and the time gates stretch with them), each row
reporting the fraction of neuron updates performed. A task whose batches continue the same text (``carries``) also
carries the state from batch to batch, detached. Metrics go to ``metrics.jsonl`` in ``out``, a
learning curve to ``curve.png``, and a checkpoint to ``checkpoint.pt`` that resumes bit for bit
(model, optimiser, random state, the carried state; the data are a function of the step).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from . import nn as rnn
from .auxiliary import Auxiliary, Decoder
from .auxiliary import backward as auxiliary_backward
from .seq2seq import Seq2Seq
from .stream import stream_backward
from .tasks import Batch, Task, make

MODES = ("full", "stream", "tbptt")
#: every module a run can train, by command-line name (a timed one gets ``t_max`` = the task's T)
CELLS = rnn.MODULES | rnn.TIMED_MODULES


@dataclass
class Config:
    """Everything a run depends on; stored in its checkpoint and its metrics."""

    task: str = "copy"
    T: int | None = None  # the task's default when None
    cell: str = "gru"
    hidden: int = 128
    layers: int = 1
    backend: str = "auto"
    #: keyword arguments of the cell's module: memory=, checkpoint_every=, forget_bits= ...
    cell_kwargs: dict[str, Any] = field(default_factory=dict)
    mode: str = "full"
    window: int | None = None  # tbptt window (required) or stream chunk (⌈√T⌉ when None)
    steps: int = 1000
    batch: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.0
    clip: float | None = 1.0
    seed: int = 0
    eval_every: int = 100
    eval_batches: int | None = None  # None: a finite split whole, 4 batches of a generated task
    log_every: int = 10
    save_every: int | None = None  # checkpoint every this many steps (and at the end)
    #: an auxiliary loss, "r:LENGTH" (reconstruct before an anchor) or "p:LENGTH" (predict after
    #: it), see :mod:`revrnn.auxiliary`; its window, weight and pretraining steps
    aux: str | None = None
    aux_window: int | None = None
    aux_weight: float = 1.0
    aux_pretrain: int = 0
    #: λ of a computational budget added to the loss, λ · (mean gate openness), for modules that
    #: have one (the g-LSTM's ``budget``)
    budget: float = 0.0
    #: a temporal curriculum, "STEP:T,STEP:T,...": from each STEP on, sequences of T steps (the
    #: first STEP 0, T growing, the last T the run's); time gates are stretched as T grows
    curriculum: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(sorted(CELLS))}, got {self.cell!r}")
        for name in ("hidden", "layers", "steps", "batch", "eval_every", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("window", "save_every", "eval_batches", "T"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        if self.mode == "tbptt" and self.window is None:
            raise ValueError("mode='tbptt' needs a window (steps per truncation)")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a non-negative number, got {self.weight_decay!r}")
        if self.clip is not None and not (isinstance(self.clip, (int, float)) and self.clip > 0):
            raise ValueError(f"clip must be a positive number or None, got {self.clip!r}")
        _ = self.auxiliary  # its own checks
        if not (isinstance(self.budget, (int, float)) and self.budget >= 0):
            raise ValueError(f"budget must be a non-negative number, got {self.budget!r}")
        phases = self.phases
        if phases:
            if self.T is not None and self.T != phases[-1][1]:
                raise ValueError(f"T={self.T} is not the curriculum's last length {phases[-1][1]}")
            self.T = phases[-1][1]

    @property
    def phases(self) -> list[tuple[int, int]]:
        """The curriculum as (first step, T) pairs, or [] without one."""
        if not self.curriculum:
            return []
        try:
            phases = [tuple(int(v) for v in part.split(":")) for part in self.curriculum.split(",")]
        except ValueError:
            phases = []
        if (not phases or any(len(p) != 2 for p in phases) or phases[0][0] != 0
                or any(b[0] <= a[0] or b[1] <= a[1] for a, b in zip(phases, phases[1:])) or phases[0][1] < 1):
            raise ValueError("curriculum must be STEP:T pairs from step 0, steps and lengths growing "
                             f"(e.g. 0:64,500:128), got {self.curriculum!r}")
        return phases

    def T_at(self, step: int) -> int | None:
        """The sequence length of training step ``step`` (the task's default when None)."""
        phases = self.phases
        return next(T for first, T in reversed(phases) if step >= first) if phases else self.T

    @property
    def auxiliary(self) -> Auxiliary | None:
        if self.aux is None:
            return None
        return Auxiliary.parse(self.aux, window=self.aux_window, weight=self.aux_weight, pretrain=self.aux_pretrain)

    def make_task(self, T: int | None = None) -> Task:
        T = self.T if T is None else T
        return make(self.task, seed=self.seed, **({} if T is None else {"T": T}))

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class Net(nn.Module):
    """The task's inputs (token ids through an embedding, or features as they are), a recurrent
    stack, and a linear read-out per step (``head``, applied by the loss)."""

    def __init__(self, task: Task, cfg: Config) -> None:
        super().__init__()
        self.embed = nn.Embedding(task.tokens, cfg.hidden) if task.tokens else None
        width = cfg.hidden if task.tokens else task.features
        kwargs = dict(cfg.cell_kwargs)
        if cfg.cell in rnn.TIMED_MODULES:
            kwargs.setdefault("t_max", float(task.T))
        self.rnn = CELLS[cfg.cell](width, cfg.hidden, num_layers=cfg.layers, backend=cfg.backend, **kwargs)
        width = getattr(self.rnn, "proj_size", 0) or cfg.hidden
        self.head = nn.Linear(width, task.outputs)
        self.aux = Decoder(task, width, cfg.hidden) if cfg.aux else None

    def forward(self, x: Tensor, state=None, t0: int = 0):
        """``x`` (T, B) tokens or (T, B, features) -> (recurrent output, final state)."""
        if self.embed is not None:
            x = self.embed(x)
        return self.rnn(x, state, t0=t0)


class Seq2SeqNet(Seq2Seq):
    """:class:`revrnn.seq2seq.Seq2Seq` with the run's cell as its encoder; ``slice_dim`` from
    ``cell_kwargs`` (attention reads that many encoder units)."""

    def __init__(self, task: Task, cfg: Config) -> None:
        kwargs = dict(cfg.cell_kwargs)
        slice_dim = kwargs.pop("slice_dim", None)
        encoder = CELLS[cfg.cell](cfg.hidden, cfg.hidden, num_layers=cfg.layers, backend=cfg.backend, **kwargs)
        super().__init__(encoder, task.tokens, cfg.hidden, slice_dim)


def _detach(state):
    if state is None:
        return None
    return state.detach() if isinstance(state, Tensor) else tuple(h.detach() for h in state)


class Trainer:
    """A run: ``Trainer(cfg, out).run()``; ``Trainer.resume(out)`` continues a saved one."""

    def __init__(self, cfg: Config, out: str | Path | None = None, progress: bool = True,
                 callback: Callable[[dict], None] | None = None) -> None:
        self.cfg, self.task = cfg, cfg.make_task()
        self.seq2seq = getattr(self.task, "seq2seq", False)
        if self.seq2seq and (cfg.mode != "full" or cfg.aux or cfg.phases):
            raise ValueError(f"task {cfg.task!r} trains a sequence-to-sequence model with mode='full' only "
                             "(no auxiliary loss or curriculum)")
        if cfg.mode == "stream" and cfg.cell_kwargs.get("bidirectional"):
            raise ValueError("mode='stream' needs a unidirectional model")
        self.aux = cfg.auxiliary
        self.tasks = {T: cfg.make_task(T) for _, T in cfg.phases}  # the curriculum's lengths
        if self.aux is not None:
            self.aux.check(min(self.tasks) if self.tasks else self.task.T)
        if (cfg.budget or cfg.phases) and not hasattr(CELLS[cfg.cell], "rescale_time"):
            raise ValueError(f"budget and curriculum need a module with time gates (glstm), not {cfg.cell!r}")
        torch.manual_seed(cfg.seed)
        self.net = Seq2SeqNet(self.task, cfg) if self.seq2seq else Net(self.task, cfg)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step, self.carried, self.seconds, self.aux_seconds = 0, None, 0.0, 0.0
        #: the length the time gates are scaled for (the module is built for the last one)
        self.scaled_T = self.task.T
        self.aux_loss: float | None = None  # the last batch's
        self.out = None if out is None else Path(out)
        self.progress, self.callback = progress, callback
        self.history: list[dict] = []

    # --- one batch ----------------------------------------------------------------------------------

    def _loss_fn(self, batch: Batch, count: int):
        def loss_fn(out: Tensor, t0: int) -> Tensor:
            part = batch.slice(t0, t0 + out.shape[0])
            return self.current.loss(self.net.head(out), part.y, part.scored) / count
        return loss_fn

    def backward(self, batch: Batch) -> float | None:
        """Gradients of the batch's mean loss into the parameters; returns the loss (None while
        an auxiliary loss pretrains alone). The state of a carrying task comes from the last
        batch and goes to the next (detached). The auxiliary loss, if any, adds its own gradient
        (``aux_loss``)."""
        cfg, count, task = self.cfg, max(1, int(batch.scored.sum())), self.current
        loss_fn = self._loss_fn(batch, count)
        state = self.carried if task.carries else None
        if self.seq2seq:
            loss = self.task.loss(self.net(batch.x, self.net.shifted(batch.y)), batch.y, batch.scored) / count
            loss.backward()
            return float(loss.detach())
        if self.aux is not None:
            t = time.perf_counter()
            anchor = self.aux.anchor(len(batch), cfg.seed, self.step)
            self.aux_loss = auxiliary_backward(self.aux, self.net, self.net.aux, batch, anchor, state)
            self.aux_seconds += time.perf_counter() - t
            if self.step < self.aux.pretrain:
                return None
        if cfg.mode == "stream":
            result = stream_backward(self.net, batch.x, loss_fn, hx=state, chunk=cfg.window)
            total, state = result.loss, result.state
        elif cfg.mode == "tbptt":
            total = 0.0
            for s in range(0, len(batch), cfg.window):
                out, state = self.net(batch.x[s:s + cfg.window], _detach(state), t0=s)
                loss = loss_fn(out, s)
                loss.backward()
                total += float(loss.detach())
        else:
            out, state = self.net(batch.x, state)
            loss = loss_fn(out, 0)
            loss.backward()
            total = float(loss.detach())
        if task.carries:
            self.carried = _detach(state)
        return total

    @property
    def current(self) -> Task:
        """The task at the length training is at (the curriculum's phase)."""
        return self.tasks.get(self.scaled_T, self.task)

    def train_step(self) -> float | None:
        T = self.cfg.T_at(self.step) or self.task.T
        if T != self.scaled_T:  # a new phase of the curriculum
            self.net.rnn.rescale_time(T / self.scaled_T)
            self.scaled_T, self.carried = T, None
        task = self.current
        batch = task.batch("train", self.step, self.cfg.batch)
        if task.carries and self.step % task.batches("train", self.cfg.batch) == 0:
            self.carried = None  # a new pass over the text starts from the zero state
        self.opt.zero_grad(set_to_none=True)
        loss = self.backward(batch)
        if self.cfg.budget:
            (self.cfg.budget * self.net.rnn.budget(T)).backward()
        if self.cfg.clip is not None:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.clip)
        self.opt.step()
        self.step += 1
        return loss

    @torch.no_grad()
    def evaluate(self, split: str = "valid", batches: int | None = None) -> dict:
        """Loss (per scored step) and metric over the first ``batches`` batches of ``split``
        (``cfg.eval_batches`` when None; see :class:`Config`)."""
        task = self.current
        limit = task.batches(split, self.cfg.batch)
        n = batches if batches is not None else self.cfg.eval_batches
        n = (n or 4) if limit is None else min(n or limit, limit)
        loss = score = count = 0
        state = None
        training = self.net.training
        self.net.eval()  # no dropout, and no random draws that training would miss after a resume
        for i in range(n):
            b = task.batch(split, i, self.cfg.batch)
            if self.seq2seq:
                logits = self.net(b.x, self.net.shifted(b.y))
            else:
                out, state = self.net(b.x, state if task.carries else None)
                logits = self.net.head(out)
            loss += float(task.loss(logits, b.y, b.scored))
            score += task.score(logits, b.y, b.scored)
            count += int(b.scored.sum())
        self.net.train(training)
        return {"loss": loss / max(count, 1), task.metric: task.metric_of(loss, score, count)}

    # --- the run ------------------------------------------------------------------------------------

    def _record(self, row: dict) -> None:
        self.history.append(row)
        if self.out is not None:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        if self.callback is not None:
            self.callback(row)

    def run(self) -> list[dict]:
        """Train to ``cfg.steps``; returns the metric rows (also in ``metrics.jsonl``)."""
        from tqdm import tqdm
        cfg = self.cfg
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.step == 0:
                (self.out / "metrics.jsonl").write_text(json.dumps({"config": asdict(cfg), **self.task.describe()}) + "\n")
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.progress, desc=f"{cfg.cell} {cfg.task}",
                   unit="step", dynamic_ncols=True)
        window: list[float] = []
        aux: list[float] = []
        shown: dict[str, str] = {}
        while self.step < cfg.steps:
            t = time.perf_counter()
            loss = self.train_step()
            if loss is not None:
                window.append(loss)
            if self.aux_loss is not None:
                aux.append(self.aux_loss)
            self.seconds += time.perf_counter() - t
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                row = {"step": self.step, "split": "train", "loss": sum(window) / len(window) if window else None,
                       "seconds": round(self.seconds, 3)}
                if aux:  # the auxiliary loss and the share of the time it took
                    row |= {"aux_loss": sum(aux) / len(aux), "aux_seconds": round(self.aux_seconds, 3)}
                if hasattr(getattr(self.net, "rnn", None), "open_fraction"):  # neuron updates performed
                    row |= {"T": self.scaled_T, "open_fraction": self.net.rnn.open_fraction(self.scaled_T)}
                window.clear()
                aux.clear()
                shown["loss"] = "pretraining" if row["loss"] is None else f"{row['loss']:.4f}"
                bar.set_postfix(shown)
                self._record(row)
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                row = {"step": self.step, "split": "valid", **self.evaluate("valid")}
                shown["valid"] = f"{row['loss']:.4f}"
                bar.set_postfix(shown)
                self._record(row)
            if self.out is not None and ((cfg.save_every and self.step % cfg.save_every == 0) or self.step == cfg.steps):
                self.save(self.out / "checkpoint.pt")
        bar.close()
        if self.out is not None:
            plot(self.history, self.out / "curve.png", self.task)
        return self.history

    # --- checkpoints --------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        torch.save({"config": asdict(self.cfg), "step": self.step, "seconds": self.seconds,
                    "aux_seconds": self.aux_seconds, "scaled_T": self.scaled_T,
                    "model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                    "rng": torch.get_rng_state(), "carried": self.carried, "history": self.history}, path)

    @classmethod
    def resume(cls, out: str | Path, steps: int | None = None, **kwargs) -> Trainer:
        """The run saved in ``out`` (its ``checkpoint.pt``), to continue with :meth:`run`;
        ``steps`` raises its total. Metric rows past the checkpoint are dropped from the file."""
        out = Path(out)
        saved = torch.load(out / "checkpoint.pt", weights_only=False)
        cfg = Config.from_dict(saved["config"])
        if steps is not None:
            cfg.steps = steps
        self = cls(cfg, out, **kwargs)
        self.net.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        self.step, self.seconds, self.carried = saved["step"], saved["seconds"], saved["carried"]
        self.aux_seconds, self.scaled_T = saved["aux_seconds"], saved["scaled_T"]
        self.history = saved["history"]
        lines = (out / "metrics.jsonl").read_text().splitlines()
        kept = [line for line in lines if json.loads(line).get("step", 0) <= self.step]
        (out / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))
        return self


def draw_curve(ax, history: list[dict], baseline: float) -> None:
    """Training and validation loss per step on ``ax``, and the memoryless baseline."""
    for split, style in (("train", "-"), ("valid", "o-")):
        rows = [r for r in history if r.get("split") == split and r["loss"] is not None]
        if rows:
            ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], style, label=split, markersize=3)
    ax.axhline(baseline, color="grey", linestyle="--", label="no memory")
    ax.set_xlabel("step")
    ax.legend()


def plot(history: list[dict], path: Path, task: Task) -> None:
    """The learning curve (:func:`draw_curve`) as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    draw_curve(ax, history, task.baseline)
    ax.set(ylabel="loss per scored step", title=f"{task.name} (T={task.T})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
