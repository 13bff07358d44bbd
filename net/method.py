"""The method contract: what the pretraining loop and the evaluations ask of a self-supervised method.

A method declares what it offers instead of being probed (``net.moco.MoCo`` fills these in for the
contrastive methods; a method with no queue keeps the defaults):

* ``forward(*views, **keywords)`` returns a dict of losses (``loss`` is optimised); ``forward_keywords``
  names the keywords it takes from the loop: ``'epoch'`` (0-based) and ``'label'`` (class labels: a
  method that takes them uses labels in pretraining).
* ``reference_keys``: top-level keys of the reference code bases that are this method's ``model_args``
  (AimCLR's ``mining_epoch`` / ``topk``), mapped by the pretraining processor with a notice.
* ``classifier``: the encoder that classifies in linear / finetune / kNN evaluation (``encoder_q``).
* ``uniform_loss``: the InfoNCE value of collapse (MoCo: ln(K + 1)), or None: no collapse monitor.
* ``uniform_terms``: {logged loss term: its value when it teaches nothing} (e.g. MICA's FM term at
  ln(C)); the pretraining monitor warns when a term stays there (``processor/monitor.py``).
* ``recipe``: the small-data settings this method has (``momentum``, ``queue_size``,
  ``shuffle_bn_groups``), compared by the small-data notice; empty: no notice.
* ``check_batch_size(batch_size)``: a one-line error when the batch does not fit the method (a queue
  that is not a multiple of it).
* ``check_data(labels, label_path, dataset, class_subset)``: a method that reads side inputs about the
  classes (MICA's text feature file) checks them against the training data (ValueError).
* ``capture_safe``: True when the training step reads nothing back to the host and keeps its buffers at
  fixed addresses (with ``defer_enqueue``), so ``--cuda_graph true`` may capture it (processor/train_step.py).
"""
import torch.nn as nn


class PretrainingMethod(nn.Module):
    forward_keywords = ()
    reference_keys = ()
    capture_safe = False
    defer_enqueue = False

    @property
    def classifier(self):
        return self.encoder_q

    @property
    def uniform_loss(self):
        return None

    @property
    def uniform_terms(self):
        return {}

    @property
    def recipe(self):
        return {}

    def check_batch_size(self, batch_size):
        pass

    def check_data(self, labels, label_path, dataset=None, class_subset=False):
        """The training labels, their file, the run's dataset name and whether the data may use a subset of
        the classes a side input describes: a ValueError when they do not fit (nothing to check here)."""
