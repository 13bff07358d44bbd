"""The family's weight initialisation (SkeletonCLR / AimCLR ``weights_init``), applied by the family's
processors after the model is built (so MoCo's key encoder is drawn afresh) and before --weights."""
import torch
import torch.nn as nn
import yaml

from conftest import write_config
from net.skeletonclr import SkeletonCLR
from net.utils.init import family_weights_init
from processor.finetune_evaluation import FinetuneEvaluation
from processor.linear_evaluation import LinearEvaluation
from processor.pretrain import PretrainProcessor
from processor.recognition import Recognition

ENCODER = dict(base_encoder='net.st_gcn.Model', in_channels=3, hidden_channels=16, hidden_dim=64,
               feature_dim=32, queue_size=32, graph_args={'layout': 'ntu-rgb+d', 'strategy': 'spatial'},
               edge_importance_weighting=True, num_class=10)


def pooled(model, kinds, attribute):
    return torch.cat([getattr(m, attribute).detach().flatten() for m in model.modules()
                      if isinstance(m, kinds) and getattr(m, attribute) is not None])


def test_family_init_values():
    torch.manual_seed(0)
    model = SkeletonCLR(**ENCODER)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.apply(family_weights_init)
    conv = pooled(model, (nn.Conv2d, nn.Linear, nn.Conv1d), 'weight')
    assert abs(conv.std().item() - 0.02) < 1e-3 and abs(conv.mean().item()) < 1e-3
    assert pooled(model, (nn.Conv2d, nn.Linear), 'bias').abs().max() == 0
    bn = pooled(model, nn.modules.batchnorm._BatchNorm, 'weight')
    assert abs(bn.mean().item() - 1) < 5e-3 and abs(bn.std().item() - 0.02) < 5e-3
    assert pooled(model, nn.modules.batchnorm._BatchNorm, 'bias').abs().max() == 0
    # the key encoder is drawn independently of the query encoder (the reference's order)
    q, k = model.encoder_q.fc[0].weight, model.encoder_k.fc[0].weight
    assert not torch.equal(q, k)
    # what it does not touch: the adjacency, edge importances, BN running statistics, the queue
    state = model.state_dict()
    for key in ('encoder_q.A', 'encoder_q.edge_importance.0', 'encoder_q.data_bn.running_var', 'queue'):
        assert torch.equal(state[key], before[key]), key
    # a BatchNorm without affine parameters (MoCo v3 projector output) is left alone
    bn = nn.BatchNorm1d(4, affine=False)
    bn.apply(family_weights_init)


def build(processor, tmp_path, name, **overrides):
    path = write_config(tmp_path, work_dir=str(tmp_path / name), **overrides)
    return processor(['--config', path])


def test_pretraining_applies_it_and_can_switch_it_off(tmp_path):
    p = build(PretrainProcessor, tmp_path, 'on', weights_init=True)
    q, k = p.model.encoder_q, p.model.encoder_k
    assert not torch.equal(q.fc[0].weight, k.fc[0].weight)
    assert q.fc[0].bias.abs().max() == 0 and k.fc[2].bias.abs().max() == 0
    off = build(PretrainProcessor, tmp_path, 'off', weights_init=False)
    q, k = off.model.encoder_q, off.model.encoder_k
    assert torch.equal(q.fc[0].weight, k.fc[0].weight) and q.fc[0].bias.abs().max() > 0


def linear_overrides(tmp_path, weights):
    cfg = yaml.safe_load(open(write_config(tmp_path)))
    feeder = dict(cfg['train_feeder_args'], shear_amplitude=-1, temperal_padding_ratio=-1)
    args = dict(cfg['model_args'], pretrain=False)
    return dict(train_feeder='feeder.ntu_feeder.Feeder_single', train_feeder_args=feeder, test_feeder_args=feeder,
                model_args=args, weights=weights, ignore_weights=['encoder_q.fc', 'encoder_k', 'queue'])


def test_linear_evaluation_initialises_then_loads_the_encoder(tmp_path):
    pre = build(PretrainProcessor, tmp_path, 'pre', weights_init=False)
    weights = str(tmp_path / 'pre.pt')
    torch.save(pre.model.state_dict(), weights)
    lin = build(LinearEvaluation, tmp_path, 'linear', weights_init=True, **linear_overrides(tmp_path, weights))
    encoder = lin.model.encoder_q
    # the encoder holds the loaded weights, untouched by the initialisation that came first
    assert torch.equal(encoder.data_bn.weight, pre.model.encoder_q.data_bn.weight)
    assert torch.equal(encoder.st_gcn_networks[0].gcn.conv.weight, pre.model.encoder_q.st_gcn_networks[0].gcn.conv.weight)
    # fc (not in the checkpoint) has the family's initialisation
    assert encoder.fc.bias.abs().max() == 0 and encoder.fc.weight.std().item() < 0.03
    fin = build(FinetuneEvaluation, tmp_path, 'finetune', weights_init=True, **linear_overrides(tmp_path, weights))
    assert fin.arg.weights_init is True and fin.model.encoder_q.fc.bias.abs().max() == 0


def test_recognition_keeps_its_own_initialisation_by_default():
    parser = Recognition.get_parser()
    assert parser.get_default('weights_init') is False
    assert LinearEvaluation.get_parser().get_default('weights_init') is True
    assert FinetuneEvaluation.get_parser().get_default('weights_init') is True
    assert PretrainProcessor.get_parser().get_default('weights_init') is True
