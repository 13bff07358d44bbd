"""AimCLR against its reference code (Levigty/AimCLR): six SGD steps from one state, with plain
D3M steps and nearest-neighbour mining (topk 1 and 3), both in float64, equal to 1e-10; checkpoints interchange
strictly; the energy-based drop is the reference's deterministic ``Simam_Drop``.

The fixture was written by ``tests/fixtures/make_aimclr_reference.py`` from the procedure in
``tests/aimclr_reference_procedure.py`` (the reference code itself is not part of this project)."""
import os

import numpy as np
import torch

import aimclr_reference_procedure as proc
from conftest import ROOT
from net.aimclr import AimCLR, EnergyAttentionDrop, energy_attention

FIXTURE = os.path.join(ROOT, 'tests', 'fixtures', 'aimclr_reference_steps.npz')

# the reference AimCLR's state-dict keys outside the two encoders (encoder_q.* / encoder_k.* are
# ST-GCN's with the MoCo v2 head, fc.0 and fc.2)
REFERENCE_EXTRA_KEYS = {'queue', 'queue_ptr'}


def run_our_steps():
    with proc.float64():
        return _run_our_steps()


def _run_our_steps():
    torch.manual_seed(0)
    model = AimCLR(**proc.MODEL_ARGS).to(proc.DTYPE)
    model.load_state_dict(proc.deterministic_state(model.state_dict()), strict=True)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], **proc.SGD)
    losses = []
    for step, (nnm, topk) in enumerate(proc.STEPS):
        im_q, im_k, im_q_extreme = proc.views(step)
        model.mining_epoch, model.topk = (0 if nnm else 1), topk     # the method's own mining keys
        out = model(im_q, im_k, im_q_extreme, epoch=0)
        optimizer.zero_grad()
        out['loss'].backward()
        optimizer.step()
        losses.append([out['loss'].item(), out['loss_info'].item(), out['loss_d3m'].item()])
    return model, np.array(losses)


def test_six_aimclr_steps_equal_the_reference():
    reference = np.load(FIXTURE)
    model, losses = run_our_steps()
    np.testing.assert_allclose(losses, reference['losses'], rtol=1e-10, atol=1e-10)
    state = model.state_dict()
    compared = 0
    for name in reference.files:
        if name.startswith('state/'):
            key = name[len('state/'):]
            assert reference[name].dtype == np.float64, key
            np.testing.assert_allclose(state[key].numpy(), reference[name], rtol=1e-10, atol=1e-10, err_msg=key)
            compared += 1
    assert compared > 100 and 'state/queue' in reference.files


def test_checkpoints_hold_exactly_the_reference_keys_both_ways():
    """Same key set as the reference's AimCLR (pretraining and evaluation models), so checkpoints
    load strictly both ways, and the reference linear evaluation's ignore_weights leave exactly fc."""
    reference = np.load(FIXTURE)
    ours = AimCLR(**proc.MODEL_ARGS)
    assert sorted(ours.state_dict()) == reference['keys'].tolist()
    evaluation = AimCLR(**dict(proc.MODEL_ARGS, pretrain=False))
    assert sorted(evaluation.state_dict()) == reference['eval_keys'].tolist()
    assert {k for k in ours.state_dict() if not k.startswith(('encoder_q.', 'encoder_k.'))} == REFERENCE_EXTRA_KEYS
    kept = {k: v for k, v in ours.state_dict().items()
            if not k.startswith(('encoder_q.fc', 'encoder_k', 'queue'))}
    result = evaluation.load_state_dict(kept, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) == {'encoder_q.fc.weight', 'encoder_q.fc.bias'}
    AimCLR(**proc.MODEL_ARGS).load_state_dict(ours.state_dict(), strict=True)


def test_energy_attention_drop_is_the_reference_threshold_drop():
    torch.manual_seed(3)
    x = torch.randn(6, 5, 7, 4)
    x[:, :, :, 1] *= 4                              # a distinctive joint
    y = EnergyAttentionDrop(keep_prob=0.7)(x)
    assert torch.equal(y, EnergyAttentionDrop(keep_prob=0.7)(x))            # deterministic
    assert not list(EnergyAttentionDrop().state_dict())                      # nothing in checkpoints
    # by hand, as Simam_Drop: joints whose mean attention >= 0.7 are zeroed, survivors scaled by
    # numel / kept over the (N, V) mask; then every entry with attention >= 0.7, scaled likewise
    att = energy_attention(x).numpy().astype(np.float64)
    xn = x.numpy().astype(np.float64)
    joint_keep = (att.mean(axis=(1, 2)) < 0.7).astype(np.float64)            # (N, V)
    z = xn * joint_keep[:, None, None, :] * joint_keep.size / joint_keep.sum()
    entry_keep = (att < 0.7).astype(np.float64)
    z = z * entry_keep * entry_keep.size / entry_keep.sum()
    np.testing.assert_allclose(y.numpy(), z, rtol=1e-5, atol=1e-6)
    assert 0 < joint_keep.sum() < joint_keep.size and 0 < entry_keep.sum() < entry_keep.size
    # gradients flow through the kept entries only, with the rescaling as the factor
    x.requires_grad_(True)
    EnergyAttentionDrop(keep_prob=0.7)(x).sum().backward()
    factor = joint_keep[:, None, None, :] * joint_keep.size / joint_keep.sum() * entry_keep * entry_keep.size / entry_keep.sum()
    np.testing.assert_allclose(x.grad.numpy(), factor, rtol=1e-5)


def test_reference_evaluation_call_form():
    """The reference linear evaluation calls ``model(None, data)``; ``model(data)`` is ours."""
    args = dict(proc.MODEL_ARGS, pretrain=False)
    model = AimCLR(**args).eval()
    x = proc.views(0)[0].float()
    assert torch.equal(model(None, x), model(x))


def test_every_method_checkpoint_holds_only_what_its_modules_need():
    """Parameters, BatchNorm statistics, ST-GCN's adjacency A (a reference key), the MoCo queue and MICA's
    record of label use in pretraining: nothing derived (graph spreads, group-average matrices, text
    anchors) is saved."""
    from torchlight.io import import_class, load_config_file
    for method in ('skeletonclr', 'aimclr', 'msmclr', 'mica', 'skelemixclr'):
        cfg = load_config_file(os.path.join(ROOT, 'config', 'ucla', f'pretrain_{method}.yaml'))
        model = import_class(cfg['model'])(**cfg['model_args'])
        params = {k for k, _ in model.named_parameters()}
        for key in model.state_dict():
            leaf = key.rsplit('.', 1)[-1]
            assert (key in params or leaf in ('running_mean', 'running_var', 'num_batches_tracked', 'A')
                    or key in REFERENCE_EXTRA_KEYS or key == 'pretrain_labels'), f'{method}: {key}'   # MICA's record
