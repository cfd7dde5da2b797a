"""Gates that decide whether an adapter may be deployed."""

import math


def eval_gate(base_loss: float, adapter_loss: float, min_improvement: float) -> bool:
    return bool(math.isfinite(adapter_loss) and adapter_loss < base_loss - min_improvement)

