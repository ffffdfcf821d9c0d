"""Min/max decimation: a long series drawn at what its pixels cost, every peak and trough kept.

Apart from the drawing because it is the one piece of arithmetic of the charts (numpy and
pandas only, no matplotlib): a test checks it on an hour at 10 Hz, and every time series
chart calls it before it draws.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import pandas as pd

# Pixel columns of the widest axes (a figure is WIDTH × DPI = 1210 px, its axes ~0.7 of that):
# a series is decimated to two samples per column before it is drawn.
PIXEL_COLUMNS = 850

_Data = TypeVar("_Data", pd.Series, pd.DataFrame)


def decimate(data: _Data, columns: int = PIXEL_COLUMNS) -> _Data:
    """At most two samples per pixel column, every peak and trough kept (min/max decimation).

    The time axis is cut into `columns` equal spans; in each span the samples where the value
    (a frame's row total: a stack's top) is lowest and highest are kept, in time order, plus
    the span's first missing value (NaN) so that a gap still breaks the line. The points drawn
    are actual samples, never averages, so a one-second spike of an hour-long run still shows
    at its height, and a chart costs what its pixels cost, not what the run's length costs.
    """
    n = len(data)
    if n <= 2 * columns:
        return data
    x = data.index.to_numpy(dtype=float)
    span = float(x.max() - x.min()) or 1.0
    bins = np.minimum(((x - x.min()) / span * columns).astype(np.int64), columns - 1)
    values = (
        data.sum(axis=1, min_count=1).to_numpy(float)
        if isinstance(data, pd.DataFrame)
        else data.to_numpy(float)
    )
    valid = np.flatnonzero(np.isfinite(values))
    order = valid[np.lexsort((values[valid], bins[valid]))]
    first = np.flatnonzero(np.r_[True, bins[order][1:] != bins[order][:-1]])
    last = np.r_[first[1:] - 1, order.size - 1]
    missing = np.flatnonzero(~np.isfinite(values))
    gaps = missing[np.unique(bins[missing], return_index=True)[1]]
    return data.iloc[np.unique(np.concatenate([order[first], order[last], gaps]))]
