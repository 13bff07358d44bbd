"""Finetune and semi-supervised evaluation: the pretrained encoder plus a classifier, all trainable and
in ``train()`` mode (the reference code finetunes in ``eval()`` mode by mistake).

The recipe is config/base/protocol/finetune.yaml (the family's; the parser's defaults).  Semi-supervised
runs use ``train_feeder: feeder.ntu_feeder.Feeder_semi``
with ``label_percent: 0.01 | 0.1`` (class-balanced, seeded by ``semi_seed``) and the semi recipe in
their YAML (lr 0.05, x0.1 at 40); the chosen subset is logged and written to ``semi_subset.txt``.
"""
import os

from feeder.ntu_feeder import Feeder_semi
from processor.recipes import FINETUNE, recipe_defaults
from processor.recognition import Recognition
from torchlight.io import atomic_write


class FinetuneEvaluation(Recognition):
    """``finetune_evaluation``: like ``recognition`` (whole encoder trained with cross-entropy) but
    started from pretrained weights (``weights`` + ``ignore_weights``) with the finetune recipe."""

    protocol = 'finetune_evaluation'

    @staticmethod
    def get_parser(add_help=False):
        parser = Recognition.get_parser(add_help=add_help)
        parser.description = 'Finetune (or semi-supervised) evaluation of a pretrained encoder'
        return recipe_defaults(parser, FINETUNE)

    def load_weights(self):
        if self.arg.phase == 'train' and not self.arg.weights:
            self.print_log('Notice: no pretrained weights given: finetuning from a random initialisation.')
        super().load_weights()

    def load_data(self):
        super().load_data()
        feeder = self.train_feeder
        self.semi_subset = None               # written to semi_subset.txt once the run starts
        if isinstance(feeder, Feeder_semi):
            names = [feeder.sample_name[i] for i in feeder.index]
            counts = {int(c): int((feeder.label[feeder.index] == c).sum()) for c in sorted(set(feeder.label.tolist()))}
            self.print_log(f'Semi-supervised: {len(names)} labelled samples ({100 * feeder.label_percent:g}% per class, '
                           f'semi_seed {feeder.semi_seed}); per class {counts}; list in semi_subset.txt')
            self.semi_subset = names

    def claim_work_dir(self):
        super().claim_work_dir()
        if self.semi_subset is not None and self.is_main:
            atomic_write(os.path.join(self.arg.work_dir, 'semi_subset.txt'),
                         lambda f: f.write('\n'.join(self.semi_subset) + '\n'), mode='w')
