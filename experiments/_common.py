"""What every experiment script shares: its command line and where it writes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # scripts write files; no display needed

from deepx_sim.errors import DeepxError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCENARIOS = REPO / "scenarios"


def parse_args(description: str, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=None,
                        help="folder for the table and figures (default experiments/out/<script>)")
    parser.add_argument("--quick", action="store_true",
                        help="small settings that run in seconds (used by the tests)")
    parser.add_argument("--workers", type=int, default=1, help="processes for sweeps")
    return parser.parse_args(argv)


def out_dir(args: argparse.Namespace, name: str) -> Path:
    path = Path(args.out) if args.out else HERE / "out" / name
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeepxError(f"--out {path}: cannot create the output folder: {exc.strerror}") from None
    return path


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Run an experiment's ``main``; a bad input prints one line, not a traceback."""
    try:
        main(argv)
    except DeepxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def save_figure(fig, path) -> None:  # type: ignore[no-untyped-def]
    """Lay out, write and close a matplotlib figure (scripts make many)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table_text(frame, float_format: str = "{:.2f}") -> str:  # type: ignore[no-untyped-def]
    """A plain-text table for the console (no extra dependency such as tabulate)."""
    cells = [[str(c) for c in frame.columns]]
    for row in frame.itertuples(index=False):
        cells.append([float_format.format(v) if isinstance(v, float) else str(v) for v in row])
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
