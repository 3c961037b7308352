"""``evaluate`` wrapper of :func:`medmae.training.metrics.segmentation_metrics` (offline use:
``evaluate.load(medmae.training.metrics.metric_script_path("medmae_segmentation"))``)."""

import datasets
import evaluate

from medmae.training.metrics import segmentation_metrics

_DESCRIPTION = """Dice, Jaccard, HD95 and ASD of binary masks, per case and averaged, with defined
values for empty masks (a missed lesion gets the worst-case distance instead of being dropped).
See medmae.training.metrics for every convention."""

_KWARGS = """
Args:
    predictions: list of 2-D masks (lists of lists of 0/1).
    references: list of 2-D ground-truth masks of the same shapes.
    spacing: None (pixels), one (row, col) pixel spacing, or one per case.
    missing_distance: "diagonal" (default), a number, or None (exclude such cases and count them).
Returns: the dict of medmae.training.metrics.segmentation_metrics.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class MedmaeSegmentation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                "references": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
            }))

    def _compute(self, predictions, references, spacing=None, missing_distance="diagonal"):
        return segmentation_metrics(predictions, references, spacing=spacing,
                                    missing_distance=missing_distance)
