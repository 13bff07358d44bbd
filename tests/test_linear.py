import re

import pytest
import torch

from conftest import tiny_dataset
from processor.evaluation import topk_accuracy
from processor.linear_evaluation import LinearEvaluation


def run(tmp_path, name, cache, *extra):
    data, label = tiny_dataset(str(tmp_path), n=24, num_class=4)
    feeder = f'data_path={data},label_path={label},shear_amplitude=-1,temperal_padding_ratio=-1'
    p = LinearEvaluation(['--work_dir', str(tmp_path / name), '--model', 'net.skeletonclr.SkeletonCLR',
                          '--model_args', 'base_encoder=net.st_gcn.Model,pretrain=false,in_channels=3,'
                          'hidden_channels=4,hidden_dim=8,num_class=4,dropout=0.5,'
                          'graph_args={layout: nw-ucla, strategy: spatial},edge_importance_weighting=true',
                          '--train_feeder_args', feeder, '--test_feeder_args', feeder, '--batch_size', '8',
                          '--test_batch_size', '8', '--num_epoch', '4', '--step', '2', '--num_worker', '0',
                          '--progress_bar', 'false', '--cache_features', str(cache).lower(), *extra])
    p.start()
    return p


def test_cached_features_equal_the_reference_protocol(tmp_path):
    a = run(tmp_path, 'cached', True)
    b = run(tmp_path, 'uncached', False)
    assert a.use_cache and not b.use_cache
    torch.testing.assert_close(a.encoder.fc.weight, b.encoder.fc.weight, rtol=1e-5, atol=1e-6)
    assert a.best == b.best


def test_only_fc_trains_and_encoder_stays_in_eval(tmp_path):
    p = run(tmp_path, 'frozen', True)
    assert p.trainable == ['fc.weight', 'fc.bias']
    assert not p.encoder.training
    before = {k: v.clone() for k, v in p.encoder.state_dict().items() if not k.startswith('fc.')}
    p.train_epoch(0)
    after = p.encoder.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k          # BN running statistics included


def test_topk_accuracy():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    assert abs(topk_accuracy(scores, labels, 1) - 1 / 3) < 1e-6
    assert abs(topk_accuracy(scores, labels, 2) - 2 / 3) < 1e-6


def test_standardized_features_fold_into_the_saved_fc(tmp_path):
    """``feature_norm: standardize`` trains fc on (f - mean) / std of the training features; the saved
    best_model.pt classifies raw features exactly as the standardised path did (fc folded), and the
    default protocol is untouched."""
    p = run(tmp_path, 'standardized', True, '--feature_norm', 'standardize')
    feats, labels, _ = p.split_features('test')
    train = p.split_features('train')[0]
    torch.testing.assert_close(p.normalized(train).mean(0), torch.zeros(train.shape[1]), atol=1e-4, rtol=0)
    expected = p.encoder.fc(p.normalized(feats))
    assert not torch.allclose(expected, p.encoder.fc(feats))       # the normalisation does something
    saved = torch.load(tmp_path / 'standardized' / 'best_model.pt', weights_only=True)
    best_weights = {k[len('encoder_q.fc.'):]: v for k, v in saved.items() if '.fc.' in k or k.startswith('fc.')}
    assert set(best_weights) == {'weight', 'bias'}
    with p.folded_fc():
        folded = p.encoder.fc(feats)
    torch.testing.assert_close(folded, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(p.encoder.fc(p.normalized(feats)), expected)   # restored after saving


def test_untrained_encoder_is_an_explicit_switch(tmp_path):
    """`--weights random` evaluates the untrained encoder and says so in the log; an empty name or `null`
    is a one-line error naming the switch, never a silent random encoder."""
    from torchlight.io import UserError
    for bad in ('', 'null'):
        with pytest.raises(UserError, match=r"--weights '(|null)': names no checkpoint.*--weights random"):
            run(tmp_path, f'bad{bad}', True, '--weights', bad)
    p = run(tmp_path, 'random', True, '--weights', 'random', '--num_epoch', '1')
    log = (tmp_path / 'random' / 'log.txt').read_text()
    assert "Weights: random (--weights random): no checkpoint is loaded; the encoder keeps the family's init, the " \
           "evaluation config's weights_init (the pretraining's init is unknown: give --init_of), seed" in log
    assert re.search(r'Result: top-1 \d+\.\d\d% at the last evaluated epoch \(1\); best \d+\.\d\d% \(epoch 1\), '
                     r'chosen on the test split', log)
    assert p.best['epoch'] == 1
