"""Per-epoch training progress on the terminal (the end-of-run summary is the CLI's)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field


@dataclass
class EpochReporter:
    """Prints one progress line per epoch (in place on a terminal, every 10% otherwise)."""

    epochs: int
    enabled: bool = True
    stream: object = field(default_factory=lambda: sys.stderr)
    _start: float = field(default_factory=time.perf_counter)

    def __call__(self, epoch: int, logs: dict[str, float]) -> None:
        if not self.enabled:
            return
        tty = getattr(self.stream, "isatty", lambda: False)()
        step = max(1, self.epochs // 10)
        if not tty and epoch % step and epoch != self.epochs:
            return
        shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items()
                          if k in ("loss", "val_loss", "auc", "val_auc", "accuracy",
                                   "val_accuracy", "rmse", "val_rmse"))
        elapsed = time.perf_counter() - self._start
        line = f"epoch {epoch:>4}/{self.epochs}  {shown}  ({elapsed:.1f}s)"
        if tty:
            self.stream.write("\r" + line.ljust(100))
            self.stream.flush()
        else:
            self.stream.write(line + "\n")

    def close(self) -> None:
        """End the in-place line."""
        if self.enabled and getattr(self.stream, "isatty", lambda: False)():
            self.stream.write("\n")
            self.stream.flush()
