"""Vendored reference data (see README.md here for sources and licence notes)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

EPOCH_CSV = os.path.join(os.path.dirname(__file__), "chinchilla_svg_extracted_data.csv")


def epoch_chinchilla(path: str = EPOCH_CSV) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(N parameters, D = C / 6N tokens, loss) of Epoch AI's 240 points: the 245 extracted from
  Chinchilla's Figure 4 less the 5 highest losses, as Besiroglu et al. (2024) dropped them."""
  df = pd.read_csv(path).sort_values("loss").iloc[:-5]
  n_params = df["Model Size"].to_numpy()
  return n_params, df["Training FLOP"].to_numpy() / (6 * n_params), df["loss"].to_numpy()
