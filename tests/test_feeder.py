import pickle
import re

import numpy as np
import pytest
import torch

from feeder.ntu_feeder import Feeder_dual, Feeder_semi, Feeder_single, Feeder_triple
from torchlight.io import UserError


def write(tmp_path, data, names=None, labels=None, name='d'):
    n = len(data)
    names = names if names is not None else [f's{i}' for i in range(n)]
    labels = labels if labels is not None else [i % 4 for i in range(n)]
    dpath, lpath = tmp_path / f'{name}.npy', tmp_path / f'{name}.pkl'
    np.save(dpath, data)
    with open(lpath, 'wb') as f:
        pickle.dump((names, labels), f)
    return str(dpath), str(lpath)


def data(n=12, V=25, T=10, M=2, seed=0):
    return np.random.RandomState(seed).randn(n, 3, T, V, M).astype(np.float32)


def test_dual_feeder_reference_style_and_batched(tmp_path):
    d, l = write(tmp_path, data())
    f = Feeder_dual(d, l)
    views, label = f[3]
    assert len(views) == 2 and views[0].shape == (3, 10, 25, 2) and label == 3
    assert not torch.equal(views[0], views[1])
    f = Feeder_dual(d, l, batch_augment=True)
    raw, label, index = f[3]
    assert torch.equal(raw, torch.from_numpy(data()[3])) and index == 3
    batch = torch.stack([f[i][0] for i in range(4)])
    v1, v2 = f.views(batch)
    assert v1.shape == batch.shape and v2.shape == batch.shape


def test_single_without_augmentation_is_identity(tmp_path):
    d, l = write(tmp_path, data())
    f = Feeder_single(d, l, shear_amplitude=-1, temperal_padding_ratio=-1)
    x, _ = f[0]
    assert torch.equal(x, torch.from_numpy(data()[0]))


def test_triple_feeder_aug_methods(tmp_path):
    d, l = write(tmp_path, data())
    f = Feeder_triple(d, l, aug_method='1234')
    assert f.strong_ops == ['random_spatial_flip', 'random_rotate', 'gaus_noise', 'gaus_filter']
    assert len(f.views(torch.from_numpy(data()[:2]))) == 3
    assert Feeder_triple.parse_aug_method('none') == []
    assert 'random_joint_noise' in Feeder_triple.parse_aug_method('msmclr')
    # the reference applies the extreme augmentations in a fixed order, whatever the digits' order
    assert Feeder_triple.parse_aug_method('4321') == Feeder_triple.parse_aug_method('1234') == f.strong_ops
    assert Feeder_triple.parse_aug_method('615') == ['random_spatial_flip', 'axis_mask', 'random_time_flip']
    # MsMCLR Table 6's 'same as AimCLR': AimCLR's configured set '12345' (no time flip)
    assert Feeder_triple.parse_aug_method('aimclr') == Feeder_triple.parse_aug_method('12345')
    with pytest.raises(UserError, match="unknown code"):
        Feeder_triple(d, l, aug_method='19')


def test_semi_subset_is_class_balanced_and_seeded(tmp_path):
    labels = [i % 5 for i in range(100)]
    d, l = write(tmp_path, data(n=100, V=20, M=1), labels=labels)
    a = Feeder_semi(d, l, label_percent=0.1, semi_seed=0)
    b = Feeder_semi(d, l, label_percent=0.1, semi_seed=0)
    c = Feeder_semi(d, l, label_percent=0.1, semi_seed=1)
    assert len(a) == 10
    assert np.bincount(a.label[a.index]).tolist() == [2, 2, 2, 2, 2]
    assert np.array_equal(a.index, b.index) and not np.array_equal(a.index, c.index)
    for bad in (0, 1.5, -0.1):
        with pytest.raises(UserError, match='label_percent'):
            Feeder_semi(d, l, label_percent=bad)


@pytest.mark.parametrize('case, message', [
    ('rank', 'expected 5 dimensions'),
    ('dtype', 'expected float32'),
    ('nan', 'NaN/Inf values (first in sample 2)'),
    ('length', 'has 3 labels but data file'),
    ('negative', 'negative label'),
    ('missing', 'does not exist'),
    ('too_large', 'num_class=4'),
    ('layout', "V=20 joints but layout 'ntu-rgb+d'"),
])
def test_bad_data_gives_clear_errors(tmp_path, case, message):
    x = data()
    kwargs = {}
    if case == 'rank':
        d, l = write(tmp_path, x[:, :, :, :, 0])
    elif case == 'dtype':
        d, l = write(tmp_path, (x * 100).astype(np.int32))
    elif case == 'nan':
        x[2, 0, 3, 4, 0] = np.nan
        d, l = write(tmp_path, x)
    elif case == 'length':
        d, l = write(tmp_path, x, names=['a', 'b', 'c'], labels=[0, 1, 2])
    elif case == 'negative':
        d, l = write(tmp_path, x, labels=[-1] + [0] * 11)
    elif case == 'missing':
        d, l = str(tmp_path / 'nothing.npy'), str(tmp_path / 'nothing.pkl')
    elif case == 'too_large':
        d, l = write(tmp_path, x, labels=[7] * 12)
        kwargs['num_class'] = 4
    elif case == 'layout':
        d, l = write(tmp_path, data(V=20))
        kwargs['layout'] = 'ntu-rgb+d'
    with pytest.raises(UserError, match=re.escape(message)):
        Feeder_single(d, l, **kwargs)
