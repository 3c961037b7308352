"""``evaluate`` wrapper of :func:`medmae.training.metrics.classification_metrics` (offline use:
``evaluate.load(medmae.training.metrics.metric_script_path("medmae_classification"))``)."""

import datasets
import evaluate

from medmae.training.metrics import classification_metrics

_DESCRIPTION = """Accuracy, macro and per-class precision / recall / F1 and the confusion matrix
(scikit-learn, zero_division=0, undefined classes listed)."""

_KWARGS = """
Args:
    predictions: predicted class indices.
    references: true class indices.
    num_classes: number of classes (so absent classes count in the macro average).
    class_names: optional names.
Returns: the dict of medmae.training.metrics.classification_metrics.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class MedmaeClassification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}))

    def _compute(self, predictions, references, num_classes=None, class_names=None):
        return classification_metrics(references, predictions, num_classes=num_classes,
                                      class_names=class_names)
