"""The registry of processors: ``python main.py <name> --config <yaml>``."""
PROCESSORS = {
    'pretrain': 'processor.pretrain.PretrainProcessor',          # any method (model: in the YAML)
    'pretrain_skeletonclr': 'processor.pretrain.PretrainProcessor',
    'pretrain_aimclr': 'processor.pretrain.PretrainProcessor',
    'pretrain_msmclr': 'processor.pretrain.PretrainProcessor',
    'pretrain_mica': 'processor.pretrain.PretrainProcessor',
    'pretrain_skelemixclr': 'processor.pretrain.PretrainProcessor',
    'linear_evaluation': 'processor.linear_evaluation.LinearEvaluation',
    'recognition': 'processor.recognition.Recognition',
    'finetune_evaluation': 'processor.finetune_evaluation.FinetuneEvaluation',
    'knn_evaluation': 'processor.knn_evaluation.KNNEvaluation',
}
