"""The registry of processors: ``python main.py <name> --config <yaml>``."""
PROCESSORS = {
    'pretrain_skeletonclr': 'processor.pretrain.PretrainProcessor',
    'linear_evaluation': 'processor.linear_evaluation.LinearEvaluation',
}
