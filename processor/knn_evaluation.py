"""kNN evaluation of a frozen encoder: L2-normalised pooled features, weighted voting (Wu et al., 2018):
each of the k nearest training features votes for its class with weight exp(cos / t), t = 0.1."""
import torch
import torch.nn.functional as F

from processor.evaluation import SplitFeatures
from processor.metrics import score_metrics
from processor.processor import Processor
from processor.recipes import KNN, recipe_defaults
from processor.verdict import add_verdict
from torchlight.io import UserError


@torch.no_grad()
def knn_predict(train_feats, train_labels, test_feats, k, temperature=0.1, num_class=None, chunk=1024):
    """Class scores (N_test, num_class) of weighted kNN on L2-normalised features."""
    num_class = num_class or int(train_labels.max()) + 1
    train_feats = F.normalize(train_feats, dim=1)
    k = min(k, train_feats.size(0))
    scores = []
    for start in range(0, test_feats.size(0), chunk):
        sim = F.normalize(test_feats[start:start + chunk], dim=1) @ train_feats.T
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.size(0), num_class, device=sim.device, dtype=sim.dtype)
        votes.scatter_add_(1, train_labels[top_idx], (top_sim / temperature).exp())
        scores.append(votes)
    return torch.cat(scores)


@torch.no_grad()
def knn_scores(train, test, ks, temperature=0.1):
    """Weighted-kNN vote scores for every k in ``ks``: {k: (N_test, num_class)}.  ``train`` and ``test`` are
    (features, labels) of the memory bank and of the evaluated split (the one implementation of the kNN
    protocol, used by ``knn_evaluation`` and by the kNN monitor of pretraining, ``knn_interval``)."""
    (train_feats, train_labels), (test_feats, test_labels) = train, test
    num_class = int(max(train_labels.max(), test_labels.max())) + 1
    return {k: knn_predict(train_feats, train_labels, test_feats, k, temperature, num_class) for k in ks}


@torch.no_grad()
def knn_top1(train, test, ks, temperature=0.1):
    """Weighted-kNN top-1 for every k in ``ks``: {k: top1} (``knn_scores``)."""
    labels = test[1]
    return {k: (scores.argmax(1) == labels).float().mean().item()
            for k, scores in knn_scores(train, test, ks, temperature).items()}


class KNNEvaluation(Processor):
    """``knn_evaluation``: no training; top-1 for every k in ``knn_k`` (config/base/protocol/knn.yaml: 10, 20, 40) on the frozen
    features of both splits (``SplitFeatures``, as linear evaluation extracts them)."""

    protocol = 'knn_evaluation'
    trains_on_train_split = False        # the training split is the memory bank: every clip, in order

    @staticmethod
    def get_parser(add_help=False):
        parser = Processor.get_parser(add_help=add_help)
        parser.description = 'kNN evaluation of a frozen encoder'
        parser.add_argument('--knn_k', type=int, default=None, nargs='+', help='numbers of neighbours')
        parser.add_argument('--knn_temperature', type=float, default=None, help='temperature of the vote weights')
        return recipe_defaults(parser, KNN)

    def loads_train_split(self):
        return True                    # the labelled neighbours, whatever the phase

    def load_data(self):
        super().load_data()
        if 'train' not in self.data_loader or 'test' not in self.data_loader:
            raise UserError('knn_evaluation needs train_feeder_args (the labelled neighbours) and test_feeder_args')
        self.split_features = SplitFeatures(self)

    def load_optimizer(self):
        self.optimizer = None

    def save_latest(self, next_epoch):
        pass

    def start(self):
        """One ``metrics.jsonl`` line per k (``score_metrics`` of the vote scores, no loss)."""
        test = self.split_features('test')[:2]
        scores = knn_scores(self.split_features('train')[:2], test, self.arg.knn_k, self.arg.knn_temperature)
        self.metrics.start()
        self.knn_accuracy = {}
        for k, votes in scores.items():
            record = score_metrics(votes, test[1], loss=False)
            self.knn_accuracy[k] = record['top1']
            self.metrics.write(dict(epoch=0, k=k, **record))
            self.print_log(f"\tkNN k={k} t={self.arg.knn_temperature}: top1 {100 * record['top1']:.2f}% | "
                           f"top5 {100 * record['top5']:.2f}% | class top1 {100 * record['class_top1']:.2f}%")
        self.log_scalars('knn', {f'top1_k{k}': v for k, v in self.knn_accuracy.items()}, 0)
        if self.is_main:
            first = self.arg.knn_k[0]
            result = {'protocol': self.protocol, 'top1_last': round(100 * self.knn_accuracy[first], 4), 'k': first,
                      'top1_by_k': {str(k): round(100 * v, 4) for k, v in self.knn_accuracy.items()},
                      'num_class': self.arg.model_args.get('num_class'), 'weights': self.arg.weights}
            self.io.save_json(add_verdict(self, result), 'result.json')
        self.finish()
        return self.knn_accuracy

    def primary_top1(self, outcome=None):
        """Top-1 (percent) at the first k of ``knn_k``."""
        return None if outcome is None else round(100 * outcome[self.arg.knn_k[0]], 4)
