"""Worker of ``test_segmentation_eval.test_two_processes_gather_only_per_case_values_and_match`` (run under
``torch.distributed.run`` with ``ACCELERATE_USE_CPU``): evaluates the map model of that test on 23 cases, batch 5
per process, and writes the metrics (main process) to ``argv[1]``."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (testing_utils), as pytest's rootdir gives it

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from medmae.training import evaluate  # noqa: E402
from test_segmentation_eval import MapModel, map_items, random_label_maps  # noqa: E402


def main(out_path: str) -> None:
    accelerator = Accelerator(cpu=True)
    pred, true = random_label_maps(6, n=23)
    loader = accelerator.prepare(torch.utils.data.DataLoader(map_items(pred, true, 2), batch_size=5))
    model = accelerator.prepare(MapModel())
    preds = evaluate.predict(model, loader, accelerator, "segcls", ["background", "lesion"])
    if accelerator.is_main_process:
        payload = {"num_processes": accelerator.num_processes, "num_cases": len(preds["seg_cases"]),
                   "metrics": evaluate.compute_metrics("segcls", preds, seg_classes=["background", "lesion"])}
        with open(out_path, "w") as handle:
            json.dump(payload, handle)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
