"""Does pretraining help? The untrained baseline takes its pretraining's init (``--init_of``, plan rows'
``init``), every evaluation of pretrained weights ends with the verdict (processor/verdict.py), and
training subsets come from ``sample_list`` (tools/subset_list.py)."""
import json
import os
import pickle
import statistics

import numpy as np
import pytest
import torch

from conftest import ROOT, tiny_dataset, write_config
from feeder.ntu_feeder import Feeder_single
from processor.knn_evaluation import KNNEvaluation
from processor.linear_evaluation import LinearEvaluation
from processor.pretrain import PretrainProcessor
from tools.floor import ridge_floor
from tools.reproduction.plan import parse_plan
from tools.reproduction.run import stages
from torchlight.io import UserError

QUIET = ['--num_worker', '0', '--progress_bar', 'false', '--print_log', 'false']
MODEL = ('base_encoder=net.st_gcn.Model,pretrain=false,in_channels=3,hidden_channels=4,hidden_dim=8,num_class=4,'
         'dropout=0.5,graph_args={layout: nw-ucla, strategy: spatial},edge_importance_weighting=true')


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pretrained(tmp_path, **overrides):
    """A 1-epoch SkeletonCLR run (its config.yaml beside the checkpoint): -> the checkpoint path."""
    cfg = write_config(tmp_path, **overrides)
    PretrainProcessor(['--config', cfg, '--work_dir', str(tmp_path / 'pretext'), *QUIET]).start()
    return str(tmp_path / 'pretext' / 'epoch1_model.pt')


def evaluation(kind, tmp_path, name, *extra):
    feeder = (f"data_path={tmp_path / 'data.npy'},label_path={tmp_path / 'label.pkl'},"
              'shear_amplitude=-1,temperal_padding_ratio=-1')
    args = ['--work_dir', str(tmp_path / name), '--model', 'net.skeletonclr.SkeletonCLR', '--model_args', MODEL,
            '--train_feeder_args', feeder, '--test_feeder_args', feeder, '--batch_size', '8',
            '--test_batch_size', '8', '--verdict_cache', str(tmp_path / 'cache'), *QUIET, *extra]
    if kind == 'linear':
        p = LinearEvaluation(args + ['--num_epoch', '3', '--feature_norm', 'standardize', '--base_lr', '0.1'])
    else:
        p = KNNEvaluation(args + ['--knn_k', '3'])
    p.start()
    return p


def encoder_state(p):
    return {k: v.clone() for k, v in p.encoder.state_dict().items() if not k.startswith('fc.')}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_untrained_encoder_takes_the_init_of_its_pretraining(tmp_path):
    """``--weights random --init_of <run>`` is the encoder the run started from (its weights_init: PyTorch's
    here), not the evaluation config's family init; a command-line ``--weights_init`` wins and is said."""
    weights = pretrained(tmp_path)                 # write_config: weights_init false
    run = os.path.dirname(weights)
    like = evaluation('knn', tmp_path, 'like', '--weights', 'random', '--init_of', run, '--seed', '3')
    pytorch = evaluation('knn', tmp_path, 'pytorch', '--weights', 'random', '--weights_init', 'false', '--seed', '3')
    family = evaluation('knn', tmp_path, 'family', '--weights', 'random', '--seed', '3')
    assert same(encoder_state(like), encoder_state(pytorch)) and not same(encoder_state(like), encoder_state(family))
    assert like.untrained_init['weights_init'] is False and like.untrained_init['pretraining_init'] is False
    forced = evaluation('knn', tmp_path, 'forced', '--weights', 'random', '--init_of', weights, '--weights_init', 'true')
    assert forced.arg.weights_init is True and 'NOT the init its pretraining started from' in forced.untrained_init['note']
    with pytest.raises(UserError, match='init_of .*no pretraining config found'):
        evaluation('knn', tmp_path, 'none', '--weights', 'random', '--init_of', str(tmp_path / 'nowhere'))


def test_every_evaluation_ends_with_the_verdict_and_caches_the_untrained_run(tmp_path):
    """result.json's verdict holds the same-probe, same-seed untrained top-1 with the pretraining's init and
    the ridge floor of the probe's arrays; a second evaluation reuses the cached untrained run."""
    weights = pretrained(tmp_path)
    learned = evaluation('linear', tmp_path, 'linear', '--weights', weights, '--seed', '2')
    verdict = json.loads((tmp_path / 'linear' / 'result.json').read_text())['verdict']
    alone = evaluation('linear', tmp_path, 'alone', '--weights', 'random', '--init_of', weights, '--seed', '2',
                       '--verdict', 'false')
    assert verdict['untrained_top1'] == alone.report.result()['top1_last']
    assert verdict['untrained_init'] == "PyTorch's init"
    assert verdict['learned_top1'] == learned.report.result()['top1_last']
    assert verdict['gain_over_untrained'] == round(verdict['learned_top1'] - verdict['untrained_top1'], 2)
    x = np.load(tmp_path / 'data.npy').astype(np.float64)
    y = np.asarray(pickle.load(open(tmp_path / 'label.pkl', 'rb'))[1])
    assert verdict['floor_top1'] == round(ridge_floor(x, y, x, y)[0], 4)
    assert verdict['line'].startswith(f"Verdict: top-1 {verdict['learned_top1']:.1f}%")
    cached = list((tmp_path / 'cache' / 'untrained').iterdir())
    evaluation('linear', tmp_path, 'again', '--weights', weights, '--seed', '2')
    assert list((tmp_path / 'cache' / 'untrained').iterdir()) == cached
    knn = json.loads((evaluation('knn', tmp_path, 'knn', '--weights', weights) and tmp_path / 'knn' / 'result.json')
                     .read_text())
    assert knn['verdict']['learned_top1'] == knn['top1_last'] and len(list((tmp_path / 'cache' / 'untrained').iterdir())) == 2


def test_sample_list_restricts_the_split(tmp_path):
    data, label = tiny_dataset(str(tmp_path), n=12)
    listed = tmp_path / 'subset.txt'
    listed.write_text('# a comment\ns3\ns0  # trailing\n\ns7\n')
    feeder = Feeder_single(data, label, sample_list=str(listed))
    assert feeder.index.tolist() == [0, 3, 7] and len(feeder) == 3
    listed.write_text('s1\ns99\n')
    with pytest.raises(UserError, match=r"subset.txt': 1 name\(s\) are not in the label file, first 's99'"):
        Feeder_single(data, label, sample_list=str(listed))
    listed.write_text('s1\ns1\n')
    with pytest.raises(UserError, match='repeats a name'):
        Feeder_single(data, label, sample_list=str(listed))


def test_subset_list_tool_is_class_balanced(tmp_path):
    from tools.subset_list import main
    _, label = tiny_dataset(str(tmp_path), n=20, num_class=4)
    out = tmp_path / 'list.txt'
    main([label, '--per-class', '2', '--seed', '1', '--out', str(out)])
    names = [n for n in out.read_text().splitlines() if not n.startswith('#')]
    assert len(names) == 8 and sorted(int(n[1:]) % 4 for n in names) == [0, 0, 1, 1, 2, 2, 3, 3]


def plan(**untrained):
    rows = {'A': {'processor': 'pretrain_skeletonclr', 'config': 'config/ucla/pretrain_skeletonclr.yaml',
                  'evaluations': {'linear': 'config/ucla/linear_eval_skeletonclr.yaml'}},
            'U': dict({'processor': 'untrained', 'evaluations': {'linear': 'config/ucla/linear_eval_skeletonclr.yaml'}},
                      **untrained)}
    return parse_plan({'rows': rows}, 'plan.yaml')


def test_plan_untrained_rows_take_the_init_of_the_pretraining_they_stand_for():
    row = plan().row('U')
    assert row['init'] == 'A' and row['weights_init'] is False
    argv = stages(plan(), row, 1)[0][2]
    assert argv[argv.index('--init_of') + 1] == os.path.join(ROOT, 'config/ucla/pretrain_skeletonclr.yaml')
    family = plan(init='family')
    argv = stages(family, family.row('U'), 1)[0][2]
    assert argv[argv.index('--weights_init') + 1] == 'true' and '--init_of' not in argv
    with pytest.raises(UserError, match="rows.U.init: 'B' is not a pretraining row"):
        plan(init='B')


def test_a_learned_row_pairs_with_the_untrained_row_of_its_own_probe():
    """Two untrained rows of the same probe config and init but other probe clips (a ladder's rungs): each
    learned row pairs with the one whose probe overrides are its own, not the first of the config."""
    from tools.reproduction.table import untrained_rows
    rows = {}
    for n in (100, 300):
        clips = f'--train_feeder_args sample_list=config/ucla/subsets/xview_n{n}.txt'
        probe = {'eval_overrides': clips, 'evaluations': {'linear': 'config/ucla/linear_eval_skeletonclr.yaml'}}
        rows[f'A, {n} clips'] = dict(probe, processor='pretrain_skeletonclr',
                                     config='config/ucla/pretrain_skeletonclr.yaml')
        rows[f'U, {n} clips'] = dict(probe, processor='untrained')
    assert untrained_rows(parse_plan({'rows': rows}, 'plan.yaml')) == {'A, 100 clips': 'U, 100 clips',
                                                                       'A, 300 clips': 'U, 300 clips'}


def test_pretraining_says_at_start_up_what_was_measured_at_its_size(tmp_path):
    """processor/small_data.py's measured line: the subset nearest the set's size, the method's paired gain over
    its untrained init from the committed result files, the length nearest the run's first; a loss is said
    plainly with what to do."""
    import shutil
    from processor.small_data import LADDER_PLAN, MEASURED_PLANS, measured_line, measurements
    (tmp_path / 'config' / 'reproduce').mkdir(parents=True)
    shutil.copytree(os.path.join(ROOT, 'config/ucla/subsets'), tmp_path / 'config/ucla/subsets')
    shutil.copy(os.path.join(ROOT, LADDER_PLAN), tmp_path / LADDER_PLAN)
    results = tmp_path / 'results' / 'ucla_ladder'
    results.mkdir(parents=True)
    learned = json.load(open(os.path.join(ROOT, 'results/ucla_ladder/SkeletonCLR_300_clips__seed1.json')))
    untrained = json.load(open(os.path.join(ROOT, 'results/ucla_ladder/untrained_ST-GCN_300_clips__seed1.json')))
    assert measured_line(280, 'pretrain_aimclr', root=str(tmp_path)).startswith('measured: AimCLR was not measured yet')
    for gain, words in ((0.05, '30 epochs +5.0 points against its untrained init (1 of 1 runs above; '
                               f"{LADDER_PLAN}) (not measured at this run's 100 epochs); on NW-UCLA only"),
                        (-0.08, '-8.0 points against its untrained init (0 of 1 runs above; ' + LADDER_PLAN + ')'
                                " (not measured at this run's 100 epochs); at this size pretraining with it did NOT "
                                'beat the encoder it starts from')):
        learned['final']['linear_top1'] = untrained['final']['linear_top1'] + gain
        (results / 'SkeletonCLR_300_clips__seed1.json').write_text(json.dumps(learned))
        (results / 'untrained_ST-GCN_300_clips__seed1.json').write_text(json.dumps(untrained))
        line = measured_line(280, 'pretrain_skeletonclr', root=str(tmp_path))
        assert 'NW-UCLA subset of 300 clips' in line and words in line, line
    # the schedule plan measures 100 epochs on the same subset: the run's length comes first, the other after
    schedule = 'config/reproduce/ucla_schedule.yaml'
    assert schedule in MEASURED_PLANS and {(100, 30), (300, 30), (300, 100), (1020, 30), (1020, 100)} <= set(
        measurements('pretrain_skeletonclr'))     # the ucla plan's rows read all 1,020 clips
    shutil.copy(os.path.join(ROOT, schedule), tmp_path / schedule)
    (tmp_path / 'results' / 'ucla_schedule').mkdir()
    for name in ('100_epochs__seed1.json', 'untrained_ST-GCN__seed1.json'):
        shutil.copy(os.path.join(ROOT, 'results/ucla_schedule', name), tmp_path / 'results/ucla_schedule' / name)
    longer = json.load(open(os.path.join(ROOT, 'results/ucla_schedule/100_epochs__seed1.json')))
    base = json.load(open(os.path.join(ROOT, 'results/ucla_schedule/untrained_ST-GCN__seed1.json')))
    gain = 100 * (longer['final']['linear_top1'] - base['final']['linear_top1'])
    line = measured_line(280, 'pretrain_skeletonclr', root=str(tmp_path))
    assert f'100 epochs {gain:+.1f} points against its untrained init (1 of 1 runs above; {schedule}); 30 epochs ' \
           f'-8.0 (0 of 1; {LADDER_PLAN}); on NW-UCLA only' in line, line
    line = measured_line(280, 'pretrain_skeletonclr', num_epoch=30, root=str(tmp_path))
    assert f'30 epochs -8.0 points against its untrained init (0 of 1 runs above; {LADDER_PLAN}); 100 epochs ' \
           f'{gain:+.1f} (1 of 1; {schedule}); at this size pretraining with it did NOT' in line, line
    # runs of the same method, size and length in two plans are pooled
    shutil.copy(os.path.join(ROOT, 'results/ucla_schedule/30_epochs__seed1.json'), tmp_path / 'results/ucla_schedule')
    again = json.load(open(os.path.join(ROOT, 'results/ucla_schedule/30_epochs__seed1.json')))
    pooled = [-8.0, 100 * (again['final']['linear_top1'] - base['final']['linear_top1'])]
    line = measured_line(280, 'pretrain_skeletonclr', num_epoch=30, root=str(tmp_path))
    assert f'30 epochs {statistics.mean(pooled):+.1f} ± {statistics.stdev(pooled):.1f} points against its untrained ' \
           f'init ({sum(v > 0 for v in pooled)} of 2 runs above; {LADDER_PLAN}, {schedule}); 100 epochs' in line, line
    assert measured_line(5000, 'pretrain_skeletonclr', root=str(tmp_path)) is None
