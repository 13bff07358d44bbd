"""The pretraining step: the feeder's views of a raw batch, the method's losses, backward and the
optimizer step, as one function of the batch.

``TrainStep(processor)`` runs it eagerly.  ``cuda_graph=True`` (``--cuda_graph true``) makes it
capture-safe and replays it as a CUDA graph (``torch.cuda.CUDAGraph``): the batch is copied into
static buffers, the learning rate is a device tensor filled each step (fused SGD, or Adam/AdamW with
``capturable``), the MoCo queue is written in place after backward (``defer_enqueue``), the random
draws of the augmentations and of shuffle-BN come from the device generator (the graph advances its
offset on every replay), and nothing reads a value back to the host.
Python values the step depends on per epoch (AimCLR's mining epoch, the divergence weight) are baked
into the graph, so it is captured again at each epoch's first batch.  The first ``WARMUP_STEPS`` steps of the
run are eager on a side stream (they create the optimizer state and the autograd buffers the capture
needs); every step, eager or replayed, is a training step of the run.

``capture=False`` with ``cuda_graph=True`` runs the capture-safe step without a graph: the form the CPU
tests compare with the eager step (tests/test_train_step.py).
"""
import torch

WARMUP_STEPS = 3


def tensor_learning_rate(optimizer, device):
    """Make every param group's ``lr`` a 0-d tensor on ``device`` in its parameters' dtype (its value
    kept), the form a captured optimizer step reads on each replay; SGD becomes fused, Adam/AdamW
    capturable (the same update)."""
    for group in optimizer.param_groups:
        if not torch.is_tensor(group['lr']):
            group['lr'] = torch.tensor(float(group['lr']), dtype=group['params'][0].dtype, device=device)
        if isinstance(optimizer, torch.optim.SGD):
            group['fused'], group['foreach'] = True, False
        else:
            group['capturable'] = True


class TrainStep:
    """``step(raw, label, epoch) -> (out, loss)``: ``out`` the model's dict of 0-d tensors, ``loss`` the
    float32 total that was minimised (both on the device; static buffers under a CUDA graph)."""

    def __init__(self, processor, cuda_graph=False, capture=True):
        self.p = processor
        self.cuda_graph, self.capture = cuda_graph, capture and cuda_graph
        self.graph = self.graph_epoch = None
        self.steps = 0
        if cuda_graph:
            tensor_learning_rate(processor.optimizer, processor.dev)
            processor.model.defer_enqueue = True

    def compute(self, raw, label, epoch):
        """The step itself: views, forward (under ``amp``), backward and optimizer step."""
        p = self.p
        views = p.make_views(raw)
        with p.autocast():
            keywords = {k: label.to(p.dev, non_blocking=True) if k == 'label' else epoch
                        for k in p.model.forward_keywords}
            out = p.model(*views, **keywords)
        loss = out['loss'].float()
        p.backward_step(loss)
        if self.cuda_graph:
            p.model.flush_enqueue()
        return out, loss

    def __call__(self, raw, label, epoch):
        dev = self.p.dev
        self.steps += 1
        if not self.capture:
            return self.compute(raw, label, epoch)
        raw, label = raw.to(dev, non_blocking=True), label.to(dev, non_blocking=True)
        if self.steps <= WARMUP_STEPS:
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                out = self.compute(raw, label, epoch)
            torch.cuda.current_stream(dev).wait_stream(side)
            return out
        if self.graph is None or self.graph_epoch != epoch:
            self.record(raw, label, epoch)
        self.static_raw.copy_(raw, non_blocking=True)
        self.static_label.copy_(label, non_blocking=True)
        self.graph.replay()
        return self.static_out, self.static_loss

    def record(self, raw, label, epoch):
        """Capture the step of this epoch (the previous epoch's graph and its memory are released)."""
        self.graph = None
        self.static_raw, self.static_label = raw.clone(), label.clone()
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(self.p.dev)
        with torch.cuda.graph(graph):
            self.static_out, self.static_loss = self.compute(self.static_raw, self.static_label, epoch)
        self.graph, self.graph_epoch = graph, epoch
