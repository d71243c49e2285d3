"""Early stopping for K models at once, shaped like ``keras.callbacks.EarlyStopping``.

Keras' callback watches one model; :class:`ManyEarlyStopping` watches K models trained
together (:mod:`heartflow.model.together`), one monitored value per model each epoch, and
keeps each model's best value, best epoch, wait counter and whether it has stopped in NumPy
arrays. The rules are Keras': a model's first value is its best; a later one improves on it
by more than ``min_delta``, or the wait counter grows; a model stops once it has waited
``patience`` epochs without improving; epochs count from 0. It holds no weights: each epoch
says which models improved (their weights are the best so far) and which stopped.
"""

from __future__ import annotations

import numpy as np

from heartflow.spec.vocabulary import monitor_mode


class ManyEarlyStopping:
    """Per-model early stopping of K models; ``on_epoch_end`` takes one value per model."""

    def __init__(self, models: int, monitor: str = "val_loss", min_delta: float = 0.0,
                 patience: int = 0, mode: str = "auto", restore_best_weights: bool = False):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', not {mode!r}")
        if mode == "auto":
            mode = monitor_mode(monitor)
        self.monitor = monitor
        self.mode = mode
        self.min_delta = abs(min_delta)
        self.patience = patience
        self.restore_best_weights = restore_best_weights
        self.best = np.full(models, np.nan)
        self.best_epoch = np.zeros(models, dtype=np.int64)
        self.wait = np.zeros(models, dtype=np.int64)
        self.stopped = np.zeros(models, dtype=bool)
        self.stopped_epoch = np.zeros(models, dtype=np.int64)  # 0 while running, as Keras
        self.stopped_now = np.zeros(models, dtype=bool)
        self._seen = np.zeros(models, dtype=bool)

    def on_epoch_end(self, epoch: int, values) -> np.ndarray:
        """Take each model's monitored value (stopped models' are ignored); return the mask
        of models that improved this epoch. ``stopped_now`` marks those that stopped."""
        values = np.asarray(values, dtype=np.float64)
        running = ~self.stopped
        with np.errstate(invalid="ignore"):
            better = (values > self.best + self.min_delta if self.mode == "max"
                      else values < self.best - self.min_delta)
        improved = running & (better | ~self._seen)
        self._seen |= running
        self.best = np.where(improved, values, self.best)
        self.best_epoch = np.where(improved, epoch, self.best_epoch)
        self.wait = np.where(improved, 0, self.wait + running)
        self.stopped_now = running & ~improved & (self.wait >= self.patience)
        self.stopped |= self.stopped_now
        self.stopped_epoch = np.where(self.stopped_now, epoch, self.stopped_epoch)
        return improved

    def to_keep(self, improved: np.ndarray) -> np.ndarray:
        """Models whose current weights are the ones they end with, as far as known now:
        those that improved (``restore_best_weights``), else those that just stopped."""
        return improved if self.restore_best_weights else self.stopped_now
