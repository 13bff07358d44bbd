import os

import pytest
import yaml

from main import main
from processor.linear_evaluation import LinearEvaluation
from processor.pretrain import PretrainProcessor
from conftest import write_config
from torchlight.io import UserError, parse_dict_string


def test_precedence_command_line_over_yaml_over_defaults(tmp_path):
    cfg = write_config(tmp_path, base_lr=0.05)
    p = PretrainProcessor(['--config', cfg, '--batch_size', '4', '--model_args', 'hidden_channels=6,graph_args.strategy=uniform'])
    assert p.arg.batch_size == 4                      # command line beats YAML (8)
    assert p.arg.base_lr == 0.05                       # YAML beats default (0.01)
    assert p.arg.weight_decay == 1e-4                  # default
    assert p.arg.model_args['hidden_channels'] == 6    # dict option merged ...
    assert p.arg.model_args['feature_dim'] == 8        # ... keeping the other YAML keys
    assert p.arg.model_args['graph_args'] == {'layout': 'nw-ucla', 'strategy': 'uniform'}
    assert p.model.encoder_q.A.shape[0] == 1           # the uniform strategy reached the model
    p2 = PretrainProcessor(['--config', cfg, '--step', '3', '5', '--device', '0', '1', '--work_dir', str(tmp_path / 'r2')])
    assert p2.arg.step == [3, 5] and p2.arg.device == [0, 1]


def test_config_dump_records_command_line(tmp_path):
    cfg = write_config(tmp_path)
    p = PretrainProcessor(['--config', cfg])
    text = open(os.path.join(p.arg.work_dir, 'config.yaml')).read()
    assert text.startswith('# command line:')
    assert yaml.safe_load(text)['batch_size'] == 8


def test_unknown_key_names_closest_valid_keys(tmp_path):
    cfg = write_config(tmp_path, base_lrr=0.1)
    with pytest.raises(UserError, match=r"unknown key 'base_lrr'.*base_lr"):
        PretrainProcessor(['--config', cfg])


def test_legacy_keys_are_ignored_with_a_notice(tmp_path, capsys):
    cfg = write_config(tmp_path, pavi_log=False, start_epoch=0)
    PretrainProcessor(['--config', cfg])
    out = capsys.readouterr().out
    assert "config key 'pavi_log' is ignored" in out


def test_wrong_value_type_is_an_error(tmp_path):
    cfg = write_config(tmp_path, base_lr='fast')
    with pytest.raises(UserError, match="'base_lr'.*must be a number"):
        PretrainProcessor(['--config', cfg])
    cfg = write_config(tmp_path, resume=1)
    with pytest.raises(UserError, match="'resume'.*must be true, false or auto"):
        PretrainProcessor(['--config', cfg])
    cfg = write_config(tmp_path, weight_decay='1e-4')      # YAML reads 1e-4 as a string
    assert PretrainProcessor(['--config', cfg]).arg.weight_decay == 1e-4


def test_queue_not_multiple_of_batch(tmp_path):
    cfg = write_config(tmp_path, batch_size=6)
    with pytest.raises(ValueError, match='queue_size=16 is not a multiple of batch_size=6'):
        PretrainProcessor(['--config', cfg])


def test_main_reports_user_errors_in_one_line(tmp_path, capsys):
    cfg = write_config(tmp_path, stream='velocity')
    assert main(['pretrain_skeletonclr', '--config', cfg]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stream/view 'velocity' is unknown" in err[0]


def test_existing_run_is_not_overwritten(tmp_path):
    cfg = write_config(tmp_path)
    PretrainProcessor(['--config', cfg]).start()
    log_before = open(tmp_path / 'run' / 'log.txt').read()
    with pytest.raises(UserError, match='already holds a run'):
        PretrainProcessor(['--config', cfg])
    assert open(tmp_path / 'run' / 'log.txt').read() == log_before
    assert (tmp_path / 'run' / 'epoch1_model.pt').exists()


def test_parse_dict_string():
    assert parse_dict_string('a=1,b.c=x,d=[1,2]') == {'a': 1, 'b': {'c': 'x'}, 'd': [1, 2]}
    assert parse_dict_string("{a: 1, b: true}") == {'a': 1, 'b': True}
    assert parse_dict_string('dict(a=0.5)') == {'a': 0.5}


def test_linear_evaluation_requires_classifier_mode(tmp_path):
    cfg = write_config(tmp_path, test_feeder_args={})
    with pytest.raises(UserError, match='pretrain: false'):
        LinearEvaluation(['--config', cfg])


def test_resume_continues_bit_identically(tmp_path):
    """Two epochs in one go == one epoch, stop, --resume for the second (weights, queue, optimizer)."""
    import torch
    cfg = write_config(tmp_path)
    full = PretrainProcessor(['--config', cfg, '--work_dir', str(tmp_path / 'full'), '--num_epoch', '2'])
    full.start()
    part = PretrainProcessor(['--config', cfg, '--work_dir', str(tmp_path / 'part'), '--num_epoch', '1'])
    part.start()
    resumed = PretrainProcessor(['--config', cfg, '--work_dir', str(tmp_path / 'part'), '--num_epoch', '2',
                                 '--resume', 'true'])
    assert resumed.start_epoch == 1
    resumed.start()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert full.meta_info['global_step'] == resumed.meta_info['global_step'] == 4


def test_sigterm_stops_and_resume_repeats_the_epoch_exactly(tmp_path):
    import torch
    cfg = write_config(tmp_path)
    full = PretrainProcessor(['--config', cfg, '--work_dir', str(tmp_path / 'full'), '--num_epoch', '2'])
    full.start()
    stopped = PretrainProcessor(['--config', cfg, '--work_dir', str(tmp_path / 'stop'), '--num_epoch', '2'])
    original = stopped.train_epoch

    def train_then_signal(epoch):
        original(epoch)
        if epoch == 1:
            stopped.stop_requested = True        # as the SIGTERM handler does, mid-run
    stopped.train_epoch = train_then_signal
    stopped.start()
    assert not (tmp_path / 'stop' / 'epoch2_model.pt').exists()
    resumed = PretrainProcessor(['--config', cfg, '--work_dir', str(tmp_path / 'stop'), '--num_epoch', '2',
                                 '--resume', 'true'])
    assert resumed.start_epoch == 1
    resumed.start()
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_no_parser_default_contradicts_a_shipped_base():
    """Every recipe value has one home, the shipped base YAMLs: each processor's parser default of a key that
    its protocol base sets is that base's value (e.g. linear evaluation's eval_interval is the 5 of
    linear_eval.yaml; variants such as semi.yaml set their own values on top)."""
    import glob
    from conftest import ROOT
    from processor import PROCESSORS
    from processor.recipes import recipe
    from torchlight.io import import_class, load_config_file
    protocols = {'pretrain': ['pretrain.yaml'], 'linear_evaluation': ['linear_eval.yaml'],
                 'knn_evaluation': ['knn.yaml'], 'finetune_evaluation': ['finetune.yaml']}
    for name, bases in protocols.items():
        parser = import_class(PROCESSORS[name]).get_parser()
        dests = {a.dest for a in parser._actions}
        for base in bases:
            values = load_config_file(os.path.join(ROOT, 'config/base/protocol', base))
            for key, value in values.items():
                if key in dests and not isinstance(value, dict):
                    assert parser.get_default(key) == value, (name, base, key)
    supervised = import_class(PROCESSORS['recognition']).get_parser()
    for key, value in recipe(('config/base/supervised/common.yaml',
                              'config/base/supervised/recipe/ctrgcn_ntu.yaml')).items():
        if not isinstance(value, dict):
            assert supervised.get_default(key) == value, key
    # the kNN monitor of pretraining and kNN evaluation: one protocol
    knn = import_class(PROCESSORS['knn_evaluation']).get_parser()
    pretrain = import_class(PROCESSORS['pretrain']).get_parser()
    assert [p.get_default(k) for p in (knn, pretrain) for k in ('knn_k', 'knn_temperature')] == [[10, 20, 40], 0.1] * 2
    # no parser of a subclass sets a recipe value of its own: the only set_defaults are recipe_defaults
    for path in glob.glob(os.path.join(ROOT, 'processor', '*.py')):
        assert 'set_defaults(' not in open(path).read() or path.endswith(('arguments.py', 'recipes.py')), path
