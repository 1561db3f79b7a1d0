"""Activation memory of the reversible cells against ``memory="store"`` (the same
quantised forward with every activation kept by autograd).

Activation memory is what is kept for backward: the storages saved by autograd (pack hooks,
``revrnn.accounting.SavedTensorCounter``), which for the reversible Function include the
information-buffer arena; parameters and inputs are excluded. Also reported: the buffer's
bits against the paper's reference (float32 hidden states at every step, spec §3.4) and the
information optimum Σ -log2 z, and fwd+bwd time of both modes measured in the same run.

    python bench/reversible_memory.py --T 1000 --out bench/results/reversible_memory_cpu.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

from revrnn import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/report.py
from report import commit  # noqa: E402
from revrnn.accounting import SavedTensorCounter
from revrnn.cells import FAMILIES

#: the catalog's modules whose default memory strategy is "reversible"
CELLS = {name: cls for f in FAMILIES for name in f.modules.values()
         if (cls := getattr(nn, name)).memory_modes[0] == "reversible"}


def measure(cls, T: int, batch: int, hidden: int, layers: int, bits: int, device: str) -> dict:
    torch.manual_seed(0)
    rev = cls(hidden, hidden, num_layers=layers, forget_bits=bits, device=device)
    store = cls(hidden, hidden, num_layers=layers, forget_bits=bits, device=device, memory="store")
    store.load_state_dict(rev.state_dict())
    x = torch.randn(T, batch, hidden, device=device)
    row = {"cell": cls.__name__, "T": T, "batch": batch, "hidden": hidden, "layers": layers, "forget_bits": bits}
    for name, m in (("reversible", rev), ("store", store)):
        with SavedTensorCounter([*m.parameters(), x]) as counter:
            out, _ = m(x)
        row[f"{name}_bytes"] = counter.bytes  # held for backward at the end of the forward
        start = time.perf_counter()
        out.sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        row[f"{name}_backward_s"] = time.perf_counter() - start
    stats = rev.last_stats
    row.update(buffer_bits=stats.used_bits, optimal_bits=stats.optimal_bits,
               float32_state_bits=stats.float32_state_bits)
    row["store_over_reversible"] = row["store_bytes"] / row["reversible_bytes"]
    row["float32_states_over_buffer"] = stats.ratio
    row["buffer_over_optimum"] = stats.used_bits / max(stats.optimal_bits, 1e-9)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--bits", type=int, nargs="+", default=[1, 2, 3, 5, 10])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows = [measure(cls, args.T, args.batch, args.hidden, args.layers, k, args.device)
            for cls in CELLS.values() for k in args.bits]
    head = f"{'cell':8} {'k':>3} {'store MB':>9} {'rev MB':>8} {'store/rev':>9} {'f32/buffer':>10} {'buf/opt':>7}"
    print(head)
    for r in rows:
        print(f"{r['cell']:8} {r['forget_bits']:>3} {r['store_bytes'] / 2**20:9.2f} {r['reversible_bytes'] / 2**20:8.3f} "
              f"{r['store_over_reversible']:9.1f} {r['float32_states_over_buffer']:10.1f} {r['buffer_over_optimum']:7.2f}")
    if args.out:
        meta = {"date": datetime.date.today().isoformat(), **commit(), "torch": torch.__version__,
                "device": args.device if args.device != "cuda" else torch.cuda.get_device_name(),
                "machine": platform.processor() or platform.machine(), "threads": args.threads, "args": vars(args)}
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
