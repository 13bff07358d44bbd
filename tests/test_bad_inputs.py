"""The bad-input suite (issue 8): every case gives ONE line naming the file / key / value, exits 2 through
``main.py`` (``error: ...``), and leaves what is already on disk (logs, checkpoints, earlier outputs) intact.

Most cases run ``main.main`` in-process (the same code path as ``python main.py``, several times cheaper);
a few run ``python main.py`` / ``python tools/ntu_gendata.py`` as subprocesses to check the real exit
status and stderr. Data are tiny (``conftest.tiny_dataset``: 16 samples, V=20, M=1)."""
import contextlib
import io
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import yaml

import main as main_module
from conftest import ROOT, one_line, tiny_dataset, write_config
from tools import ntu_gendata
from torchlight.io import UserError, run_tool

ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
UCLA_FEATURES = os.path.join(ROOT, 'config', 'text', 'features', 'ucla.minilm.npz')


# ---------------------------------------------------------------- helpers



def run_main(capsys, *argv):
    """``main.main(argv)`` in-process -> its one-line error (asserts exit status 2)."""
    capsys.readouterr()
    rc = main_module.main(list(argv))
    err = capsys.readouterr().err
    assert rc == 2, f'exit status {rc}, stderr:\n{err}'
    assert err.startswith('error: '), err
    return err


def run_cli(*argv, script='main.py'):
    """``python <script> argv`` as a subprocess -> its one-line stderr (asserts exit status 2, no
    traceback)."""
    proc = subprocess.run([sys.executable, script, *argv], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert 'Traceback' not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith('error: '), proc.stderr
    return proc.stderr


def seed_work_dir(work_dir, finished=False):
    """A work dir holding an earlier attempt: log.txt and a checkpoint (and latest.pt + config.yaml
    when ``finished``). Returns a snapshot {name: bytes}."""
    os.makedirs(work_dir, exist_ok=True)
    files = {'log.txt': b'[old] an earlier run\n', 'epoch1_model.pt': os.urandom(64)}
    if finished:
        files.update({'latest.pt': os.urandom(64), 'config.yaml': b'old: config\n'})
    for name, content in files.items():
        with open(os.path.join(work_dir, name), 'wb') as f:
            f.write(content)
    return files


def assert_preserved(work_dir, snapshot, strict=False):
    """Checkpoints byte-identical; log.txt still starts with its old content (identical if ``strict``);
    no latest.pt created by the failed run."""
    for name, content in snapshot.items():
        with open(os.path.join(work_dir, name), 'rb') as f:
            now = f.read()
        if name == 'log.txt' and not strict:
            assert now.startswith(content), name
        else:
            assert now == content, name
    if 'latest.pt' not in snapshot:
        assert not os.path.exists(os.path.join(work_dir, 'latest.pt'))


def save(path, data, names=None, labels=None, num_class=4):
    n = len(data)
    np.save(f'{path}.npy', data)
    with open(f'{path}.pkl', 'wb') as f:
        pickle.dump((names if names is not None else [f's{i}' for i in range(n)],
                     labels if labels is not None else [i % num_class for i in range(n)]), f)
    return f'{path}.npy', f'{path}.pkl'


def good_data(n=16, V=20, T=12, M=1, seed=0):
    return np.random.RandomState(seed).randn(n, 3, T, V, M).astype(np.float32)


ENCODER_ARGS = {'in_channels': 3, 'hidden_channels': 4, 'hidden_dim': 8, 'num_class': 4, 'dropout': 0.0,
                'graph_args': {'layout': 'nw-ucla', 'strategy': 'spatial'}, 'edge_importance_weighting': True}


def eval_config(tmp_path, data_path, label_path, test=None, **overrides):
    """A supervised (recognition / linear / finetune) config on the given data, ST-GCN encoder."""
    test = test or (data_path, label_path)
    feeder_args = {'shear_amplitude': -1, 'temperal_padding_ratio': -1}
    cfg = {'work_dir': str(tmp_path / 'run'), 'model': 'net.st_gcn.Model', 'model_args': dict(ENCODER_ARGS),
           'train_feeder': 'feeder.ntu_feeder.Feeder_single', 'test_feeder': 'feeder.ntu_feeder.Feeder_single',
           'train_feeder_args': dict(feeder_args, data_path=data_path, label_path=label_path),
           'test_feeder_args': dict(feeder_args, data_path=test[0], label_path=test[1]),
           'batch_size': 8, 'test_batch_size': 8, 'num_epoch': 1, 'num_worker': 0, 'progress_bar': False,
           'warm_up_epoch': 0, 'step': []}
    cfg.update(overrides)
    path = tmp_path / 'eval.yaml'
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def recognition_error(capsys, tmp_path, data, names=None, labels=None, **overrides):
    d, l = save(str(tmp_path / 'bad'), data, names, labels)
    cfg = eval_config(tmp_path, d, l, **overrides)
    snapshot = seed_work_dir(str(tmp_path / 'run'))
    err = run_main(capsys, 'recognition', '--config', cfg)
    assert_preserved(str(tmp_path / 'run'), snapshot)
    return err, d, l


def skeleton_text(frames, bodies=1, joints=25, value=0.5):
    """An NTU ``.skeleton`` file: frame count; per frame the body count, per body an info line of 10
    values, the joint count and one line of 12 values per joint."""
    lines = [str(frames)]
    for t in range(frames):
        lines.append(str(bodies))
        for m in range(bodies):
            lines.append('72057594037931101 0 1 1 1 1 0 0.1 0.2 2')
            lines.append(str(joints))
            for j in range(joints):
                x = value + 0.01 * j + 0.1 * m + 0.001 * t
                xyz = '0 0 0' if value == 0 else f'{x} {x + 0.2} {x + 3}'
                lines.append(f'{xyz} 200 200 900 500 0 0 0 1 2')
    return lines


def write_skeletons(folder, files):
    folder.mkdir(exist_ok=True)
    for name, lines in files.items():
        (folder / f'{name}.skeleton').write_text('\n'.join(lines) + '\n')
    return str(folder)


def ntu_tool_error(*argv):
    """tools/ntu_gendata.py's ``main`` through ``run_tool`` (what ``python tools/ntu_gendata.py`` does)."""
    err = io.StringIO()
    with pytest.raises(SystemExit) as info, contextlib.redirect_stderr(err):
        run_tool(lambda: ntu_gendata.main(list(argv)))
    assert info.value.code == 2 and err.getvalue().startswith('error: '), err.getvalue()
    return err.getvalue()


# ---------------------------------------------------------------- NTU .skeleton files

def test_truncated_skeleton_names_file_and_line_and_keeps_earlier_outputs(tmp_path):
    good = skeleton_text(3)
    src = write_skeletons(tmp_path / 'raw', {'S001C001P001R001A001': good,
                                             'S001C002P003R001A002': good[:40]})   # cut inside frame 2
    out = tmp_path / 'out'
    earlier = out / 'ntu60' / 'xsub'
    earlier.mkdir(parents=True)
    (earlier / 'train_position.npy').write_bytes(b'earlier output')
    err = run_cli('--data-path', src, '--out-folder', str(out), '--dataset', 'ntu60', '--benchmark', 'xsub',
                  '--ignored-sample-path', '--no-progress', script=os.path.join('tools', 'ntu_gendata.py'))
    one_line(err, 'S001C002P003R001A002.skeleton', 'line 41', 'unexpected end of file')
    assert (earlier / 'train_position.npy').read_bytes() == b'earlier output'
    assert not list(out.rglob('*.partial'))


def test_non_numeric_joint_value_names_file_and_line(tmp_path):
    lines = skeleton_text(2)
    lines[6] = 'x' + lines[6]                           # joint 3 of body 1, frame 1 (line 7)
    src = write_skeletons(tmp_path / 'raw', {'S001C001P001R001A001': lines})
    err = ntu_tool_error('--data-path', src, '--out-folder', str(tmp_path / 'out'), '--ignored-sample-path',
                         '--no-progress')
    one_line(err, 'S001C001P001R001A001.skeleton', 'line 7', 'non-numeric joint value')


@pytest.mark.parametrize('line, value, expected', [
    (1, '2', ('line 30', 'expected 10 body info values', 'body count 2 on line 2')),     # frame 1 claims 2 bodies, holds 1
    (0, '1', ('line 30', 'unexpected data after the last frame', '1 frames declared on line 1')),   # 1 frame, holds 2
])
def test_a_count_that_lies_points_at_its_line(tmp_path, line, value, expected):
    lines = skeleton_text(2)
    lines[line] = value
    src = write_skeletons(tmp_path / 'raw', {'S001C001P001R001A001': lines})
    err = ntu_tool_error('--data-path', src, '--out-folder', str(tmp_path / 'out'), '--ignored-sample-path',
                         '--no-progress')
    one_line(err, 'S001C001P001R001A001.skeleton', *expected)


def test_all_zero_skeleton_file_is_skipped_with_a_warning_naming_it(tmp_path):
    src = write_skeletons(tmp_path / 'raw', {'S001C001P001R001A001': skeleton_text(3),
                                             'S001C001P001R001A002': skeleton_text(3, value=0)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        counts = ntu_gendata.gendata(src, str(tmp_path / 'out'), ('ntu60',), ['xsub'], progress=False)
    assert counts[('ntu60', 'xsub', 'train')] == 1
    messages = [str(w.message) for w in caught if 'no skeleton data' in str(w.message)]
    assert len(messages) == 1 and 'S001C001P001R001A002' in messages[0]
    one_line(messages[0])


def test_all_zero_skeleton_dataset_is_an_error_and_writes_nothing(tmp_path):
    src = write_skeletons(tmp_path / 'raw', {'S001C001P001R001A001': skeleton_text(2, value=0),
                                             'S001C001P001R001A002': skeleton_text(2, value=0)})
    out = tmp_path / 'out'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        err = ntu_tool_error('--data-path', src, '--out-folder', str(out), '--dataset', 'ntu60',
                             '--ignored-sample-path', '--no-progress')
    one_line(err, 'all 2 .skeleton files', src, 'no skeleton')
    assert not [p for p in out.rglob('*') if p.is_file()]


# ---------------------------------------------------------------- data and label files

def test_data_of_wrong_rank(tmp_path, capsys):
    err, d, _ = recognition_error(capsys, tmp_path, good_data()[..., 0])
    one_line(err, d, '(16, 3, 12, 20)', 'expected 5 dimensions')


def test_data_of_wrong_dtype(tmp_path, capsys):
    err, d, _ = recognition_error(capsys, tmp_path, (good_data() * 100).astype(np.int16))
    one_line(err, d, 'int16', 'expected float32')


def test_data_of_wrong_shape_for_the_model(tmp_path, capsys):
    err, d, _ = recognition_error(capsys, tmp_path, good_data()[:, :2])          # 2 channels, model has 3
    one_line(err, d, '(16, 2, 12, 20, 1)', 'C=3', 'in_channels')


def test_nan_frame(tmp_path, capsys):
    x = good_data()
    x[5, :, 3] = np.nan
    err, d, _ = recognition_error(capsys, tmp_path, x)
    one_line(err, d, 'NaN/Inf', 'sample 5')


def test_inf_frame(tmp_path, capsys):
    x = good_data()
    x[9, 1, 0, 0, 0] = np.inf
    err, d, _ = recognition_error(capsys, tmp_path, x)
    one_line(err, d, 'NaN/Inf', 'sample 9')


def test_all_zero_dataset_is_an_error(tmp_path, capsys):
    err, d, _ = recognition_error(capsys, tmp_path, np.zeros_like(good_data()))
    one_line(err, d, 'all 16 samples are all zero')


def test_a_few_all_zero_samples_give_a_notice_not_an_error(tmp_path, capsys):
    x = good_data()
    x[[3, 7]] = 0
    d, l = save(str(tmp_path / 'some_zero'), x)
    from processor.recognition import Recognition
    Recognition(['--config', eval_config(tmp_path, d, l)])
    log = open(tmp_path / 'run' / 'log.txt').read()
    notice = [line for line in log.splitlines() if 'all zero' in line]
    assert notice and '2 of 16 samples' in notice[0] and d in notice[0] and "sample 3 's3'" in notice[0]


def test_label_file_of_other_length(tmp_path, capsys):
    err, d, l = recognition_error(capsys, tmp_path, good_data(), names=['a', 'b'], labels=[0, 1])
    one_line(err, l, 'has 2 labels', d, '16 samples')


def test_label_not_below_num_class(tmp_path, capsys):
    err, _, l = recognition_error(capsys, tmp_path, good_data(), labels=[i % 5 for i in range(16)])
    one_line(err, l, 'label 4', 'num_class=4')


def test_negative_label(tmp_path, capsys):
    err, _, l = recognition_error(capsys, tmp_path, good_data(), labels=[0] * 15 + [-2])
    one_line(err, l, 'negative label -2', "'s15'")


def test_missing_data_file_names_the_tool(tmp_path):
    _, l = tiny_dataset(str(tmp_path))
    missing = str(tmp_path / 'train_position.npy')
    cfg = eval_config(tmp_path, missing, l)
    one_line(run_cli('recognition', '--config', cfg), missing, 'does not exist', 'tools/', 'gen_synthetic.py')


def test_missing_label_file_names_the_tool(tmp_path, capsys):
    d, _ = tiny_dataset(str(tmp_path))
    missing = str(tmp_path / 'train_label.pkl')
    err = run_main(capsys, 'recognition', '--config', eval_config(tmp_path, d, missing))
    one_line(err, missing, 'does not exist', 'gendata tools')


def test_label_file_that_is_not_a_pickle(tmp_path, capsys):
    d, l = tiny_dataset(str(tmp_path))
    with open(l, 'wb') as f:
        f.write(b'not a pickle at all\n\x00\x01')
    err = run_main(capsys, 'recognition', '--config', eval_config(tmp_path, d, l))
    one_line(err, l, 'cannot unpickle')


def test_joint_count_does_not_match_the_graph_layout(tmp_path, capsys):
    d, l = save(str(tmp_path / 'ntu'), good_data(V=25))                           # NTU data, nw-ucla graph
    cfg = eval_config(tmp_path, d, l)
    snapshot = seed_work_dir(str(tmp_path / 'run'))
    err = run_main(capsys, 'recognition', '--config', cfg)
    one_line(err, d, 'V=20', "'nw-ucla'", 'graph_args.layout')
    assert_preserved(str(tmp_path / 'run'), snapshot)


@pytest.mark.parametrize('model', ['net.ctrgcn.Model', 'net.agcn.Model'])
def test_more_persons_than_the_model_was_built_for(tmp_path, capsys, model):
    d, l = save(str(tmp_path / 'two'), good_data(M=2))
    args = {'in_channels': 3, 'num_class': 4, 'num_person': 1, 'graph_args': {'layout': 'nw-ucla'}}
    if model == 'net.agcn.Model':
        args['base_channel'] = 8
    cfg = eval_config(tmp_path, d, l, model=model, model_args=args)
    err = run_main(capsys, 'recognition', '--config', cfg)
    one_line(err, d, '(16, 3, 12, 20, 2)', 'M=1', 'num_person')


# ---------------------------------------------------------------- configuration

def test_unknown_feeder_argument_suggests_the_closest(tmp_path, capsys):
    cfg = yaml.safe_load(open(write_config(tmp_path)))
    cfg['train_feeder_args']['shear_amplitud'] = 0.3
    (tmp_path / 'typo.yaml').write_text(yaml.safe_dump(cfg))
    err = run_main(capsys, 'pretrain_skeletonclr', '--config', str(tmp_path / 'typo.yaml'))
    one_line(err, "'shear_amplitud'", 'train_feeder_args', 'shear_amplitude')


def test_unknown_command_line_option_suggests_the_closest(tmp_path):
    cfg = write_config(tmp_path)
    err = run_cli('pretrain_skeletonclr', '--config', cfg, '--batch_sise', '8')
    one_line(err, "'--batch_sise'", 'batch_size')
    assert not (tmp_path / 'run').exists()


def test_wrong_value_type_on_the_command_line(tmp_path, capsys):
    err = run_main(capsys, 'pretrain_skeletonclr', '--config', write_config(tmp_path), '--num_epoch', 'ten')
    one_line(err, '--num_epoch', "'ten'")


def test_fractional_value_for_an_integer_key(tmp_path, capsys):
    cfg = write_config(tmp_path, batch_size=8.5)
    one_line(run_main(capsys, 'pretrain_skeletonclr', '--config', cfg), "'batch_size'", cfg, '8.5',
             'must be an integer')


def test_mapping_key_given_a_scalar(tmp_path, capsys):
    cfg = write_config(tmp_path, model_args='hidden_channels=4')
    one_line(run_main(capsys, 'pretrain_skeletonclr', '--config', cfg), "'model_args'", 'must be a mapping')


def test_queue_size_not_a_multiple_of_the_batch_size(tmp_path):
    cfg = write_config(tmp_path, batch_size=6)
    one_line(run_cli('pretrain_skeletonclr', '--config', cfg), 'queue_size=16', 'batch_size=6')


def test_batch_larger_than_the_dataset(tmp_path, capsys):
    cfg = write_config(tmp_path, batch_size=32, model_args=dict(
        yaml.safe_load(open(write_config(tmp_path)))['model_args'], queue_size=64))
    snapshot = seed_work_dir(str(tmp_path / 'run'))
    err = run_main(capsys, 'pretrain_skeletonclr', '--config', cfg)
    one_line(err, 'batch_size=32', '16 training samples', str(tmp_path / 'data.npy'))
    assert_preserved(str(tmp_path / 'run'), snapshot)


@pytest.mark.parametrize('percent', [0, 1.5])
def test_label_percent_outside_zero_one(tmp_path, capsys, percent):
    d, l = tiny_dataset(str(tmp_path))
    cfg = yaml.safe_load(open(eval_config(tmp_path, d, l)))
    cfg['train_feeder'] = 'feeder.ntu_feeder.Feeder_semi'
    cfg['train_feeder_args']['label_percent'] = percent
    (tmp_path / 'semi.yaml').write_text(yaml.safe_dump(cfg))
    err = run_main(capsys, 'finetune_evaluation', '--config', str(tmp_path / 'semi.yaml'))
    one_line(err, 'label_percent', f'got {percent}', '(0, 1]')


def test_unknown_view(tmp_path):
    err = run_cli('pretrain_skeletonclr', '--config', write_config(tmp_path), '--view', 'velocity')
    one_line(err, "'velocity'", 'joint, bone, motion')


def test_config_that_is_not_valid_yaml(tmp_path):
    path = tmp_path / 'broken.yaml'
    path.write_text('model: net.st_gcn.Model\nmodel_args: {in_channels: 3\nbatch_size: 8\n')
    one_line(run_cli('recognition', '--config', str(path)), str(path), 'not valid YAML')


def test_config_that_is_not_a_mapping(tmp_path, capsys):
    path = tmp_path / 'list.yaml'
    path.write_text('- model\n- batch_size\n')
    one_line(run_main(capsys, 'recognition', '--config', str(path)), str(path), 'must be a mapping')


def test_config_path_that_does_not_exist(tmp_path, capsys):
    path = str(tmp_path / 'nothing.yaml')
    one_line(run_main(capsys, 'pretrain_aimclr', '--config', path), path, 'does not exist')


def test_unknown_processor():
    one_line(run_cli('pretrain_simclr', '--config', 'x.yaml'), "'pretrain_simclr'", 'pretrain_skeletonclr')


# ---------------------------------------------------------------- checkpoints

def linear_setup(tmp_path):
    d, l = tiny_dataset(str(tmp_path))
    return eval_config(tmp_path, d, l)


def weights_error(capsys, tmp_path, weights):
    cfg = linear_setup(tmp_path)
    snapshot = seed_work_dir(str(tmp_path / 'run'))
    err = run_main(capsys, 'linear_evaluation', '--config', cfg, '--weights', weights)
    assert_preserved(str(tmp_path / 'run'), snapshot)
    return err


def encoder_state(**changes):
    from net.st_gcn import Model
    return Model(**dict(ENCODER_ARGS, **changes)).state_dict()


def test_checkpoint_of_another_method_lists_the_keys(tmp_path, capsys):
    path = str(tmp_path / 'hcn.pt')
    torch.save({'conv1.weight': torch.zeros(3), 'fc7.bias': torch.zeros(2)}, path)
    err = weights_error(capsys, tmp_path, path)
    one_line(err, path, 'another method', 'conv1.weight', 'missing model keys', 'data_bn')


def test_checkpoint_of_another_shape_lists_the_keys(tmp_path, capsys):
    path = str(tmp_path / 'wide.pt')
    torch.save(encoder_state(hidden_channels=6), path)
    one_line(weights_error(capsys, tmp_path, path), path, 'shape mismatch', 'st_gcn_networks.0', '(6,')


def test_checkpoint_with_missing_and_unexpected_keys_lists_them_in_the_log(tmp_path, capsys):
    state = encoder_state()
    state.pop('fc.bias')
    state['projector.weight'] = torch.zeros(2)
    path = str(tmp_path / 'partial.pt')
    torch.save(state, path)
    from processor.finetune_evaluation import FinetuneEvaluation
    FinetuneEvaluation(['--config', linear_setup(tmp_path), '--weights', path])
    log = open(tmp_path / 'run' / 'log.txt').read()
    assert 'Missing keys (1, left at their initial values): fc.bias' in log
    assert 'Unexpected keys (1, not used): projector.weight' in log


def test_checkpoint_that_is_a_pickled_list(tmp_path, capsys):
    path = str(tmp_path / 'list.pt')
    torch.save([torch.zeros(2), torch.ones(2)], path)
    one_line(weights_error(capsys, tmp_path, path), path, 'not a state dict of tensors', 'list')


def test_checkpoint_that_is_a_plain_pickle(tmp_path, capsys):
    path = str(tmp_path / 'plain.pkl')
    with open(path, 'wb') as f:
        pickle.dump(['conv', 1, 2], f)
    one_line(weights_error(capsys, tmp_path, path), path, 'cannot read weights file')


def test_checkpoint_of_random_bytes(tmp_path, capsys):
    path = str(tmp_path / 'noise.pt')
    with open(path, 'wb') as f:
        f.write(np.random.RandomState(0).bytes(4096))
    one_line(weights_error(capsys, tmp_path, path), path, 'cannot read weights file')


def test_truncated_checkpoint(tmp_path, capsys):
    path = str(tmp_path / 'cut.pt')
    torch.save(encoder_state(), path)
    raw = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(raw[:len(raw) // 2])
    one_line(weights_error(capsys, tmp_path, path), path, 'cannot read weights file')


def test_missing_checkpoint(tmp_path, capsys):
    path = str(tmp_path / 'epoch300_model.pt')
    one_line(weights_error(capsys, tmp_path, path), path, 'does not exist')


# ---------------------------------------------------------------- work directories and devices

def test_finished_run_is_refused_and_left_untouched(tmp_path):
    cfg = write_config(tmp_path)
    snapshot = seed_work_dir(str(tmp_path / 'run'), finished=True)
    err = run_cli('pretrain_skeletonclr', '--config', cfg)
    one_line(err, str(tmp_path / 'run'), 'already holds a run', '--resume')
    assert_preserved(str(tmp_path / 'run'), snapshot, strict=True)
    assert sorted(os.listdir(tmp_path / 'run')) == sorted(snapshot)


def test_resume_without_a_latest_checkpoint(tmp_path, capsys):
    cfg = write_config(tmp_path)
    snapshot = seed_work_dir(str(tmp_path / 'run'))
    err = run_main(capsys, 'pretrain_skeletonclr', '--config', cfg, '--resume', 'true')
    one_line(err, os.path.join(str(tmp_path / 'run'), 'latest.pt'), 'does not exist')
    assert_preserved(str(tmp_path / 'run'), snapshot)


@pytest.mark.skipif(os.geteuid() == 0, reason='root can write into a read-only folder')
def test_unwritable_work_dir(tmp_path, capsys):
    parent = tmp_path / 'locked'
    parent.mkdir()
    parent.chmod(0o500)
    try:
        work_dir = str(parent / 'run')
        err = run_main(capsys, 'pretrain_skeletonclr', '--config', write_config(tmp_path), '--work_dir', work_dir)
        one_line(err, work_dir, 'not writable')
    finally:
        parent.chmod(0o700)


def test_work_dir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / 'results.txt'
    path.write_text('keep me')
    err = run_main(capsys, 'pretrain_skeletonclr', '--config', write_config(tmp_path), '--work_dir', str(path))
    one_line(err, str(path), 'not writable')
    assert path.read_text() == 'keep me'


def test_gpu_device_without_a_gpu(tmp_path, capsys, monkeypatch):
    """``device: [3]`` on a machine without GPU falls back to the CPU with a notice naming the device;
    with GPUs but fewer than 4 it is an error naming the device."""
    cfg = write_config(tmp_path, device=[3])
    from processor.pretrain import PretrainProcessor
    if torch.cuda.is_available() and torch.cuda.device_count() <= 3:
        one_line(run_main(capsys, 'pretrain_skeletonclr', '--config', cfg), 'device 3', 'GPU')
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    p = PretrainProcessor(['--config', cfg])
    assert p.dev.type == 'cpu'
    log = open(tmp_path / 'run' / 'log.txt').read()
    assert 'Notice: device [3] requested but no GPU found: running on the CPU (' in log


# ---------------------------------------------------------------- MICA text features

def mica_config(tmp_path, **text):
    cfg = yaml.safe_load(open(write_config(tmp_path)))
    cfg['model'] = 'net.mica.MICA'
    cfg['model_args'].update(dict(num_frames=12, shuffle_bn_groups=1, harmonizer_heads=2), **text)
    path = tmp_path / 'mica.yaml'
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_missing_text_feature_file(tmp_path, capsys):
    missing = str(tmp_path / 'ucla.minilm.npz')
    err = run_main(capsys, 'pretrain_mica', '--config', mica_config(tmp_path, text_features=missing))
    one_line(err, missing, 'does not exist', 'tools/gen_text_features.py')


def test_text_features_made_by_another_encoder(tmp_path, capsys):
    err = run_main(capsys, 'pretrain_mica', '--config',
                   mica_config(tmp_path, text_features=UCLA_FEATURES, text_encoder='clip'))
    one_line(err, UCLA_FEATURES, "encoder 'minilm'", "expected 'clip'", 'gen_text_features.py --encoder clip')


def test_user_error_is_a_value_error():
    assert issubclass(UserError, ValueError)


# ---------------------------------------------------------------- issue 14: values, enums, messages

def pretrain_error(capsys, tmp_path, *argv, **overrides):
    """A SkeletonCLR pretraining error on the tiny set, with the work dir's earlier files intact."""
    cfg = write_config(tmp_path, **overrides)
    snapshot = seed_work_dir(str(tmp_path / 'run'))
    err = run_main(capsys, 'pretrain_skeletonclr', '--config', cfg, *argv)
    assert_preserved(str(tmp_path / 'run'), snapshot, strict=True)
    return err, cfg


def model_args(tmp_path, **changes):
    return dict(yaml.safe_load(open(write_config(tmp_path)))['model_args'], **changes)


@pytest.mark.parametrize('key, value, choices', [('optimizer', 'sgd', 'SGD, Adam, AdamW'),
                                                 ('amp', 'BF16', 'none, bf16, fp16'),
                                                 ('phase', 'Train', 'train, test'),
                                                 ('compile', 'defualt', 'default, reduce-overhead')])
def test_enum_values_from_yaml_are_checked_against_their_choices(tmp_path, capsys, key, value, choices):
    err, cfg = pretrain_error(capsys, tmp_path, **{key: value})
    one_line(err, f"'{key}'", cfg, repr(value), choices)


def test_enum_values_from_the_command_line_are_checked(tmp_path, capsys):
    err, _ = pretrain_error(capsys, tmp_path, '--optimizer', 'sgd')
    one_line(err, '--optimizer', "'sgd'", 'SGD')


@pytest.mark.parametrize('changes, needles', [
    (dict(queue_size=0), ['model_args.queue_size', 'positive integer', '0']),
    (dict(hidden_channels=0), ['model_args.hidden_channels', 'positive integer', '0']),
    (dict(hidden_channels='16'), ['model_args.hidden_channels', "'16'"]),
    (dict(momentum=1.5), ['model_args.momentum', '[0, 1)', '1.5']),
    (dict(graph_args=['nw-ucla']), ['model_args.graph_args', 'mapping', "['nw-ucla']"]),
    (dict(graph_args={'layout': {'num_node': '3', 'edges': [[0, 1]], 'center': 0}}), ['num_node', "'3'", 'integer']),
    (dict(graph_args={'layout': {'num_node': 3, 'edges': [[0, 1, 2]], 'center': 0}}), ['edge', 'pair', '[0, 1, 2]']),
    (dict(graph_args={'layout': {'num_node': 3, 'edges': [[0, 1.5]], 'center': 0}}), ['edges', '1.5', 'integer']),
])
def test_model_arguments_are_checked_with_one_line(tmp_path, capsys, changes, needles):
    err, _ = pretrain_error(capsys, tmp_path, model_args=model_args(tmp_path, **changes))
    one_line(err, *needles)


@pytest.mark.parametrize('key, value, needles', [
    ('base_lr', -0.1, ["'base_lr'", '-0.1', '>= 0']),
    ('num_epoch', 0, ["'num_epoch'", 'positive', '0']),
    ('num_epoch', -3, ["'num_epoch'", '-3']),
    ('momentum', 1.5, ["'momentum'", '[0, 1)', '1.5']),
])
def test_out_of_range_values_name_the_key(tmp_path, capsys, key, value, needles):
    err, _ = pretrain_error(capsys, tmp_path, **{key: value})
    one_line(err, *needles)


@pytest.mark.parametrize('text, needles', [
    ('hidden_channels', ['--model_args', "'hidden_channels'", 'key=value']),
    ('graph_args.layout=[nw', ['--model_args', "'graph_args.layout'", "'[nw'"]),
])
def test_malformed_model_args_on_the_command_line(tmp_path, capsys, text, needles):
    err, _ = pretrain_error(capsys, tmp_path, '--model_args', text)
    one_line(err, *needles)


def test_yaml_with_a_tab_names_line_and_column(tmp_path):
    path = tmp_path / 'tab.yaml'
    path.write_text('model: net.st_gcn.Model\nmodel_args:\n\thidden_channels: 4\n')
    one_line(run_cli('recognition', '--config', str(path)), str(path), 'line 3, column 1', 'tab')


def test_duplicate_yaml_keys_name_the_key_and_both_lines(tmp_path, capsys):
    path = tmp_path / 'dup.yaml'
    path.write_text('model: net.st_gcn.Model\nbatch_size: 8\nnum_epoch: 2\nbatch_size: 16\n')
    one_line(run_main(capsys, 'recognition', '--config', str(path)), str(path), "duplicate key 'batch_size'",
             'line 2', 'line 4')


def test_nested_duplicate_yaml_keys_are_an_error(tmp_path, capsys):
    path = tmp_path / 'dup.yaml'
    path.write_text('model: net.st_gcn.Model\nmodel_args:\n  hidden_channels: 4\n  hidden_channels: 8\n')
    one_line(run_main(capsys, 'recognition', '--config', str(path)), "duplicate key 'hidden_channels'",
             'line 3', 'line 4')


def test_labels_given_as_lists(tmp_path, capsys):
    err, _, l = recognition_error(capsys, tmp_path, good_data(), labels=[[i % 4] for i in range(16)])
    one_line(err, l, 'flat list of class ids', '(16, 1)')


def test_duplicate_sample_names(tmp_path, capsys):
    names = [f's{i % 8}' for i in range(16)]
    err, _, l = recognition_error(capsys, tmp_path, good_data(), names=names)
    one_line(err, l, "sample name 's0' appears twice", 'samples 0 and 8')


def test_data_that_overflows_float32_is_named_at_load(tmp_path, capsys):
    err, d, _ = recognition_error(capsys, tmp_path, good_data() * np.float32(1e30))
    one_line(err, d, 'overflow', 'Inf', 'Rescale')


def test_truncated_text_feature_file(tmp_path, capsys):
    raw = open(UCLA_FEATURES, 'rb').read()
    cut = tmp_path / 'cut.npz'
    cut.write_bytes(raw[:len(raw) // 2])
    err = run_main(capsys, 'pretrain_mica', '--config', mica_config(tmp_path, text_features=str(cut)))
    one_line(err, str(cut), 'cannot read text feature file', 'gen_text_features.py')
