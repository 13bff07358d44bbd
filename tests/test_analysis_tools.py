"""tools/ensemble.py and tools/class_report.py on hand-made results."""
import csv
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from tools import class_report, ensemble
from torchlight.io import UserError

NAMES = ['s0', 's1', 's2']
LABELS = [0, 1, 2]
# 3 samples x 3 classes per stream; joint alone is right on all three, motion on none.
JOINT = np.array([[3., 0., 0.], [0., 2., 1.], [1., 0., 2.]])
BONE = np.array([[0., 1., 0.], [0., 1., 0.], [0., 0., 1.]])
MOTION = np.array([[0., 4., 0.], [0., 0., 1.], [0., 0., 0.]])


def write_pkl(path, obj):
    with open(path, 'wb') as f:
        pickle.dump(obj, f)
    return str(path)


def write_streams(tmp_path, names=NAMES):
    label = write_pkl(tmp_path / 'val_label.pkl', (list(NAMES), list(LABELS)))
    paths = []
    for stream, scores in (('joint', JOINT), ('bone', BONE), ('motion', MOTION)):
        os.makedirs(tmp_path / stream, exist_ok=True)
        result = {n: s.astype(np.float32) for n, s in zip(names, scores)}
        paths.append(write_pkl(tmp_path / stream / 'test_result.pkl', result))
    return label, paths


def run_tool(script, *args):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, os.path.join(ROOT, 'tools', script), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


# ---------------------------------------------------------------- ensemble

def test_default_weights():
    assert ensemble.default_weights(3) == [0.6, 0.6, 0.4]
    assert ensemble.default_weights(2) == [1.0, 1.0]
    assert ensemble.default_weights(4) == [0.6, 0.6, 0.4, 0.4]      # CTR-GCN's 4-stream preset
    assert ensemble.default_weights(5) == [1.0] * 5


def test_fuse_raw_weighted_sum_exact_values():
    streams = [JOINT, BONE, MOTION]
    fused = ensemble.fuse(streams)                       # default 0.6 0.6 0.4 on raw scores
    np.testing.assert_allclose(fused, [[1.8, 2.2, 0.0], [0.0, 1.8, 1.0], [0.6, 0.0, 1.8]], atol=1e-12)
    assert fused.argmax(1).tolist() == [1, 1, 2]
    assert ensemble.topk(fused, LABELS, 1) == pytest.approx(2 / 3)

    reweighted = ensemble.fuse(streams, [1.0, 1.0, 0.25])
    np.testing.assert_allclose(reweighted, [[3.0, 2.0, 0.0], [0.0, 3.0, 1.25], [1.0, 0.0, 3.0]], atol=1e-12)
    assert reweighted.argmax(1).tolist() == [0, 1, 2]    # the weights change sample 0's prediction
    assert ensemble.topk(reweighted, LABELS, 1) == 1.0

    np.testing.assert_allclose(ensemble.fuse(streams, [1, 1, 1]), JOINT + BONE + MOTION)


def test_fuse_softmax_option():
    w = [0.5, 2.0, 1.0]
    expected = sum(wi * ensemble.softmax(s) for wi, s in zip(w, [JOINT, BONE, MOTION]))
    np.testing.assert_allclose(ensemble.fuse([JOINT, BONE, MOTION], w, use_softmax=True), expected)
    np.testing.assert_allclose(ensemble.softmax(JOINT).sum(1), 1.0)


def test_topk():
    assert ensemble.topk(JOINT, LABELS, 1) == 1.0
    assert ensemble.topk(BONE, LABELS, 1) == pytest.approx(2 / 3)
    assert ensemble.topk(MOTION, LABELS, 1) == 0.0
    assert ensemble.topk(MOTION, LABELS, 2) == pytest.approx(1 / 3)  # ties: lower class id first
    assert ensemble.topk(MOTION, LABELS, 5) == 1.0                   # k clipped to num_class


def test_wrong_number_of_weights(tmp_path):
    with pytest.raises(UserError, match='2 weights for 3 result files'):
        ensemble.fuse([JOINT, BONE, MOTION], [1.0, 1.0])
    label, paths = write_streams(tmp_path)
    proc = run_tool('ensemble.py', '--label', label, '--results', *paths, '--weights', '1', '1')
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith('error:') and '2 --weights for 3 --results' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_mismatched_sample_names_name_the_file(tmp_path):
    label, paths = write_streams(tmp_path)
    bad = write_pkl(tmp_path / 'bad.pkl', {'s0': JOINT[0], 's1': JOINT[1], 'x9': JOINT[2]})
    with pytest.raises(UserError) as e:
        ensemble.load_streams(label, [paths[0], bad])
    msg = str(e.value)
    assert 'bad.pkl' in msg and "'s2'" in msg and "'x9'" in msg
    proc = run_tool('ensemble.py', '--label', label, '--results', paths[0], bad)
    assert proc.returncode != 0 and 'bad.pkl' in proc.stderr and 'Traceback' not in proc.stderr


def test_num_class_mismatch_and_bad_files(tmp_path):
    label, paths = write_streams(tmp_path)
    four = write_pkl(tmp_path / 'four.pkl', {n: np.zeros(4) for n in NAMES})
    with pytest.raises(UserError, match='four.pkl.*4 classes'):
        ensemble.load_streams(label, [paths[0], four])
    ragged = write_pkl(tmp_path / 'ragged.pkl', {'s0': np.zeros(3), 's1': np.zeros(4), 's2': np.zeros(3)})
    with pytest.raises(UserError, match='ragged.pkl'):
        ensemble.load_results(ragged)
    with pytest.raises(UserError, match='does not exist'):
        ensemble.load_results(str(tmp_path / 'nope.pkl'))
    small = write_pkl(tmp_path / 'two.pkl', {n: np.zeros(2) for n in NAMES})
    with pytest.raises(UserError, match='out of range'):
        ensemble.load_streams(label, [small])


def test_ensemble_cli_and_out_round_trip(tmp_path):
    label, paths = write_streams(tmp_path)
    out = tmp_path / 'fused' / 'fused.pkl'
    proc = run_tool('ensemble.py', '--label', label, '--results', *paths, '--out', out)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any('joint' in l and 'weight 0.6' in l and 'top1 100.00%' in l for l in lines), proc.stdout
    assert any('motion' in l and 'weight 0.4' in l and 'top1   0.00%' in l for l in lines), proc.stdout
    assert any(l.startswith('fused') and 'top1  66.67%' in l and 'top5 100.00%' in l for l in lines), proc.stdout

    fused = ensemble.load_results(str(out))
    assert sorted(fused) == NAMES
    np.testing.assert_allclose(np.stack([fused[n] for n in NAMES]), ensemble.fuse([JOINT, BONE, MOTION]),
                               rtol=1e-6)
    with open(out, 'rb') as f:
        assert next(iter(pickle.load(f).values())).dtype == np.float32

    proc = run_tool('ensemble.py', '--label', label, '--results', *paths, '--weights', '1', '1', '0.25')
    assert proc.returncode == 0, proc.stderr
    assert any(l.startswith('fused') and 'top1 100.00%' in l for l in proc.stdout.splitlines()), proc.stdout
    # the fused file is a valid result for the tools again (e.g. a 2-stream fusion of fused + joint)
    proc = run_tool('ensemble.py', '--label', label, '--results', out, paths[0], '--softmax')
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------- class_report

def report_example():
    """5 classes: 0: 10/10, 1: 9/10 (one -> 2), 2: 4/5 (one -> 0), 3: 3/4 (one -> 1), 4: no samples."""
    labels = [0] * 10 + [1] * 10 + [2] * 5 + [3] * 4
    preds = [0] * 10 + [1] * 9 + [2] + [2] * 4 + [0] + [3] * 3 + [1]
    return np.array(labels), np.eye(5)[preds]


def test_confusion_accuracy_and_levels():
    labels, scores = report_example()
    stats = class_report.analyse(scores, labels)
    expected = np.zeros((5, 5), dtype=np.int64)
    expected[0, 0], expected[1, 1], expected[1, 2] = 10, 9, 1
    expected[2, 2], expected[2, 0], expected[3, 3], expected[3, 1] = 4, 1, 3, 1
    np.testing.assert_array_equal(stats['confusion'], expected)
    np.testing.assert_array_equal(stats['count'], [10, 10, 5, 4, 0])
    np.testing.assert_array_equal(stats['correct'], [10, 9, 4, 3, 0])
    np.testing.assert_allclose(stats['accuracy'][:4], [1.0, 0.9, 0.8, 0.75])
    assert np.isnan(stats['accuracy'][4])
    # 90% and 80% are both medium; the empty class is in no level
    assert stats['levels'] == {'easy': [0], 'medium': [1, 2], 'hard': [3]}
    assert stats['level_means']['easy'] == 1.0
    assert stats['level_means']['medium'] == pytest.approx(0.85)
    assert stats['level_means']['hard'] == pytest.approx(0.75)
    assert stats['top1'] == pytest.approx(26 / 29)
    assert class_report.top_confusions(stats['confusion']) == [(1, 2, 1), (2, 0, 1), (3, 1, 1)]
    assert class_report.difficulty_levels([0.95, 0.91, 0.9, 0.85, 0.8, 0.79, 0.0]) == \
        {'easy': [0, 1], 'medium': [2, 3, 4], 'hard': [5, 6]}


def test_class_names(tmp_path):
    names = class_report.load_class_names(os.path.join(ROOT, 'config', 'text', 'descriptions', 'ucla.yaml'), 10)
    assert len(names) == 10 and names[0] == 'pick up with one hand'
    txt = tmp_path / 'names.txt'
    txt.write_text('a\nb b\n\nc\n')
    assert class_report.load_class_names(str(txt)) == ['a', 'b b', 'c']
    with pytest.raises(UserError, match='3 names but the result has 5 classes'):
        class_report.load_class_names(str(txt), 5)
    bad = tmp_path / 'bad.yaml'
    bad.write_text('classes:\n  - global: no label here\n')
    with pytest.raises(UserError, match=r'classes\[0\]'):
        class_report.load_class_names(str(bad))


def test_png_skipped_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'matplotlib', None)   # import matplotlib -> ImportError
    path = tmp_path / 'cm.png'
    assert class_report.plot_confusion_png(str(path), np.eye(2, dtype=np.int64), ['a', 'b']) is False
    assert not path.exists()


def test_png_written_with_matplotlib(tmp_path):
    pytest.importorskip('matplotlib')
    path = tmp_path / 'cm.png'
    assert class_report.plot_confusion_png(str(path), np.eye(3, dtype=np.int64), ['a', 'b', 'c']) is True
    assert path.stat().st_size > 0


def test_class_report_cli(tmp_path):
    labels, scores = report_example()
    names = [f'v{i}' for i in range(len(labels))]
    label = write_pkl(tmp_path / 'val_label.pkl', (names, labels.tolist()))
    result = write_pkl(tmp_path / 'test_result.pkl', {n: s.astype(np.float32) for n, s in zip(names, scores)})
    class_names = tmp_path / 'names.txt'
    class_names.write_text('\n'.join(['jump', 'run', 'sit', 'wave', 'clap']) + '\n')
    out = tmp_path / 'report'
    proc = run_tool('class_report.py', '--label', label, '--result', result, '--class-names', class_names,
                    '--out-folder', out)
    assert proc.returncode == 0, proc.stderr
    text = (out / 'report.txt').read_text()
    assert text in proc.stdout
    assert 'top1 89.66%' in text
    assert 'easy' in text and '1 classes, mean acc 100.00%: 0 jump' in text
    assert '2 classes, mean acc 85.00%: 1 run, 2 sit' in text
    assert '1 classes, mean acc 75.00%: 3 wave' in text
    assert 'no samples (1 classes): 4 clap' in text
    with open(out / 'confusion_matrix.csv') as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['true \\ predicted', 'jump', 'run', 'sit', 'wave', 'clap']
    assert rows[2] == ['run', '0', '9', '1', '0', '0']
    with open(out / 'per_class.csv') as f:
        per_class = list(csv.DictReader(f))
    assert [r['accuracy'] for r in per_class] == ['1.000000', '0.900000', '0.800000', '0.750000', '']
    try:
        import matplotlib  # noqa: F401
        assert (out / 'confusion_matrix.png').stat().st_size > 0
    except ImportError:
        assert not (out / 'confusion_matrix.png').exists()
        assert 'notice: matplotlib is not installed' in proc.stdout

    proc = run_tool('class_report.py', '--label', label, '--result', result, '--class-names',
                    os.path.join(ROOT, 'config', 'text', 'descriptions', 'ucla.yaml'), '--out-folder', out)
    assert proc.returncode != 0 and proc.stderr.startswith('error:') and '10 names but the result has 5' in proc.stderr
