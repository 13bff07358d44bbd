"""The embedded synthetic NTU-25 dataset (tools/gen_synthetic.py): format, determinism, persons,
kinematic sanity and difficulty."""
import os
import pickle
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from net.utils.layouts import get_layout  # noqa: E402
from tools import gen_synthetic as gs  # noqa: E402

LAYOUT = get_layout('ntu-rgb+d')
NUM_CLASS = len(gs.CLASS_NAMES)
INTERACTION = [gs.CLASS_NAMES.index(name) for name in gs.INTERACTION_CLASSES]
BONES = [(v, p) for v, p in enumerate(LAYOUT.parents) if v != p]


def present(data):
    """(N, M) bool: which bodies are not all zeros."""
    return np.abs(data).max(axis=(1, 2, 3)) > 0


def bone_lengths(body):
    """(N, 3, T, V) -> (N, T, bones)."""
    child, parent = zip(*BONES)
    return np.linalg.norm(body[:, :, :, list(child)] - body[:, :, :, list(parent)], axis=1)


@pytest.fixture(scope='module')
def small():
    return gs.generate(0, 4)


def test_cli_writes_the_ntu_format(tmp_path):
    gs.main(['--out-folder', str(tmp_path), '--num-train-per-class', '3', '--num-val-per-class', '2'])
    for split, per_class in (('train', 3), ('val', 2)):
        data = np.load(tmp_path / f'{split}_position.npy')
        assert data.dtype == np.float32
        assert data.shape == (NUM_CLASS * per_class, 3, 50, 25, 2)
        with open(tmp_path / f'{split}_label.pkl', 'rb') as f:
            names, labels = pickle.load(f)
        assert isinstance(names, list) and isinstance(labels, list)
        assert len(names) == len(labels) == len(data) == len(set(names))
        assert all(isinstance(n, str) for n in names)
        assert all(type(label) is int for label in labels)
        assert sorted(set(labels)) == list(range(NUM_CLASS))
        assert np.isfinite(data).all()


def test_coordinates_follow_the_preprocessed_ntu_convention(small):
    data, labels, _ = small
    single = ~np.isin(labels, INTERACTION)
    first = data[:, :, 0, :, 0]                              # (N, 3, V), person 0, frame 0
    assert np.abs(first[:, :, gs.SPINE_SHOULDER]).max() < 0.1  # centred (up to noise/glitches)
    assert (first[:, 1, gs.HEAD] > first[:, 1, gs.SPINE_BASE]).all()          # y up
    assert (first[single, 0, gs.R_SHOULDER] > first[single, 0, gs.L_SHOULDER]).all()   # facing
    height = first[:, 1, gs.HEAD] - np.minimum(first[:, 1, gs.L_FOOT], first[:, 1, gs.R_FOOT])
    assert 1.2 < height.min() and height.max() < 2.1          # metres


def test_deterministic_under_the_seed(small):
    data, labels, names = gs.generate(0, 4)
    assert data.tobytes() == small[0].tobytes() and labels == small[1] and names == small[2]
    assert not np.allclose(gs.generate(1, 4)[0], data)
    assert not np.allclose(gs.generate(0, 4, split='val')[0], data)
    # a larger set extends a smaller one
    assert gs.generate(0, 2)[0].tobytes() == data[:2 * NUM_CLASS].tobytes()


def test_cli_is_byte_identical(tmp_path):
    args = ['--num-train-per-class', '1', '--num-val-per-class', '1']
    gs.main(['--out-folder', str(tmp_path / 'a')] + args)
    gs.main(['--out-folder', str(tmp_path / 'b')] + args)
    for name in ('train_position.npy', 'train_label.pkl', 'val_position.npy', 'val_label.pkl'):
        assert (tmp_path / 'a' / name).read_bytes() == (tmp_path / 'b' / name).read_bytes()


def test_second_person_only_in_interactions():
    data, labels, _ = gs.generate(0, 6, bystander_prob=0.0)
    interaction = np.isin(labels, INTERACTION)
    assert present(data)[:, 0].all()
    assert (present(data)[:, 1] == interaction).all()
    assert (gs.generate(0, 2, num_person=1)[0].shape[-1] == 1)


def test_bystanders_are_static_and_documented():
    data, labels, _ = gs.generate(0, 16)              # default bystander_prob=0.15
    interaction = np.isin(labels, INTERACTION)
    second = present(data)[:, 1]
    assert second[interaction].all()
    assert 0.05 < second[~interaction].mean() < 0.3
    bystanders = data[second & ~interaction][..., 1]  # (n, 3, T, V)
    motion = np.median(bystanders.std(axis=2).mean(axis=1), axis=1)   # median joint's temporal std
    assert (motion < 0.03).all()


def test_bone_lengths_are_constant_in_time_and_vary_across_subjects():
    clean, _, _ = gs.generate(0, 3, noise_std=0.0, glitch_prob=0.0)
    for m in range(2):
        has = present(clean)[:, m]
        lengths = bone_lengths(clean[has][..., m])
        assert np.abs(lengths - lengths[:, :1]).max() < 1e-4           # exact FK
        assert (lengths > 0.01).all()
    lengths = bone_lengths(clean[..., 0])[:, 0]                        # (N, bones)
    assert (lengths.std(axis=0) / lengths.mean(axis=0)).min() > 0.03   # per-subject scaling
    noisy = bone_lengths(gs.generate(0, 3)[0][..., 0])
    assert np.median(noisy.std(axis=1)) < 0.025                        # ~1 cm sensor noise


def test_nearest_centroid_on_raw_joints_is_far_from_perfect_but_above_chance():
    """Documents the difficulty. Nearest class centroid on the raw flattened (3*50*25*2) coordinates:
    46% on the default val split when fit on the default train split (32/16 per class, seed 0),
    34% in this smaller setting (16/8); chance is 10%. For reference (not tested here), on the
    default splits a linear probe on a frozen randomly-initialised 3-layer temporal-conv encoder
    reached ~77% and the same network trained with labels ~95%."""
    train, train_labels, _ = gs.generate(0, 16)
    val, val_labels, _ = gs.generate(0, 8, split='val')
    train, val = train.reshape(len(train), -1), val.reshape(len(val), -1)
    train_labels, val_labels = np.array(train_labels), np.array(val_labels)
    centroids = np.stack([train[train_labels == c].mean(axis=0) for c in range(NUM_CLASS)])
    dist = ((val[:, None] - centroids[None]) ** 2).sum(axis=-1)
    acc = (dist.argmin(axis=1) == val_labels).mean()
    assert 2.0 / NUM_CLASS < acc < 0.7
