"""tools/reproduce.py (plans, skip and resume, aggregation, curves, a tiny end-to-end run of the demo
plan) and the kNN monitor of pretraining (``knn_interval``, ``metrics.jsonl``)."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import ROOT, write_config
from processor.knn_evaluation import KNNEvaluation
from processor.metrics import read_metrics
from processor.pretrain import PretrainProcessor
from tools import reproduce as cli
from tools import reproduction as reproduce
from tools.reproduction import adopt as adoption
from tools.reproduction import run as reproduce_run
from tools.reproduction.table import untrained_rows
from torchlight.io import UserError

QUIET = ['--num_worker', '0', '--progress_bar', 'false', '--print_log', 'false']


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One thread for these tests and their subprocesses (on a shared 2-core machine, 2 threads each
    are several times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------
# the kNN monitor and metrics.jsonl

def pretrain(tmp_path, work_dir, epochs, *extra):
    cfg = write_config(tmp_path)
    test = (f"data_path={tmp_path / 'data.npy'},label_path={tmp_path / 'label.pkl'},"
            'shear_amplitude=-1,temperal_padding_ratio=-1')
    p = PretrainProcessor(['--config', cfg, '--work_dir', str(tmp_path / work_dir), '--num_epoch', str(epochs),
                           '--test_feeder_args', test, *QUIET, *extra])
    p.start()
    return p


def without_wall(records):
    return [{k: v for k, v in r.items() if k != 'wall_s'} for r in records]


def test_knn_monitor_leaves_the_weights_unchanged_and_writes_metrics(tmp_path):
    plain = pretrain(tmp_path, 'plain', 3)
    monitored = pretrain(tmp_path, 'knn', 3, '--knn_interval', '2', '--knn_k', '3', '5', '--save_interval', '1')
    a = torch.load(tmp_path / 'plain' / 'epoch3_model.pt')
    b = torch.load(tmp_path / 'knn' / 'epoch3_model.pt')
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)     # same RNG stream

    records = read_metrics(monitored.metrics.path)
    assert [r['epoch'] for r in records] == [0, 1, 2, 3]
    assert [('knn_top1' in r) for r in records] == [True, False, True, True]    # epoch 0, every 2, the last
    uniform = monitored.model.uniform_loss
    for r in records[1:]:
        assert {'loss', 'loss_info', 'embed_std', 'loss_over_uniform', 'lr', 'wall_s'} <= set(r)
        assert r['loss_over_uniform'] == pytest.approx(r['loss_info'] / uniform)
    for r in (records[0], records[2], records[3]):
        assert r['knn_top1'] == r['knn_top1_k3'] and 0 <= r['knn_top1_k5'] <= 1
        assert 0 <= r['probe_top1'] <= 1                     # the ridge probe beside the kNN monitor
    assert records[3]['loss'] == pytest.approx(monitored.epoch_info['loss'])
    assert records[3]['best_probe'] == max((records[0], records[2], records[3]), key=lambda r: r['probe_cv_top1'])['epoch']
    assert all(0 <= r['probe_cv_top1'] <= 1 for r in (records[0], records[2], records[3]))
    # best_probe_model.pt: the weights of that epoch (epoch 0: the initial encoder, none of the epochs' files)
    kept = torch.load(tmp_path / 'knn' / 'best_probe_model.pt')
    for epoch in (1, 2, 3):
        saved = torch.load(tmp_path / 'knn' / f'epoch{epoch}_model.pt')
        assert all(torch.equal(kept[k], saved[k]) for k in kept) == (epoch == records[3]['best_probe'])
    # without the monitor: the same per-epoch losses, no kNN / probe entries, no epoch-0 line
    assert without_wall(read_metrics(plain.metrics.path)) == [
        {k: v for k, v in r.items() if not k.startswith(('knn', 'probe', 'best_probe')) and k != 'wall_s'}
        for r in records[1:]]

    # the monitor's last kNN is knn_evaluation of the last checkpoint (same features, same protocol)
    eval_cfg = yaml.safe_load(open(write_config(tmp_path)))
    eval_cfg.update(train_feeder='feeder.ntu_feeder.Feeder_single', test_feeder='feeder.ntu_feeder.Feeder_single',
                    ignore_weights=['encoder_q.fc', 'encoder_k', 'queue'])
    eval_cfg['model_args']['pretrain'] = False
    args = dict(eval_cfg['train_feeder_args'], shear_amplitude=-1, temperal_padding_ratio=-1)
    eval_cfg['train_feeder_args'] = eval_cfg['test_feeder_args'] = args
    (tmp_path / 'knn.yaml').write_text(yaml.safe_dump(eval_cfg))
    knn = KNNEvaluation(['--config', str(tmp_path / 'knn.yaml'), '--work_dir', str(tmp_path / 'knn_eval'),
                         '--weights', str(tmp_path / 'knn' / 'epoch3_model.pt'), '--knn_k', '3', '5', *QUIET])
    assert knn.start() == {3: records[3]['knn_top1_k3'], 5: records[3]['knn_top1_k5']}


def test_metrics_are_resume_safe(tmp_path):
    full = read_metrics(pretrain(tmp_path, 'full', 3, '--knn_interval', '1').metrics.path)
    stopped = pretrain(tmp_path, 'stopped', 2, '--knn_interval', '1')
    with open(stopped.metrics.path, 'a') as f:        # killed after the metrics of epoch 3, before latest.pt
        f.write(json.dumps({'epoch': 3, 'loss': 0.0}) + '\n{"epoch": 4, "lo')
    resumed = pretrain(tmp_path, 'stopped', 3, '--knn_interval', '1', '--resume', 'true')
    assert resumed.start_epoch == 2
    records = read_metrics(resumed.metrics.path)
    assert [r['epoch'] for r in records] == [0, 1, 2, 3]
    assert without_wall(records) == without_wall(full)


def test_the_monitor_reads_the_pretrainings_own_clips(tmp_path):
    """With a ``sample_list`` subset the kNN / ridge-probe bank is that subset (the clips the probes of its
    evaluation read), not the whole training file."""
    (tmp_path / 'subset.txt').write_text('s0\ns1\ns2\ns3\ns4\ns5\ns6\ns7\n')
    cfg = write_config(tmp_path)
    test = (f"data_path={tmp_path / 'data.npy'},label_path={tmp_path / 'label.pkl'},"
            'shear_amplitude=-1,temperal_padding_ratio=-1')
    p = PretrainProcessor(['--config', cfg, '--work_dir', str(tmp_path / 'run'), '--knn_interval', '1',
                           '--batch_size', '4', '--test_feeder_args', test,
                           '--train_feeder_args', f"sample_list={tmp_path / 'subset.txt'}", *QUIET])
    bank = p.data_loader['knn_train'].dataset
    assert len(p.data_loader['train'].dataset) == len(bank) == 8
    assert [bank.sample_name[i] for i in bank.index] == [f's{i}' for i in range(8)]


def test_knn_interval_needs_a_test_split(tmp_path):
    with pytest.raises(UserError, match='knn_interval=1 needs test_feeder_args'):
        PretrainProcessor(['--config', write_config(tmp_path), '--work_dir', str(tmp_path / 'run'),
                           '--knn_interval', '1', *QUIET])


# ------------------------------------------------------------------------------------------------
# plans

def write_plan(tmp_path, content, name='plan.yaml'):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return str(path)


def demo_row(**changes):
    row = {'processor': 'pretrain_skeletonclr', 'config': 'config/demo/pretrain_skeletonclr.yaml',
           'evaluations': {'linear': 'config/demo/linear_eval_skeletonclr.yaml',
                           'knn': {'config': 'config/demo/knn_skeletonclr.yaml', 'overrides': '--knn_k 20'}}}
    row.update(changes)
    return row


def test_the_shipped_plans_parse():
    ucla = reproduce.load_plan(os.path.join(ROOT, 'config/reproduce/ucla.yaml'))
    assert [r['name'] for r in ucla.rows] == ['SkeletonCLR', 'AimCLR', 'MsMCLR', 'MICA', 'SkeleMixCLR',
                                              'MICA on SkeleMixCLR', 'untrained ST-GCN', 'untrained AimCLR encoder',
                                              'untrained MsMCLR encoder', 'untrained MICA encoder',
                                              'untrained ST-GCN, 64 frames', 'untrained MICA encoder, 64 frames']
    assert all(r['seeds'] == [1, 2, 3] and r['epochs'] == 100 and r['knn_interval'] > 0 for r in ucla.rows[:6])
    assert all(r['processor'] == 'untrained' and r['epochs'] == 0 for r in ucla.rows[6:])
    assert [e['processor'] for r in ucla.rows for e in r['evaluations']] == ['linear_evaluation'] * 12
    # every method stands beside the untrained encoder of its own init and probe
    assert set(untrained_rows(ucla)) == {r['name'] for r in ucla.rows[:6]}
    assert ucla.floor == {'ridge on the data/ucla arrays': 65.3} and ucla.chance == 10.0
    assert ucla.work_dir == os.path.join('work_dir', 'reproduce', 'ucla')
    assert ucla.results == os.path.join('results', 'ucla')
    demo = reproduce.load_plan(os.path.join(ROOT, 'config/reproduce/demo.yaml'))
    assert demo.name == 'demo' and [r['name'] for r in demo.rows] == ['SkeletonCLR', 'MICA', 'untrained ST-GCN']


def test_every_shipped_plan_row_parses_and_builds_its_models():
    """Each stage of every row of config/reproduce/*.yaml: its command line parses (config keys and
    overrides) and its model_args build the model, so a plan's typo fails here, not hours into a run."""
    from processor import PROCESSORS
    from processor.build import build_model
    from torchlight.io import import_class
    plans = sorted(f for f in os.listdir(os.path.join(ROOT, 'config/reproduce')) if f.endswith('.yaml'))
    assert 'ablation_ucla.yaml' in plans and 'ucla_short.yaml' in plans
    for name in plans:
        plan = reproduce.load_plan(os.path.join(ROOT, 'config/reproduce', name))
        for row in plan.rows:
            for stage, _, argv in reproduce.stages(plan, row, row['seeds'][0]):
                processor = object.__new__(import_class(PROCESSORS[argv[2]]))
                processor.load_arg(argv[3:])
                build_model(vars(processor.arg), for_inference=stage != 'pretext')


def test_plan_defaults_overrides_and_commands(tmp_path):
    path = write_plan(tmp_path, {
        'seeds': [1, 2], 'epochs': 7, 'knn_interval': 2, 'overrides': '--num_worker 0',
        'eval_overrides': ['--num_worker', 0], 'floor': {'raw joints': 50},
        'rows': {'base': demo_row(), 'wide net': demo_row(seeds=[3], epochs=None, knn_interval=0,
                                                          overrides="--model_args 'hidden_channels=32'")}})
    plan = reproduce.load_plan(path, extra_pretrain=['--log_interval', '5'])
    base, wide = plan.rows
    assert plan.name == 'plan' and base['seeds'] == [1, 2] and wide['seeds'] == [3]
    assert base['epochs'] == 7 and wide['epochs'] == 7              # None: the plan's default
    assert wide['slug'] == 'wide_net' and wide['knn_interval'] == 0
    assert wide['overrides'] == ['--num_worker', '0', '--model_args', 'hidden_channels=32', '--log_interval', '5']
    linear, knn = base['evaluations']
    assert (linear['processor'], knn['processor']) == ('linear_evaluation', 'knn_evaluation')
    assert knn['overrides'] == ['--num_worker', '0', '--knn_k', '20']
    (name, work_dir, argv), *evals = reproduce.stages(plan, base, 2, python='py')
    assert work_dir == os.path.join(plan.work_dir, 'base', 'seed2', 'pretext')
    assert argv[2:3] == ['pretrain_skeletonclr'] and argv[argv.index('--seed') + 1] == '2'
    assert argv[argv.index('--num_epoch') + 1] == '7' and argv[argv.index('--knn_interval') + 1] == '2'
    split = json.loads(argv[argv.index('--test_feeder_args') + 1])         # from the kNN evaluation config
    assert split['data_path'] == 'data/synthetic/val_position.npy'
    linear_argv = evals[0][2]
    assert linear_argv[linear_argv.index('--weights') + 1] == os.path.join(work_dir, 'epoch7_model.pt')
    assert reproduce.load_plan(path, epochs=3).rows[1]['epochs'] == 3


def test_an_evaluation_of_the_best_epoch_by_the_probe(tmp_path):
    """``checkpoint: best_probe`` evaluates the pretraining's best_probe_model.pt; the other evaluations keep
    the last checkpoint; the key is in the run's specification only when it is not the default."""
    from tools.reproduction.run import specification
    path = write_plan(tmp_path, {'epochs': 7, 'knn_interval': 5, 'rows': {'base': demo_row(evaluations={
        'linear_at_best_probe': {'config': LINEAR, 'checkpoint': 'best_probe'}, 'linear': LINEAR})}})
    row = reproduce.load_plan(path).rows[0]
    (_, pretext, _), best, last = reproduce.stages(reproduce.load_plan(path), row, 1, python='py')
    assert best[2][best[2].index('--weights') + 1] == os.path.join(pretext, 'best_probe_model.pt')
    assert last[2][last[2].index('--weights') + 1] == os.path.join(pretext, 'epoch7_model.pt')
    spec = specification(row)['evaluations']
    assert spec['linear_at_best_probe']['checkpoint'] == 'best_probe' and 'checkpoint' not in spec['linear']


LINEAR = 'config/demo/linear_eval_skeletonclr.yaml'
BAD_PLANS = [
    ({'rows': {'a': demo_row()}, 'seed': [1]}, r"unknown key 'seed' in plan .*plan.yaml; closest valid keys: seeds"),
    ({'rows': {'a': demo_row(evaluation={})}},
     r"unknown key 'evaluation' in plan .*: rows.a; closest valid keys: evaluations"),
    ({'rows': {'a': demo_row(config='config/demo/nothing.yaml')}},
     r"rows.a.config: config 'config/demo/nothing.yaml' does not exist"),
    ({'rows': {'a': demo_row(processor='pretrain_simclr')}},
     r"rows.a.processor: 'pretrain_simclr' is not a pretraining"),
    ({'rows': {'a': demo_row(overrides='--seed 3')}}, r"rows.a.overrides: '--seed' is set by the tool \(seeds:\)"),
    ({'rows': {'a': demo_row(overrides='--base_lrr 0.1')}},
     r"'--base_lrr' is not an option of pretrain_skeletonclr; closest valid keys: base_lr"),
    ({'rows': {'a': demo_row(evaluations={'probe': LINEAR})}}, r"rows.a.evaluations.probe: set 'processor'"),
    ({'rows': {'a': demo_row(evaluations={'linear': {'config': LINEAR, 'epoch': 3}})}},
     r"unknown key 'epoch' in plan .*rows.a.evaluations.linear; closest valid keys: epochs"),
    ({'rows': {'a': demo_row(evaluations={'linear': 'config/demo/none.yaml'})}},
     r"rows.a.evaluations.linear.config: config 'config/demo/none.yaml' does not exist"),
    ({'rows': {'a': demo_row(evaluations={})}}, r'rows.a.evaluations: give at least one evaluation'),
    ({'rows': {'a': demo_row(evaluations={'linear': {'config': LINEAR, 'checkpoint': 'best'}})}},
     r"rows.a.evaluations.linear.checkpoint: 'best' is not one of last, best_probe"),
    ({'knn_interval': 0, 'rows': {'a': demo_row(evaluations={'linear': {'config': LINEAR, 'checkpoint': 'best_probe'}})}},
     r"rows.a.evaluations.linear.checkpoint: best_probe needs the pretraining's ridge probe: set knn_interval"),
    ({'rows': {'a': demo_row(seeds='1')}}, r"rows.a.seeds: expected a seed or a list of seeds .*, got '1'"),
    ({'rows': {'a': demo_row(seeds=[1, -3])}}, r"rows.a.seeds: expected a seed or a list of seeds \(integers 0 "),
    ({'rows': {}}, r"'rows' must be a non-empty mapping"),
    ({'rows': {'a': demo_row()}, 'floor': {'ridge': 'high'}}, r'floor must map row names to numbers'),
    ({'rows': {'a': demo_row()}, 'target': {'pretrain_knn_top1': 'high'}}, r'target must map metric names'),
]


@pytest.mark.parametrize('content, message', BAD_PLANS)
def test_bad_plans_are_one_line_errors_naming_file_and_key(tmp_path, content, message):
    with pytest.raises(UserError, match=message) as info:
        reproduce.load_plan(write_plan(tmp_path, content))
    assert '\n' not in str(info.value)


def test_bad_plan_on_the_command_line(tmp_path):
    path = write_plan(tmp_path, {'rows': {'a': demo_row()}, 'epoch': 3})
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'reproduce.py'), 'run', path, '--dry-run'],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith(f"error: unknown key 'epoch' in plan {path}; closest valid keys: epochs")
    assert len(out.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------
# skip and resume (a fake runner writes what the processors would)

class FakeRunner:
    """Writes a stage's outputs; fails the stages named in ``fail``."""

    def __init__(self, fail=()):
        self.calls, self.fail = [], set(fail)

    def __call__(self, argv, log_path=None):
        work_dir = argv[argv.index('--work_dir') + 1]
        processor = argv[2]
        self.calls.append((os.path.basename(work_dir), argv))
        os.makedirs(work_dir, exist_ok=True)
        if os.path.basename(work_dir) in self.fail:
            open(os.path.join(work_dir, 'latest.pt'), 'w').close()         # a stopped run
            return 1
        seed = int(argv[argv.index('--seed') + 1])
        if processor.startswith('pretrain_'):
            with open(os.path.join(work_dir, 'metrics.jsonl'), 'w') as f:
                for epoch, knn in enumerate([0.2, 0.4, 0.3 + 0.1 * seed]):
                    record = {'epoch': epoch, 'knn_top1': knn}
                    if epoch:
                        record.update(loss=5.0 - epoch, loss_info=5.0 - epoch, loss_over_uniform=0.9, embed_std=0.05)
                    f.write(json.dumps(record) + '\n')
        elif processor == 'knn_evaluation':
            with open(os.path.join(work_dir, 'metrics.jsonl'), 'w') as f:
                for k, top1 in ((20, 0.4125), (40, 0.4)):
                    f.write(json.dumps({'epoch': 0, 'k': k, 'top1': top1, 'top5': 0.9, 'class_top1': top1}) + '\n')
        else:
            with open(os.path.join(work_dir, 'metrics.jsonl'), 'a') as f:
                for epoch, top1 in ((5, 0.5), (10, 0.6 + seed / 100), (15, 0.55)):
                    f.write(json.dumps({'epoch': epoch, 'top1': top1, 'top5': 0.9, 'class_top1': top1 - 0.1,
                                        'loss': 1.0}) + '\n')
        return 0


def test_finished_runs_are_skipped_and_a_stopped_one_is_resumed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_plan(tmp_path, {'name': 'p', 'seeds': [1, 2], 'epochs': 2, 'knn_interval': 1,
                                 'rows': {'row': demo_row()}})
    plan = reproduce.load_plan(path)
    first = FakeRunner(fail={'linear'})
    with pytest.raises(UserError, match=r"row seed 1: stage 'linear' failed \(exit 1\)"):
        reproduce.run_plan(plan, runner=first)
    assert [c[0] for c in first.calls] == ['pretext', 'linear']
    assert not os.path.exists(reproduce.result_path(plan, plan.rows[0], 1))

    second = FakeRunner()
    done, skipped, failed = reproduce.run_plan(plan, runner=second)
    assert done == ['row seed 1', 'row seed 2'] and not skipped and not failed
    assert [c[0] for c in second.calls] == ['linear', 'knn', 'pretext', 'linear', 'knn']     # pretext 1 kept
    assert all(argv[argv.index('--resume') + 1] == 'auto' for _, argv in second.calls)
    result = json.load(open(reproduce.result_path(plan, plan.rows[0], 1)))
    assert result['stages']['linear']['resumed'] and not result['stages']['knn']['resumed']
    assert (result['row'], result['seed'], result['plan']) == ('row', 1, 'p')
    assert result['best'] == {'pretrain_knn_top1': 0.4, 'pretrain_knn_epoch': 1, 'linear_top1': 0.61,
                              'linear_top5': 0.9, 'linear_class_top1': 0.51, 'linear_epoch': 10, 'knn_top1': 0.4125,
                              'knn_top1_k20': 0.4125, 'knn_top1_k40': 0.4}
    assert result['final']['linear_top1'] == 0.55 and result['final']['linear_epoch'] == 15
    assert result['final']['pretrain_knn_drop'] == pytest.approx(0.0)
    assert [r['epoch'] for r in result['curve']] == [0, 1, 2]
    assert [(r['epoch'], r['top1']) for r in result['evaluations']['linear']['curve']] == [(5, 0.5), (10, 0.61),
                                                                                          (15, 0.55)]
    assert result['spec']['epochs'] == 2 and set(result) >= {'commit', 'dirty', 'wall_s', 'finished'}

    third = FakeRunner()
    assert reproduce.run_plan(plan, runner=third)[1] == ['row seed 1', 'row seed 2'] and not third.calls

    capsys.readouterr()
    reproduce.run_plan(reproduce.load_plan(path), seeds=[3], dry_run=True, runner=third)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == '# row seed 3' and len(printed) == 4 and '--seed 3' in printed[1] and not third.calls

    with pytest.raises(UserError, match=r"result '.*row__seed1.json' was made with another specification"):
        reproduce.run_plan(reproduce.load_plan(path, epochs=4), runner=third)


def test_a_leg_killed_before_its_first_checkpoint_is_kept_aside_and_the_stage_starts_again(tmp_path, capsys):
    """main.py refuses a work_dir holding a run it cannot resume (nothing on disk is overwritten); the plan's
    own stage folder of such a leg is moved aside, whole, and the stage runs again."""
    work_dir = tmp_path / 'pretext'
    work_dir.mkdir()
    (work_dir / 'log.txt').write_text('killed in epoch 0')
    (work_dir / 'config.yaml').write_text('seed: 1')
    calls = []

    def runner(argv, console):
        calls.append(sorted(os.listdir(work_dir)))
        return 0
    wall, resumed, _ = reproduce_run.run_stage('pretext', str(work_dir), ['main.py', 'pretrain'], {}, runner, True)
    assert not resumed and calls == [[reproduce_run.WALL_FILE]]
    assert (tmp_path / 'pretext.stopped1' / 'log.txt').read_text() == 'killed in epoch 0'
    assert 'kept as' in capsys.readouterr().out and (work_dir / reproduce_run.STAGE_FILE).exists()


def test_a_killed_leg_counts_in_the_wall_time_until_its_last_write(tmp_path):
    """A leg killed without running its ``finally`` (SIGKILL at a session's end) left ``leg_started`` in
    the wall file; the next leg adds the time from there to the folder's last write, not zero."""
    work_dir = tmp_path / 'pretext'
    work_dir.mkdir()
    killed_at = 1_000_000.0
    (work_dir / reproduce_run.WALL_FILE).write_text(json.dumps({'wall_s': 100.0, 'leg_started': killed_at}))
    for name, written in (('log.txt', killed_at + 50), ('latest.pt', killed_at + 40)):
        (work_dir / name).write_text('x')
        os.utime(work_dir / name, (written, written))

    def runner(argv, console):
        return 0
    wall, resumed, env = reproduce_run.run_stage('pretext', str(work_dir), ['main.py', 'pretrain'], {}, runner, True)
    assert resumed and 150.0 <= wall < 160.0
    import torch            # where it ran is recorded: CPU results depend on the thread count
    assert env['torch'] == torch.__version__ and (env.get('gpu') or env['threads'] == torch.get_num_threads())
    assert json.loads((work_dir / reproduce_run.STAGE_FILE).read_text())['environment'] == env
    assert set(json.loads((work_dir / reproduce_run.WALL_FILE).read_text())) == {'wall_s'}
    assert reproduce_run.wall_so_far(str(work_dir / 'none.json'), str(work_dir)) == 0.0


def test_runs_side_by_side_give_the_results_of_runs_in_turn(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    content = {'seeds': [1, 2], 'epochs': 2, 'knn_interval': 1, 'rows': {'a': demo_row(), 'b': demo_row()}}
    results = {}
    for jobs in (1, 3):
        plan = reproduce.load_plan(write_plan(tmp_path, dict(content, name=f'jobs{jobs}'), f'jobs{jobs}.yaml'))
        runner = FakeRunner()
        done, skipped, failed = reproduce.run_plan(plan, runner=runner, jobs=jobs)
        assert sorted(done) == ['a seed 1', 'a seed 2', 'b seed 1', 'b seed 2'] and not skipped and not failed
        assert len(runner.calls) == 12
        results[jobs] = {(r['row'], r['seed']): (r['final'], r['best'], r['curve'])
                         for r in reproduce.load_results(plan.results)}
    assert results[1] == results[3]
    plan = reproduce.load_plan(write_plan(tmp_path, dict(content, name='failing'), 'failing.yaml'))
    done, _, failed = reproduce.run_plan(plan, runner=FakeRunner(fail={'knn'}), jobs=2, keep_going=True)
    assert not done and sorted(failed) == ['a seed 1', 'a seed 2', 'b seed 1', 'b seed 2']
    with pytest.raises(UserError, match=r"seed \d: stage 'knn' failed"):
        reproduce.run_plan(plan, runner=FakeRunner(fail={'knn'}), jobs=2)
    with pytest.raises(UserError, match='--jobs 0'):
        reproduce.run_plan(plan, jobs=0)


def test_a_result_of_other_config_contents_is_not_taken_for_a_run_of_the_new_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / 'pretrain.yaml'
    config.write_text(f"base: {os.path.join(ROOT, 'config/demo/pretrain_skeletonclr.yaml')}\nbase_lr: 0.1\n")
    path = write_plan(tmp_path, {'name': 'd', 'seeds': [1], 'epochs': 2, 'rows': {'row': demo_row(config=str(config))}})
    reproduce.run_plan(reproduce.load_plan(path), runner=FakeRunner())
    result = json.load(open(reproduce.result_path(reproduce.load_plan(path), reproduce.load_plan(path).rows[0], 1)))
    assert set(result['config_digests']) == {'pretext', 'linear', 'knn'}
    assert reproduce.run_plan(reproduce.load_plan(path), runner=FakeRunner())[1] == ['row seed 1']   # unchanged
    config.write_text(config.read_text().replace('base_lr: 0.1', 'base_lr: 0.05'))       # the recipe changed
    with pytest.raises(UserError, match=r"row__seed1.json' was made with another content of the pretext config"):
        reproduce.run_plan(reproduce.load_plan(path), runner=FakeRunner())
    os.remove(reproduce.result_path(reproduce.load_plan(path), reproduce.load_plan(path).rows[0], 1))
    with pytest.raises(UserError, match=r"pretext' was made with another content of the pretext config"):
        reproduce.run_plan(reproduce.load_plan(path), runner=FakeRunner())      # its finished stage folder too


def test_an_evaluation_is_read_from_its_metrics_file_alone(tmp_path):
    """The result comes from metrics.jsonl (a torn last line skipped), never from the log's wording."""
    (tmp_path / 'log.txt').write_text('[t] Eval epoch: 5\n[t] \tmean_loss: 1.5000 | top1: 99.00%\n')
    with pytest.raises(UserError, match='wrote no metrics'):
        reproduce.eval_metrics(str(tmp_path), 'semi10', 'finetune_evaluation')
    (tmp_path / 'metrics.jsonl').write_text(
        json.dumps({'epoch': 5, 'top1': 0.425, 'top5': 0.8, 'class_top1': 0.4, 'loss': 1.5}) + '\n{"epoch": 10, "to')
    final, best, curve = reproduce.eval_metrics(str(tmp_path), 'semi10', 'finetune_evaluation')
    assert final == best == {'semi10_top1': 0.425, 'semi10_top5': 0.8, 'semi10_class_top1': 0.4, 'semi10_epoch': 5}
    assert curve == [{'epoch': 5, 'top1': 0.425, 'top5': 0.8, 'class_top1': 0.4, 'loss': 1.5}]


# ------------------------------------------------------------------------------------------------
# aggregation

def hand_result(row, seed, linear, knn_curve, loss_curve):
    curve = [{'epoch': e, 'knn_top1': k, 'loss_over_uniform': l} for e, (k, l) in
             enumerate(zip(knn_curve, loss_curve), 1)]
    return {'plan': 'hand', 'row': row, 'seed': seed, 'wall_s': 600.0 * seed,
            'spec': {'evaluations': {'linear': {'processor': 'linear_evaluation'}}},
            'evaluations': {'linear': {}},
            'final': {'linear_top1': linear - 0.01, 'pretrain_knn_top1': knn_curve[-1],
                      'loss_over_uniform': loss_curve[-1]},
            'best': {'linear_top1': linear}, 'curve': curve, 'commit': 'abcdef0123', 'dirty': False}


def write_results(folder):
    os.makedirs(folder, exist_ok=True)
    results = [hand_result('A', 1, 0.50, [0.2, 0.4], [0.9, 0.8]), hand_result('A', 2, 0.60, [0.3, 0.5], [0.95, 0.7]),
               hand_result('A', 3, 0.70, [0.4, 0.6], [0.85, 0.6]), hand_result('B', 1, 0.55, [0.1, 0.2], [0.99, 0.98])]
    for r in results:
        reproduce.write_json(r, os.path.join(folder, f"{r['row']}__seed{r['seed']}.json"))


def test_aggregation_table_mean_std_floor_and_chance(tmp_path):
    folder = str(tmp_path / 'results')
    write_results(folder)
    plan = reproduce.parse_plan({'rows': {'B': demo_row(), 'A': demo_row()}, 'floor': {'ridge on raw joints': 62.6},
                                 'chance': 10}, 'hand.yaml')
    text = reproduce.aggregate(plan, folder, command='python tools/reproduce.py aggregate hand.yaml')
    lines = text.splitlines()
    assert lines[0] == 'Generated by `python tools/reproduce.py aggregate hand.yaml`.'
    assert lines[1] == '4 runs, seeds 1, 2, 3; mean ± sample std over seeds; commit abcdef0.'
    assert lines[3] == ('| row | n | linear top-1 (best) | linear top-1 (last) | kNN monitor (last) | '
                        'loss / ln(K+1) (last) | wall (min / run) |')
    assert lines[5] == '| B | 1 | 55.0 | 54.0 | 20.0 | 0.980 | 10.0 |'              # plan order, one seed
    assert lines[6] == '| A | 3 | 60.0 ± 10.0 | 59.0 ± 10.0 | 50.0 ± 10.0 | 0.700 ± 0.100 | 20.0 |'
    assert lines[7] == '| ridge on raw joints (floor) | – | 62.6 |  |  |  |  |'
    assert lines[8] == '| chance | – | 10.0 |  |  |  |  |'
    assert open(os.path.join(folder, 'table.md')).read() == text
    assert reproduce.largest_drop([0.3, 0.5, 0.2, 0.6, 0.55]) == pytest.approx(0.3)
    assert reproduce.mean_std([1.0, 2.0, 4.0]) == (pytest.approx(7 / 3), pytest.approx(math.sqrt(7 / 3)))


def test_a_plan_target_is_counted_per_row_and_each_miss_named(tmp_path):
    folder = str(tmp_path / 'results')
    write_results(folder)
    falling = hand_result('A', 4, 0.5, [0.2, 0.5, 0.36], [0.9, 0.8, 0.8])      # 14 points below its best
    reproduce.write_json(falling, os.path.join(folder, 'A__seed4.json'))
    plan = reproduce.parse_plan({'rows': {'A': demo_row(), 'B': demo_row()},
                                 'target': {'pretrain_knn_top1': 0.45}}, 'hand.yaml')
    text = reproduce.aggregate(plan, folder)
    assert 'Target of every pretrained run: pretrain_knn_top1 >= 0.45; met by 2 of 5.' in text
    summary, runs = text.split('Every run:')
    assert '| 2 / 4 | 25.0 |' in summary and '| 0 / 1 | 10.0 |' in summary
    assert '| none | **no**: pretrain_knn_top1 0.4 < 0.45 |' in runs           # seed 1
    assert '| none | yes |' in runs
    assert '| knn_fall @ 3 | **no**: pretrain_knn_top1 0.36 < 0.45 |' in runs  # the monitor, replayed
    plan.target = {'knn_top1': 0.3}
    with pytest.raises(UserError, match="target metric 'knn_top1' is in no result file"):
        reproduce.aggregate(plan, folder)
    untrained = tmp_path / 'untrained'           # no pretrained run yet: the target judges nothing, no error
    baseline = dict(hand_result('U', 1, 0.2, [0.1], [1.0]), final={'linear_top1': 0.2}, curve=[],
                    spec={'processor': 'untrained', 'evaluations': {'linear': {'processor': 'linear_evaluation'}}})
    reproduce.write_json(baseline, str(untrained / 'U__seed1.json'))
    assert '| U | 1 |' in reproduce.aggregate(plan, str(untrained))


def test_the_readme_table_blocks_are_their_table_files(tmp_path):
    """README.md's short table and docs/RESULTS.md's tables are what `python tools/reproduce.py readme`
    makes of the committed files (it was run), and the README stays a page of at most 200 lines."""
    from tools.reproduction.table import GENERATED_FILES, readme_tables
    texts = {name: open(os.path.join(ROOT, name)).read() for name in GENERATED_FILES}
    assert '<!-- summary: config/summary.yaml -->' in texts['README.md']
    assert '<!-- table: results/ucla_stability/table.md -->' in texts['docs/RESULTS.md']
    assert len(texts['README.md'].splitlines()) <= 200
    for name, text in texts.items():
        copy = tmp_path / os.path.basename(name)
        copy.write_text(text)
        assert readme_tables(str(copy), ROOT) == [], name
    readme = tmp_path / 'README.md'
    (tmp_path / 't.md').write_text('| a |\n')
    readme.write_text('x\n<!-- table: t.md -->\nold\n<!-- end table -->\ny\n')
    assert readme_tables(str(readme), str(tmp_path)) == ['t.md']
    assert readme.read_text() == 'x\n<!-- table: t.md -->\n| a |\n<!-- end table -->\ny\n'
    readme.write_text('<!-- table: none.md -->\n<!-- end table -->\n')
    with pytest.raises(UserError, match="names 'none.md', which does not exist"):
        readme_tables(str(readme), str(tmp_path))


def test_the_readme_summary_table(tmp_path):
    """The README's short table (tools/reproduction/summary.py): a column per plan and metric, rows matched by
    the first listed name a column holds, mean ± std (seeds), '–' where there is none, the plan's floor."""
    from tools.reproduction.summary import summary_table
    write_results(str(tmp_path / 'results'))
    write_plan(tmp_path, {'rows': {'A': demo_row(), 'B': demo_row(), 'C': demo_row(), 'D, run elsewhere': demo_row()},
                          'floor': {'ridge': 62.6}, 'chance': 25, 'results': str(tmp_path / 'results')})
    (tmp_path / 'summary.yaml').write_text(yaml.safe_dump({
        'columns': [{'title': 'hand, linear', 'plan': 'plan.yaml', 'metric': 'linear_top1', 'floor': 'ridge'},
                    {'title': 'elsewhere', 'plan': 'plan.yaml', 'results': 'none', 'metric': 'linear_top1'}],
        'rows': {'method': ['D, run elsewhere', 'A'], 'untrained': 'B', 'other': 'C'}}, sort_keys=False))
    lines = summary_table('summary.yaml', str(tmp_path)).splitlines()
    assert lines[2:] == ['| | hand, linear | elsewhere |', '|---|---|---|', '| method | 59.0 ± 10.0 (3) | – |',
                         '| untrained | 54.0 (1) | – |', '| other | – | – |',
                         '| ridge floor of the arrays | 62.6 | – |', '| chance | 25.0 | 25.0 |']
    (tmp_path / 'summary.yaml').write_text(yaml.safe_dump({'columns': [{'title': 't', 'plan': 'plan.yaml',
                                                                        'metric': 'm', 'floor': 'nope'}],
                                                           'rows': {'r': 'A'}}))
    with pytest.raises(UserError, match="floor 'nope' is not a floor row"):
        summary_table('summary.yaml', str(tmp_path))
    # a row name that no column's plan has (an unquoted 'A, B' in a YAML flow list is two names) is an error
    (tmp_path / 'summary.yaml').write_text("columns: [{title: t, plan: plan.yaml, metric: linear_top1}]\n"
                                           "rows: {method: [A, D, run elsewhere]}\n")
    with pytest.raises(UserError, match="row 'method': 'D' is a row of none of the columns' plans"):
        summary_table('summary.yaml', str(tmp_path))


def test_curves_png_and_the_table_without_matplotlib(tmp_path, monkeypatch, capsys):
    pytest.importorskip('matplotlib')
    folder = str(tmp_path / 'results')
    write_results(folder)
    reproduce.aggregate(None, folder, band='std')
    with open(os.path.join(folder, 'curves.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    os.remove(os.path.join(folder, 'curves.png'))
    monkeypatch.setitem(sys.modules, 'matplotlib', None)          # as if not installed
    capsys.readouterr()
    reproduce.aggregate(None, folder)
    assert 'Notice: matplotlib is not installed (pip install -r requirements-analysis.txt)' in capsys.readouterr().out
    assert os.path.exists(os.path.join(folder, 'table.md')) and not os.path.exists(os.path.join(folder, 'curves.png'))


# ------------------------------------------------------------------------------------------------
# end to end: the demo plan on a tiny synthetic set, through main.py subprocesses

def test_demo_plan_end_to_end_with_a_resumed_pretraining(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # the commit a result records: a clean one (the code check of adoption is tested on its own below)
    monkeypatch.setattr(reproduce_run, 'git_commit', lambda: ('0' * 40, False))
    monkeypatch.setattr(adoption, 'changed_code', lambda commit: [])
    subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'gen_synthetic.py'), '--out-folder',
                    'data/synthetic', '--num-train-per-class', '16', '--num-val-per-class', '8', '--length', '24',
                    '--num-person', '1'], check=True, capture_output=True)
    plan_path = os.path.join(ROOT, 'config', 'reproduce', 'demo.yaml')
    plan = reproduce.load_plan(plan_path)
    # a stopped pretraining: the stage's own command, stopped after its first epoch
    _, pretext, argv = reproduce.stages(plan, plan.row('SkeletonCLR'), 1)[0]
    subprocess.run(argv + ['--num_epoch', '1'], check=True, capture_output=True)
    cli.main(['run', plan_path, '--rows', 'SkeletonCLR', '--seeds', '1', '--quiet'])
    assert 'Resumed from' in open(os.path.join(pretext, 'log.txt')).read()
    result = json.load(open(os.path.join('results', 'demo', 'SkeletonCLR__seed1.json')))
    assert result['stages']['pretext']['resumed'] and set(result['stages']) == {'pretext', 'linear', 'knn'}
    assert [r['epoch'] for r in result['curve']] == [0, 1, 2]
    assert all('knn_top1' in r for r in result['curve'])
    assert 0 < result['best']['linear_top1'] <= 1 and 0 < result['final']['knn_top1'] <= 1
    # the monitor's kNN at the last epoch is the kNN evaluation of the last checkpoint (first k of both: 10)
    assert result['final']['pretrain_knn_top1'] == pytest.approx(result['final']['knn_top1'], abs=1e-4)
    table = open(os.path.join('results', 'demo', 'table.md')).read()
    assert '| SkeletonCLR | 1 |' in table and '| chance | – | 10.0 |' in table
    try:
        import matplotlib  # noqa: F401
        assert os.path.exists(os.path.join('results', 'demo', 'curves.png'))
    except ImportError:
        pass
    # the untrained encoder under the same probes, beside it in the table
    cli.main(['run', plan_path, '--rows', 'untrained ST-GCN', '--seeds', '1', '--quiet'])
    floor = json.load(open(os.path.join('results', 'demo', 'untrained_ST-GCN__seed1.json')))
    assert set(floor['stages']) == {'linear', 'knn'} and floor['curve'] == []
    assert 0 < floor['best']['linear_top1'] <= 1 and 0 < floor['final']['knn_top1'] <= 1
    assert '| untrained ST-GCN | 1 |' in open(os.path.join('results', 'demo', 'table.md')).read()
    # a rerun skips the finished run
    capsys.readouterr()
    cli.main(['run', plan_path, '--rows', 'SkeletonCLR', '--seeds', '1'])
    assert '0 runs done, 1 already done' in capsys.readouterr().out
    # the same run as another plan's row is adopted (every stage's config.yaml against the row's arguments,
    # resolved again), then skipped by `run`; a row with another setting is refused, naming the key
    content = yaml.safe_load(open(plan_path))
    same = content['rows']['SkeletonCLR']
    linear_only = dict(same, evaluations={'linear': same['evaluations']['linear']})
    content.update(name='adopting', rows={'same': same, 'other': dict(same, overrides='--base_lr 0.05'),
                                          'linear only': linear_only})
    other_plan = write_plan(tmp_path, content, 'adopting.yaml')
    source = os.path.join('results', 'demo', 'SkeletonCLR__seed1.json')
    cli.main(['adopt', other_plan, '--row', 'same', '--seed', '1', '--from', source])
    adopted = json.load(open(os.path.join('results', 'adopting', 'same__seed1.json')))
    assert adopted['adopted_from'] == {'result': source, 'plan': 'demo', 'row': 'SkeletonCLR', 'commit': '0' * 40}
    assert adopted['row'] == 'same' and adopted['final'] == result['final'] and adopted['curve'] == result['curve']
    capsys.readouterr()
    cli.main(['run', other_plan, '--rows', 'same', '--seeds', '1'])
    assert '0 runs done, 1 already done' in capsys.readouterr().out
    assert '1 of them adopted from plan demo' in open(os.path.join('results', 'adopting', 'table.md')).read()
    # a row with fewer evaluations takes the source's matching stages; the others are left out of its result
    cli.main(['adopt', other_plan, '--row', 'linear only', '--seed', '1', '--from', source])
    fewer = json.load(open(os.path.join('results', 'adopting', 'linear_only__seed1.json')))
    assert set(fewer['stages']) == {'pretext', 'linear'} and set(fewer['evaluations']) == {'linear'}
    assert fewer['final'] == {k: v for k, v in result['final'].items() if not k.startswith('knn_')}
    with pytest.raises(UserError, match=r"pretext stage ran with base_lr=0\.1, the row resolves to base_lr=0\.05"):
        cli.main(['adopt', other_plan, '--row', 'other', '--seed', '1', '--from', source])
    with pytest.raises(UserError, match='same__seed1.json.* exists'):
        cli.main(['adopt', other_plan, '--row', 'same', '--seed', '1', '--from', source])
    with pytest.raises(UserError, match='is seed 1, not 2'):
        cli.main(['adopt', other_plan, '--row', 'other', '--seed', '2', '--from', source])
    with pytest.raises(UserError, match="--row: no row 'none' in plan .*adopting.yaml; rows: same, other, linear only"):
        cli.main(['adopt', other_plan, '--row', 'none', '--seed', '1', '--from', source])


def test_adoption_needs_the_code_of_the_source_commit(tmp_path):
    """``changed_code``: the training code's files that differ from a commit in the working tree."""
    git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@t', '-C', str(tmp_path)]
    subprocess.run(git + ['init', '-q'], check=True)
    (tmp_path / 'net').mkdir()
    (tmp_path / 'net' / 'm.py').write_text('a = 1\n')
    (tmp_path / 'notes.md').write_text('x\n')
    subprocess.run(git + ['add', '.'], check=True)
    subprocess.run(git + ['commit', '-qm', 'c'], check=True)
    commit = subprocess.run(git + ['rev-parse', 'HEAD'], check=True, capture_output=True, text=True).stdout.strip()
    (tmp_path / 'notes.md').write_text('y\n')                     # not training code
    assert adoption.changed_code(commit, root=str(tmp_path)) == []
    (tmp_path / 'net' / 'm.py').write_text('a = 2\n')
    assert adoption.changed_code(commit, root=str(tmp_path)) == ['net/m.py']
    with pytest.raises(UserError, match="cannot compare the code with commit 'f{40}'"):
        adoption.changed_code('f' * 40, root=str(tmp_path))


def test_a_recognition_row_is_one_run_tested_on_its_own_split(tmp_path, monkeypatch):
    """A supervised row: one recognition run per seed (no weights, no kNN monitor even when the plan
    sets one), its own test epochs as ``recognition_top1``, side by side with a pretraining row."""
    monkeypatch.chdir(tmp_path)
    path = write_plan(tmp_path, {'name': 'sup', 'seeds': [1, 2], 'epochs': 2, 'knn_interval': 1, 'rows': {
        'ST-GCN + CSRE': {'processor': 'recognition', 'config': 'config/ucla/recognition_stgcn_csre.yaml'},
        'SkeletonCLR': demo_row()}})
    plan = reproduce.load_plan(path)
    supervised = plan.row('ST-GCN + CSRE')
    ((name, work_dir, argv),) = reproduce.stages(plan, supervised, 1, python='py')
    assert os.path.basename(work_dir) == 'recognition' and argv[2] == 'recognition'
    assert '--knn_interval' not in argv and '--weights' not in argv and argv[argv.index('--num_epoch') + 1] == '2'
    runner = FakeRunner()
    done, _, failed = reproduce.run_plan(plan, runner=runner)
    assert len(done) == 4 and not failed
    result = json.load(open(reproduce.result_path(plan, supervised, 2)))
    assert result['best'] == {'recognition_top1': 0.62, 'recognition_top5': 0.9, 'recognition_class_top1': 0.52,
                              'recognition_epoch': 10}
    assert result['curve'] == []
    assert result['final']['recognition_top1'] == 0.55 and set(result['stages']) == {'pretext'}
    cli.main(['aggregate', path])
    table = open(os.path.join('results', 'sup', 'table.md')).read()
    assert 'recognition top-1 (best)' in table and '| ST-GCN + CSRE | 2 | 61.5 ± 0.7' in table
    bad = write_plan(tmp_path, {'rows': {'a': {'processor': 'recognition', 'config': 'config/ucla/recognition_stgcn.yaml',
                                               'evaluations': {'linear': LINEAR}}}}, name='bad.yaml')
    with pytest.raises(UserError, match=r"rows.a.evaluations: a recognition row is tested on its config's test split"):
        reproduce.load_plan(bad)


def test_an_untrained_row_evaluates_random_weights_under_the_same_probe(tmp_path, monkeypatch):
    """An ``untrained`` row: no pretraining stage, each evaluation of ``--weights random`` with the
    row's seed, the plan's evaluation overrides, a row of its own in the table."""
    monkeypatch.chdir(tmp_path)
    path = write_plan(tmp_path, {'name': 'floor', 'seeds': [1, 2], 'epochs': 2, 'knn_interval': 1,
                                 'eval_overrides': '--num_worker 0', 'rows': {
                                     'SkeletonCLR': demo_row(),
                                     'untrained ST-GCN': {'processor': 'untrained', 'evaluations': {'linear': LINEAR}}}})
    plan = reproduce.load_plan(path, epochs=5)
    untrained = plan.row('untrained ST-GCN')
    assert untrained['epochs'] == 0 and untrained['knn_interval'] is None
    ((name, work_dir, argv),) = reproduce.stages(plan, untrained, 2, python='py')
    assert name == 'linear' and argv[2] == 'linear_evaluation'
    assert argv[argv.index('--weights') + 1] == 'random' and argv[argv.index('--seed') + 1] == '2'
    assert argv[-2:] == ['--num_worker', '0']
    done, _, failed = reproduce.run_plan(plan, runner=FakeRunner())
    assert len(done) == 4 and not failed
    result = json.load(open(reproduce.result_path(plan, untrained, 1)))
    assert set(result['stages']) == {'linear'} and result['curve'] == []
    assert result['best']['linear_top1'] == 0.61
    cli.main(['aggregate', path])
    table = open(os.path.join('results', 'floor', 'table.md')).read()
    assert '| untrained ST-GCN | 2 | 61.5 ± 0.7 |' in table
    for key, value in (('config', 'config/ucla/pretrain_skeletonclr.yaml'), ('epochs', 3), ('overrides', '--base_lr 1')):
        bad = write_plan(tmp_path, {'rows': {'u': {'processor': 'untrained', key: value,
                                                   'evaluations': {'linear': LINEAR}}}}, name='bad.yaml')
        with pytest.raises(UserError, match=rf"rows.u.{key}: an untrained row has no pretraining; drop '{key}'"):
            reproduce.load_plan(bad)


def test_the_commit_is_dirty_for_changed_code_not_for_rewritten_results(tmp_path, monkeypatch):
    """A plan rewrites results/<plan>/table.md after every run: that must not mark the next runs dirty."""
    repo = tmp_path / 'repo'
    (repo / 'results' / 'plan').mkdir(parents=True)
    (repo / 'net').mkdir()
    (repo / 'results' / 'plan' / 'table.md').write_text('old\n')
    (repo / 'net' / 'model.py').write_text('x = 1\n')
    git = ['git', '-C', str(repo), '-c', 'user.name=t', '-c', 'user.email=t@t']
    subprocess.run(git + ['init', '-q'], check=True)
    subprocess.run(git + ['add', '-A'], check=True)
    subprocess.run(git + ['commit', '-qm', 'init'], check=True)
    monkeypatch.setattr(reproduce_run, 'ROOT', str(repo))
    commit, dirty = reproduce.git_commit()
    assert len(commit) == 40 and dirty is False
    (repo / 'results' / 'plan' / 'table.md').write_text('new\n')
    assert reproduce.git_commit() == (commit, False)
    (repo / 'net' / 'model.py').write_text('x = 2\n')
    assert reproduce.git_commit() == (commit, True)


def test_lowest_embedding_std_and_every_run_in_the_table():
    from tools.reproduction.metrics import pretrain_metrics
    from tools.reproduction.table import table
    curve = [{'epoch': 0, 'knn_top1': 0.2}, {'epoch': 1, 'embed_std': 0.02}, {'epoch': 2, 'embed_std': 0.004},
             {'epoch': 3, 'embed_std': 0.01, 'knn_top1': 0.4}]
    final = pretrain_metrics(curve)[0]
    assert final['embed_std_min'] == 0.004 and final['embed_std'] == 0.01
    runs = [{'row': 'A', 'seed': s, 'final': dict(final, embed_std_min=v), 'best': {}} for s, v in ((1, 0.004), (2, 0.008))]
    text = table(runs)
    assert '| A | 2 |' in text and '| 0.0060 ± 0.0028 |' in text          # mean ± std over the seeds
    assert '| A | 1 |' in text.split('Every run:')[1] and '| 0.0040 |' in text.split('Every run:')[1]
