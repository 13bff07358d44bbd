"""Tests of the data tools (tools/*_gendata.py) and the 50-frame step (feeder/preprocess.py).

They read the real samples in ``<repo>/../shared/realdata`` and skip when it is absent; outputs go to
pytest tmp dirs only."""
import os
import pickle
import shutil

import numpy as np
import pytest

from feeder import preprocess
from feeder.preprocess import normalize_dataset, normalize_sequence
from net.utils.layouts import get_layout
from tools import ntu_gendata, pku_gendata, ucla_gendata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL = os.path.join(REPO, '..', 'shared', 'realdata')
NTU_DIR = os.path.join(REAL, 'ntu_skeleton_samples')
PKU_FILE = os.path.join(REAL, 'pkummd_sample', 'A10N08-L.txt')
UCLA_DIR = os.path.join(REAL, 'nw_ucla', 'all_sqe')


def need(path):
    if not os.path.exists(path):
        pytest.skip(f'real data not found at {os.path.normpath(path)} (expected <repo>/../shared/realdata)')


# README table of ntu_skeleton_samples: name -> (frames, bodies per frame)
NTU_FRAMES = {
    'S001C001P001R001A001': (103, 1), 'S001C001P001R001A002': (158, 1), 'S001C001P001R001A003': (104, 1),
    'S001C001P001R001A004': (99, 1), 'S001C001P001R001A005': (54, 1), 'S001C001P001R001A011': (82, 1),
    'S002C001P003R001A003': (100, 1), 'S003C001P015R001A034': (71, 1), 'S004C002P003R001A017': (124, 1),
    'S001C001P001R001A050': (74, 2), 'S001C003P008R002A058': (70, 2), 'S017C003P020R002A054': (42, 2),
    'S017C003P020R002A055': (66, 2), 'S017C003P020R002A056': (80, 2), 'S017C003P020R002A057': (76, 2),
    'S017C003P020R002A058': (65, 2),
}
NTU = get_layout('ntu-rgb+d')
UCLA = get_layout('nw-ucla')


def ntu_path(name):
    return os.path.join(NTU_DIR, name + '.skeleton')


@pytest.fixture(scope='module')
def ntu_raw():
    need(NTU_DIR)
    return {name: ntu_gendata.read_xyz(ntu_path(name)) for name in NTU_FRAMES}


# ---------------------------------------------------------------- NTU reader

def test_ntu_raw_frames_and_bodies(ntu_raw):
    for name, (frames, bodies) in NTU_FRAMES.items():
        seq = ntu_raw[name]
        assert seq.shape == (3, frames, 25, 2), name
        assert np.any(seq[..., 0] != 0, axis=(0, 2)).all(), name          # person 0 in every frame
        if bodies == 2:
            assert np.abs(seq[..., 1]).sum() > 0, name
        else:
            assert not seq[..., 1].any(), name


def test_ntu_crlf_and_lf(tmp_path):
    need(NTU_DIR)
    crlf = [n for n in NTU_FRAMES if b'\r\n' in open(ntu_path(n), 'rb').read(200)]
    assert len(crlf) == 5                                                 # README: 5 CRLF, 11 LF
    lf_name, crlf_name = 'S001C001P001R001A001', crlf[0]
    for name, old, new in ((lf_name, b'\n', b'\r\n'), (crlf_name, b'\r\n', b'\n')):
        raw = open(ntu_path(name), 'rb').read()
        converted = tmp_path / (name + '.skeleton')
        converted.write_bytes(raw.replace(old, new))
        np.testing.assert_array_equal(ntu_gendata.read_bodies(str(converted)),
                                      ntu_gendata.read_bodies(ntu_path(name)))


def test_ntu_truncated_and_malformed(tmp_path):
    need(NTU_DIR)
    lines = open(ntu_path('S001C001P001R001A001'), 'rb').read().split(b'\n')
    cut = tmp_path / 'S001C001P001R001A001.skeleton'
    cut.write_bytes(b'\n'.join(lines[:500]) + b'\n')                      # ends on a line boundary
    with pytest.raises(ntu_gendata.SkeletonFormatError, match=r'S001C001P001R001A001\.skeleton, line 501: '
                                                              r'unexpected end of file'):
        ntu_gendata.read_bodies(str(cut))
    cut.write_bytes(b'\n'.join(lines[:500]) + b'\n' + lines[500][:15])    # ends mid joint line
    with pytest.raises(ntu_gendata.SkeletonFormatError, match=r'\.skeleton, line 501: expected 12 joint values'):
        ntu_gendata.read_bodies(str(cut))
    bad = list(lines)
    bad[1] = b'x'                                                         # body count of frame 1
    cut.write_bytes(b'\n'.join(bad))
    with pytest.raises(ValueError, match=r'line 2: expected the body count of frame 1/103'):
        ntu_gendata.read_bodies(str(cut))


def test_ntu_name_parsing_and_splits():
    info = ntu_gendata.parse_name('S017C003P020R002A054')
    assert info == dict(setup=17, camera=3, subject=20, replication=2, action=54)
    with pytest.raises(ValueError, match="'S1C1' is not an NTU sample name"):
        ntu_gendata.parse_name('S1C1')
    train = ntu_gendata.is_training
    assert train(dict(subject=1), 'ntu60', 'xsub') and not train(dict(subject=3), 'ntu60', 'xsub')
    assert train(dict(subject=103), 'ntu120', 'xsub') and not train(dict(subject=103), 'ntu60', 'xsub')
    assert len(ntu_gendata.NTU120_XSUB_TRAIN) == 53
    assert train(dict(camera=2), 'ntu60', 'xview') and not train(dict(camera=1), 'ntu60', 'xview')
    assert train(dict(setup=18), 'ntu120', 'xset') and not train(dict(setup=17), 'ntu120', 'xset')
    assert ntu_gendata.in_dataset(dict(setup=17, action=60), 'ntu60')
    assert not ntu_gendata.in_dataset(dict(setup=18, action=1), 'ntu60')
    assert not ntu_gendata.in_dataset(dict(setup=1, action=61), 'ntu60')


@pytest.fixture(scope='module')
def ntu_out(tmp_path_factory):
    """ntu_gendata (CLI entry) on the 16 real files with a fake ignore list holding A005."""
    need(NTU_DIR)
    out = tmp_path_factory.mktemp('ntu')
    ignore = out / 'missing.txt'
    ignore.write_text('S009C001P001R001A001\nS001C001P001R001A005\n')
    ntu_gendata.main(['--data-path', NTU_DIR, '--out-folder', str(out), '--ignored-sample-path', str(ignore),
                      '--no-progress'])
    return out


EXPECTED_TRAIN = {  # the 15 non-ignored names in the training part of each benchmark
    ('ntu60', 'xsub'): {n for n in NTU_FRAMES if n[8:12] in ('P001', 'P008', 'P015')},
    ('ntu60', 'xview'): {n for n in NTU_FRAMES if n[4:8] in ('C002', 'C003')},
    ('ntu120', 'xsub'): {n for n in NTU_FRAMES if n[8:12] in ('P001', 'P008', 'P015')},
    ('ntu120', 'xset'): {'S002C001P003R001A003', 'S004C002P003R001A017'},
}


@pytest.mark.parametrize('dataset,benchmark', sorted(EXPECTED_TRAIN))
def test_ntu_gendata_outputs(ntu_out, ntu_raw, dataset, benchmark):
    folder = ntu_out / dataset / benchmark
    kept = set(NTU_FRAMES) - {'S001C001P001R001A005'}
    names = {}
    for part in ('train', 'val'):
        with open(folder / f'{part}_label.pkl', 'rb') as f:
            label_tuple = pickle.load(f)
        assert isinstance(label_tuple, tuple) and len(label_tuple) == 2
        part_names, labels = label_tuple
        names[part] = set(part_names)
        assert labels == [int(n[-3:]) - 1 for n in part_names]
        assert all(type(x) is int for x in labels)
        data = np.load(folder / f'{part}_data.npy', mmap_mode='r')
        pos = np.load(folder / f'{part}_position.npy', mmap_mode='r')    # beside the label pkl
        assert data.dtype == pos.dtype == np.float32
        assert data.shape == (len(part_names), 3, 300, 25, 2)
        assert pos.shape == (len(part_names), 3, 50, 25, 2)
        assert np.isfinite(pos).all()
        for i, name in enumerate(part_names):
            frames = NTU_FRAMES[name][0]
            np.testing.assert_allclose(data[i, :, :frames], ntu_raw[name], rtol=1e-6)
            assert not data[i, :, frames:].any()
            assert bool(pos[i, ..., 1].any()) == (NTU_FRAMES[name][1] == 2)
    assert names['train'] == EXPECTED_TRAIN[(dataset, benchmark)] - {'S001C001P001R001A005'}
    assert names['train'] | names['val'] == kept and not names['train'] & names['val']


def test_ntu60_filter_and_positions_only(tmp_path):
    need(NTU_DIR)
    src = tmp_path / 'raw'
    src.mkdir()
    shutil.copy(ntu_path('S001C001P001R001A001'), src / 'S001C001P001R001A001.skeleton')
    shutil.copy(ntu_path('S001C001P001R001A002'), src / 'S018C001P001R001A061.skeleton')   # NTU-120 only
    counts = ntu_gendata.gendata(str(src), str(tmp_path / 'out'), ('ntu60', 'ntu120'), ['xsub'], progress=False)
    assert counts == {('ntu60', 'xsub', 'train'): 1, ('ntu60', 'xsub', 'val'): 0,
                      ('ntu120', 'xsub', 'train'): 2, ('ntu120', 'xsub', 'val'): 0}
    folder = tmp_path / 'out' / 'ntu120' / 'xsub'
    assert not list(folder.glob('*.partial'))
    before = np.load(folder / 'train_position.npy')
    ntu_gendata.main(['--positions-only', '--out-folder', str(tmp_path / 'out'), '--dataset', 'ntu120',
                      '--benchmark', 'xsub', '--no-progress'])
    np.testing.assert_allclose(np.load(folder / 'train_position.npy'), before, atol=1e-5)


# ---------------------------------------------------------------- preprocess

def test_preprocess_invariants_real(ntu_raw):
    for name, seq in ntu_raw.items():
        out = normalize_sequence(seq, NTU, 50)
        assert out.shape == (3, 50, 25, 2) and out.dtype == np.float32
        assert np.isfinite(out).all()
        assert not out[:, :, NTU.origin_joint, 0].any()                   # origin of person 0 at zero
        left, right = NTU.shoulders
        shoulder = out[:, 0, right, 0] - out[:, 0, left, 0]
        assert abs(shoulder[2]) < 1e-5 and shoulder[0] > 0, name          # parallel to +x
        if NTU_FRAMES[name][1] == 1:
            assert not out[..., 1].any()                                  # absent person stays zero
        # rotation + translation keep bone lengths of the first frame
        raw_bone = np.linalg.norm(seq[:, 0, 4, 0] - seq[:, 0, 5, 0])
        assert abs(np.linalg.norm(out[:, 0, 4, 0] - out[:, 0, 5, 0]) - raw_bone) < 1e-5


def test_preprocess_synthetic_cases():
    rng = np.random.default_rng(0)
    seq = np.zeros((3, 20, 25, 2))
    seq[:, 5:15, :, 0] = rng.normal(size=(3, 10, 25)) + 1.0              # valid span 5..14
    seq[:, 5:15, NTU.shoulders[0], 0] = [[0.0], [0.0], [0.0]]
    seq[:, 5:15, NTU.shoulders[1], 0] = [[0.0], [0.0], [1.0]]            # shoulder line along +z
    seq[:, 10:15, :, 1] = 2.0                                             # person 1 in the second half
    out = normalize_sequence(seq, NTU, 50)
    left, right = NTU.shoulders
    np.testing.assert_allclose(out[:, :, right, 0] - out[:, :, left, 0],
                               np.tile([[1.0], [0.0], [0.0]], (1, 50)), atol=1e-6)
    present = out[..., 1].any(axis=(0, 2))
    assert not present[:24].any() and present[26:].all()                 # no half-scaled skeletons
    # linear interpolation over the frame index
    ramp = np.zeros((3, 3, 25, 1))
    ramp[0, :, :, 0] = np.arange(3)[:, None] * np.ones(25) + 1.0
    ramp[1] = 1.0
    out = normalize_sequence(ramp, get_layout(dict(num_node=25, edges=[], center=0)), 5)
    np.testing.assert_allclose(out[0, :, 1, 0], [0, 0, 0, 0, 0], atol=1e-6)   # centred on joint 0
    # 1-frame sequence is repeated; all-zero sequence raises, naming the sample
    one = seq[:, 7:8]
    out = normalize_sequence(one, NTU, 50)
    assert out.shape == (3, 50, 25, 2) and np.isfinite(out).all()
    np.testing.assert_allclose(out, np.repeat(out[:, :1], 50, axis=1))
    batch = np.stack([seq, np.zeros_like(seq)])
    with pytest.raises(ValueError, match='sample 1: sequence has no non-zero frame'):
        normalize_dataset(batch, NTU, progress=False)
    assert normalize_dataset(batch[:1], NTU, 50, progress=False).shape == (1, 3, 50, 25, 2)


def test_interpolation_positions():
    layout = get_layout(dict(num_node=2, edges=[], center=0))
    seq = np.zeros((3, 4, 2, 1))
    seq[0, :, 1, 0] = [1.0, 2.0, 3.0, 4.0]                                # joint 1 x = 1..4, joint 0 at 0
    seq[1, :, 0, 0] = 1e-3                                                # keep joint 0 "present"
    out = normalize_sequence(seq, layout, 7)
    np.testing.assert_allclose(out[0, :, 1, 0], np.linspace(1, 4, 7), atol=1e-6)


# ---------------------------------------------------------------- PKU-MMD

def test_pku_reader_real():
    need(PKU_FILE)
    seq = pku_gendata.read_pku_skeleton(PKU_FILE)
    assert seq.shape == (3, 1040, 25, 2)
    assert int(seq[..., 1].any(axis=(0, 2)).sum()) == 728
    assert seq[..., 0].any(axis=(0, 2)).all()
    first = open(PKU_FILE).readline().split()
    assert len(first) == 150
    np.testing.assert_allclose(seq[:, 0, 1, 0], [float(x) for x in first[3:6]])
    np.testing.assert_allclose(seq[:, 0, 0, 1], [float(x) for x in first[75:78]])


def test_pku_reader_errors(tmp_path):
    bad = tmp_path / 'bad.txt'
    bad.write_text(' '.join(['0.1'] * 150) + '\n' + ' '.join(['0.1'] * 149) + '\n')
    with pytest.raises(ValueError, match=r'bad\.txt, line 2: expected 150 values'):
        pku_gendata.read_pku_skeleton(str(bad))
    labels = tmp_path / 'lab.txt'
    labels.write_text('3,1,10,1\n52,20,30,2\n')
    with pytest.raises(ValueError, match=r'lab\.txt, line 2: label 52 outside 1\.\.51'):
        pku_gendata.read_pku_labels(str(labels), 51)


def test_pku_split_lenient(tmp_path):
    split = tmp_path / 'split.txt'
    split.write_text('Training videos: 0002-L, 0002-M,0002-R\r\n0003-L\r\nValidataion videos (3): \r\n'
                     '0291-L, 0291-M 0291-R,\n')
    assert pku_gendata.read_pku_split(str(split)) == (['0002-L', '0002-M', '0002-R', '0003-L'],
                                                      ['0291-L', '0291-M', '0291-R'])
    split.write_text('0002-L\nValidation\n0291-L\n')
    with pytest.raises(ValueError, match="'0002-L' before any"):
        pku_gendata.read_pku_split(str(split))


def test_pku_gendata_segments(tmp_path):
    need(PKU_FILE)
    skel, lab = tmp_path / 'skeleton', tmp_path / 'label'
    skel.mkdir()
    lab.mkdir()
    for video in ('A10N08-L', 'A10N08-M'):
        os.symlink(os.path.abspath(PKU_FILE), skel / f'{video}.txt')
    (lab / 'A10N08-L.txt').write_text('3,10,59,1\n12,100,449,2\n')      # 50 frames; 350 frames (cropped)
    (lab / 'A10N08-M.txt').write_text('51,1000,1100,1\r\n')               # clipped to 1000..1039
    split = tmp_path / 'cross-subject.txt'
    split.write_text('Training videos:\nA10N08-L,\nValidation videos:\nA10N08-M\n')
    counts = pku_gendata.gendata(str(skel), str(lab), str(split), str(tmp_path / 'out'), part=1, progress=False)
    assert counts == {'train': 2, 'val': 1}
    folder = tmp_path / 'out' / 'pkummd' / 'part1'
    names, labels = pickle.load(open(folder / 'train_label.pkl', 'rb'))
    assert (names, labels) == (['A10N08-L_0', 'A10N08-L_1'], [2, 11])
    assert pickle.load(open(folder / 'val_label.pkl', 'rb')) == (['A10N08-M_0'], [50])
    data = np.load(folder / 'train_data.npy')
    pos = np.load(folder / 'train_position.npy')
    assert data.shape == (2, 3, 300, 25, 2) and pos.shape == (2, 3, 50, 25, 2)
    raw = pku_gendata.read_pku_skeleton(PKU_FILE)
    assert not data[0, :, 50:].any()
    for k in range(2):                                                    # persons may be reordered
        assert any(np.allclose(data[0, :, :50, :, k], raw[:, 10:60, :, j]) for j in range(2))
    assert data[1, :, 299].any()                                          # 350 frames cropped to 300
    val = np.load(folder / 'val_data.npy')
    assert val[0, :, :40].any(axis=(0, 2, 3)).all() and not val[0, :, 40:].any()
    assert np.isfinite(pos).all() and np.isfinite(np.load(folder / 'val_position.npy')).all()


# ---------------------------------------------------------------- NW-UCLA

def test_ucla_gendata_real(tmp_path, capsys):
    need(UCLA_DIR)
    ucla_gendata.main(['--data-path', UCLA_DIR, '--out-folder', str(tmp_path), '--no-progress'])
    # the floor of these arrays, in the one printed form (tools/floor.py) that docs/DATA.md and the README quote
    floor = capsys.readouterr().out.splitlines()[-1]
    assert floor.startswith(f"ridge floor of {tmp_path / 'ucla'} (3 x 50 x 20 x 1 numbers a clip): val top-1 65.3% "
                            '(alpha 10000 by 3-fold cross-validation on train; majority class'), floor
    folder = tmp_path / 'ucla'
    sizes = {'train': 1020, 'val': 464}
    for part, n in sizes.items():
        names, labels = pickle.load(open(folder / f'{part}_label.pkl', 'rb'))
        pos = np.load(folder / f'{part}_position.npy')
        assert len(names) == len(labels) == n
        assert pos.shape == (n, 3, 50, 20, 1) and pos.dtype == np.float32
        assert np.isfinite(pos).all()
        assert sorted(set(labels)) == list(range(10))
        views = {name[-3:] for name in names}
        assert views == ({'v01', 'v02'} if part == 'train' else {'v03'})
        assert not pos[:, :, :, UCLA.origin_joint].any()
        left, right = UCLA.shoulders
        assert np.abs(pos[:, 2, 0, right] - pos[:, 2, 0, left]).max() < 1e-5
        one = {'train': 'a02_s09_e04_v02', 'val': 'a02_s09_e04_v03'}[part]   # the 1-frame samples
        i = names.index(one)
        assert np.isfinite(pos[i]).all() and pos[i].any()
        np.testing.assert_allclose(pos[i], np.repeat(pos[i][:, :1], 50, axis=1))


def test_ucla_bad_file(tmp_path):
    (tmp_path / 'a01_s01_e00_v01.json').write_text('{"file_name": "a01_s01_e00_v01", "skeletons": [[[0, 0]]], '
                                                   '"label": 1}')
    with pytest.raises(ValueError, match=r'a01_s01_e00_v01\.json: skeletons must be \[T\]\[20\]\[3\]'):
        ucla_gendata.gendata(str(tmp_path), str(tmp_path / 'out'), progress=False)


def test_fit_frames_and_select_bodies():
    seq = np.ones((3, 5, 25, 1))
    out = preprocess.fit_frames(seq, 3, 2)
    assert out.shape == (3, 3, 25, 2) and out[..., 0].all() and not out[..., 1].any()
    bodies = np.zeros((4, 6, 25, 3))
    bodies[2] = np.random.default_rng(1).normal(size=(6, 25, 3))         # the only moving body
    bodies[0, :, :, :] = 0.5                                              # constant body: energy 0
    kept = preprocess.select_bodies(bodies, 2)
    np.testing.assert_array_equal(kept[..., 0], bodies[2].transpose(2, 0, 1))
    np.testing.assert_array_equal(kept[..., 1], bodies[0].transpose(2, 0, 1))
