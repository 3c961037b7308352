"""``evaluate`` wrapper of :func:`medmae.training.metrics.multilabel_auc` (offline use:
``evaluate.load(medmae.training.metrics.metric_script_path("medmae_multilabel_auc"))``)."""

import datasets
import evaluate

from medmae.training.metrics import multilabel_auc

_DESCRIPTION = """Per-label ROC AUC and mean AUC of multi-label predictions; labels with one class
present are excluded and listed."""

_KWARGS = """
Args:
    prediction_scores: per-sample lists of K scores.
    references: per-sample lists of K targets in {0, 1}.
    label_names: optional K names.
    mask: optional (N, K) 1 = use, 0 = ignore (CheXpert U-Ignore).
Returns: the dict of medmae.training.metrics.multilabel_auc.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class MedmaeMultilabelAuc(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({
                "prediction_scores": datasets.Sequence(datasets.Value("float32")),
                "references": datasets.Sequence(datasets.Value("int64")),
            }))

    def _compute(self, prediction_scores, references, label_names=None, mask=None):
        return multilabel_auc(references, prediction_scores, label_names=label_names, mask=mask)
