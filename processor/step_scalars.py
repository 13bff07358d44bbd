"""A training loop's per-step scalars kept on the device: summed there, read on the host only when asked.

``add(out, loss, iteration)`` stacks the step's 0-d tensors into one vector and adds it to the running
sums, and records the first iteration whose loss is not finite (with that loss), all without a host
synchronisation; ``means()``, ``last()`` and ``check_finite()`` read them back (one transfer each), at the
log interval and at the end of the epoch.
"""
import torch


class StepScalars:
    def __init__(self):
        self.names, self.sums, self.latest, self.count = None, None, None, 0
        self.bad_iteration = self.bad_loss = None

    def add(self, out, loss, iteration):
        """Add the 0-d tensors of ``out`` (a model's output dict) and watch ``loss`` (float32, 0-d)."""
        if self.names is None:
            self.names = [k for k, v in out.items() if torch.is_tensor(v) and v.dim() == 0]
            self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=loss.device)
            self.bad_iteration = torch.full((), -1, dtype=torch.long, device=loss.device)
            self.bad_loss = torch.zeros((), dtype=loss.dtype, device=loss.device)
        self.latest = torch.stack([out[k].detach() for k in self.names]).to(torch.float64)
        self.sums.add_(self.latest)
        self.count += 1
        first = self.bad_iteration.lt(0) & loss.detach().isfinite().logical_not()
        self.bad_iteration = torch.where(first, iteration, self.bad_iteration)
        self.bad_loss = torch.where(first, loss.detach(), self.bad_loss)

    def last(self):
        """The last step's scalars as floats."""
        return dict(zip(self.names, self.latest.tolist())) if self.names else {}

    def means(self):
        """The means over the steps added so far, as floats."""
        return {k: v / self.count for k, v in zip(self.names, self.sums.tolist())} if self.count else {}

    def first_non_finite(self):
        """(iteration, loss) of the first step whose loss was not finite, or None."""
        if self.bad_iteration is None or int(self.bad_iteration) < 0:
            return None
        return int(self.bad_iteration), float(self.bad_loss)
