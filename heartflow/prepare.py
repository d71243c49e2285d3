"""The preprocess step: read the data, split it, fit the encoder, encode every part."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heartflow.data.dataset import Dataset, load_dataset
from heartflow.data.split import Split, split_rows
from heartflow.preprocess import TabularEncoder
from heartflow.spec.loading import LoadedSpec


@dataclass
class Prepared:
    """Encoded arrays for each part of the split, and what produced them."""

    dataset: Dataset
    split: Split
    encoder: TabularEncoder
    x: np.ndarray  # encoded rows, all of them, in file order

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of the train, validation or test part."""
        rows = getattr(self.split, name)
        return self.x[rows], self.dataset.y[rows]

    @property
    def width(self) -> int:
        """Encoded input width."""
        return self.encoder.width


def prepare(loaded: LoadedSpec) -> Prepared:
    """Load, split and encode the data a spec names (errors name column and row)."""
    spec = loaded.spec
    dataset = load_dataset(spec, loaded.base_dir)
    split = split_rows(dataset.y, spec.data.split, spec.task != "regression")
    feats = spec.data.features
    encoder = TabularEncoder(list(feats.numeric), list(feats.categorical),
                             list(spec.data.na_values)).fit(dataset.features, split.train)
    return Prepared(dataset=dataset, split=split, encoder=encoder,
                    x=encoder.transform(dataset.features))
