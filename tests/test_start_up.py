"""What a run says at start-up, before it trains: the size advice for its training set, printed before any
setting is checked against the set and followed as printed (the walkthrough of docs/DATA.md, "Your own
dataset", on 100 and 60 clips), and the use of labels by a pretraining that reads them (log, config.yaml,
label_use.json)."""
import json
import os
import re
import shlex

import pytest

import main as main_module
from conftest import ROOT, one_line
from tools import gen_synthetic


def run(capsys, argv):
    """``main.py argv`` in-process -> (exit status, stdout, stderr)."""
    capsys.readouterr()
    rc = main_module.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def advice_options(out):
    """The options of the 'to follow it:' line (the run's own advice), as a list."""
    found = re.search(r'differs from the size advice in .*; to follow it: (.*)', out)
    return shlex.split(found.group(1)) if found else []


@pytest.mark.parametrize('clips', [100, 60])
def test_the_walkthrough_on_a_small_set_follows_its_own_advice(clips, tmp_path, monkeypatch, capsys):
    """The shipped small-data configs with the data paths changed stop on a set of 100 or 60 clips (batch
    128); the advice is printed before that error, which names the advised batch; the options printed are
    taken as they are, and then pretraining, the probe (--weights: the pretraining's work_dir) and the
    untrained row run, each told nothing more but the test's 1 epoch."""
    monkeypatch.chdir(tmp_path)
    gen_synthetic.main(['--out-folder', 'data', '--num-train-per-class', str(clips // 10), '--num-val-per-class', '3',
                        '--num-person', '1'])
    feed = 'data_path=data/{0}_position.npy,label_path=data/{0}_label.pkl'
    model = '--model_args', 'num_class=10,graph_args.layout=ntu-rgb+d'
    pretrain = ['pretrain_skeletonclr', '--config', os.path.join(ROOT, 'config/ucla/pretrain_skeletonclr.yaml'),
                '--work_dir', 'pretext', '--train_feeder_args', feed.format('train'), *model, '--progress_bar', 'false']
    rc, out, err = run(capsys, pretrain)
    batch = {100: 16, 60: 8}[clips]
    assert rc == 2
    one_line(err, f'batch_size=128 is larger than the {clips} training samples', f'give --batch_size {batch}')
    advice = re.search(r'Notice: size advice for .*', out).group(0)
    one_line(advice, f'{clips} training samples (pretraining', f'batch_size {batch} (', 'model_args.shuffle_bn_groups 2',
             f'base_lr {0.1 * batch / 128:g}', 'num_epoch 100', f"the probes' (linear_evaluation, finetune_evaluation) "
             f'batch_size {batch}')
    follow = advice_options(out)
    assert follow[:2] == ['--batch_size', str(batch)]
    rc, out, err = run(capsys, pretrain + follow + ['--num_epoch', '1'])
    assert rc == 0, err
    assert advice_options(out) == ['--num_epoch', '100']                 # only the test's 1 epoch differs
    assert os.path.exists('pretext/epoch1_model.pt')
    probe = ['linear_evaluation', '--config', os.path.join(ROOT, 'config/ucla/linear_eval_skeletonclr.yaml'),
             '--train_feeder_args', feed.format('train'), '--test_feeder_args', feed.format('val'), *model,
             '--progress_bar', 'false', '--num_epoch', '2']
    rc, out, err = run(capsys, probe + ['--work_dir', 'probe0', '--weights', 'pretext'])
    assert rc == 2 and f'give --batch_size {batch}' in err
    one_line(re.search(r'Notice: size advice for .*', out).group(0), f'{clips} training samples (classifier',
             f'batch_size {batch}', 'lr unchanged')
    follow = advice_options(out)
    assert follow == ['--batch_size', str(batch)]
    for work_dir, weights in (('probe', ['--weights', 'pretext']),
                              ('untrained', ['--weights', 'random', '--weights_init', 'false'])):
        rc, out, err = run(capsys, probe + follow + ['--work_dir', work_dir] + weights)
        assert rc == 0, err
        assert advice_options(out) == [] and 'Result: top-1' in out


def test_a_pretraining_that_reads_labels_says_so_first(tmp_path, capsys):
    """MICA in the paper's mode (fm_target: text) reads the training labels: its log says so right after
    the device line, before the data; config.yaml's head and label_use.json too; the label-free mode
    (fm_target=teacher) says nothing of the kind."""
    data = tmp_path / 'data'
    gen_synthetic.main(['--out-folder', str(data), '--num-train-per-class', '2', '--num-val-per-class', '1'])
    argv = ['pretrain_mica', '--config', os.path.join(ROOT, 'config/demo/pretrain_mica.yaml'),
            '--train_feeder_args', f'data_path={data}/train_position.npy,label_path={data}/train_label.pkl',
            '--num_epoch', '1', '--progress_bar', 'false', '--batch_size', '4', '--base_lr', '0.0125',
            '--model_args', 'queue_size=12,shuffle_bn_groups=2,hidden_channels=8']
    rc, out, err = run(capsys, argv + ['--work_dir', str(tmp_path / 'paper')])
    assert rc == 0, err
    lines = (tmp_path / 'paper' / 'log.txt').read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if 'LABELS:' in line)
    assert first <= 1 and first < next(i for i, line in enumerate(lines) if 'Skeleton:' in line)
    one_line(lines[first], 'this pretraining reads the training labels', 'model_args.fm_target: text',
             'not self-supervised', '--model_args fm_target=teacher')
    head = (tmp_path / 'paper' / 'config.yaml').read_text().split('\n\n')[0]
    assert '# LABELS: this pretraining reads the training labels' in head
    record = json.loads((tmp_path / 'paper' / 'label_use.json').read_text())
    assert record['pretraining_reads_labels'] is True and 'fm_target' in record['why']
    rc, out, err = run(capsys, argv[:-1] + [argv[-1] + ',fm_target=teacher', '--work_dir', str(tmp_path / 'free')])
    assert rc == 0, err
    assert 'LABELS' not in out and not (tmp_path / 'free' / 'label_use.json').exists()
    assert 'LABELS' not in (tmp_path / 'free' / 'config.yaml').read_text()


def test_small_data_evaluations_read_where_the_pretraining_ends(tmp_path):
    """Every evaluation config of config/ucla/ and config/demo/ names the work_dir of a pretraining config
    beside it, not an epoch file, so a schedule of any length (the advice's and the recipe's 100 epochs, the
    demo's 10) is read at its last checkpoint; a folder without checkpoints is a one-line error."""
    import glob
    import yaml
    from processor.checkpoint import resolve_weights
    from torchlight.io import UserError
    for folder in ('config/ucla', 'config/demo'):
        configs = {path: yaml.safe_load(open(path)) for path in glob.glob(os.path.join(ROOT, folder, '*.yaml'))}
        pretext = {c.get('work_dir') for path, c in configs.items() if os.path.basename(path).startswith('pretrain')}
        for path, config in configs.items():
            if config.get('weights'):
                assert config['weights'] in pretext, (path, config['weights'])
    for epoch in (5, 30, 100):
        (tmp_path / f'epoch{epoch}_model.pt').write_bytes(b'')
    (tmp_path / 'best_model.pt').write_bytes(b'')
    assert resolve_weights(str(tmp_path)) == str(tmp_path / 'epoch100_model.pt')
    assert resolve_weights('some/file.pt') == 'some/file.pt'
    (tmp_path / 'empty').mkdir()
    with pytest.raises(UserError, match='a folder without epoch<N>_model.pt files'):
        resolve_weights(str(tmp_path / 'empty'))
