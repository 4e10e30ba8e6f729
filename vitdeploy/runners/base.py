"""The input check every vitdeploy runner makes before its runtime sees a batch."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from vitdeploy.inputs import check_image_batch, feed_image


class CheckedInputs:
    """Mixin for a polygraphy runner: `infer` validates the feed against the pyramid description first."""

    meta: dict[str, Any]

    def infer(self, feed_dict: dict[str, np.ndarray], check_inputs: bool = True, *args: Any,
              **kwargs: Any) -> OrderedDict[str, np.ndarray]:
        spec = self.meta["input"]
        check_image_batch(spec, feed_image(spec, feed_dict))
        return super().infer(feed_dict, check_inputs, *args, **kwargs)
