"""tools/negatives_probe.py's counts on hand-made embeddings."""
import torch

from tools.negatives_probe import probe


def test_counts_on_hand_made_embeddings():
    keys = torch.eye(6)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert probe(keys, keys, labels, negatives=5) == {
        'clips': 6, 'acc_pos': 1.0, 'negatives_above_positive': 0.0, 'own_class_among_them': 0.0,
        'own_class_among_negatives': 0.4}
    queries = keys[[1, 0, 3, 2, 5, 4]]      # each query is its neighbour's key: 1 negative above, 2 of 6 of its class
    out = probe(queries, keys, labels, negatives=5)
    assert out['acc_pos'] == 0.0 and out['negatives_above_positive'] == 1.0
    assert out['own_class_among_them'] == round(4 / 6, 4)     # clips 0, 1, 4, 5 are outranked by their own class
