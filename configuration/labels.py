"""Label vocabularies of the datasets medmae reads, in the order checkpoints use them.

One place for the names that data loaders (``medmae.training.data``), model cards (``medmae.hub_cards``)
and configurations share; imports nothing.
"""

#: BUSI diagnosis classes (ClassLabel order).
BUSI_CLASSES = ("normal", "benign", "malignant")
#: SIIM-ACR image-level label: pneumothorax absent / present.
SIIM_CLASSES = ("absent", "present")
#: ChestX-ray14 labels in the conventional paper order (medical_mae ``dataloader_med.py``); the
#: CSV spelling ``Pleural_Thickening`` with an underscore is kept (Q14).
NIH_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
              "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
              "Pleural_Thickening", "Hernia")
#: The 14 CheXpert observation columns, in CSV order.
CHEXPERT_OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices")
#: The 5 competition labels in medical_mae's model-output order (``train_cols``), so its
#: classification heads convert without permutation.
CHEXPERT_COMPETITION_LABELS = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis",
                               "Pleural Effusion")
#: Labels mapped to 1 by the "mixed" uncertainty policy (U-Ones); all others use U-Zeros
#: (jfhealthcare/Chexpert, medical_mae ``dataloader_med.py``).
MIXED_POLICY_ONES = ("Atelectasis", "Edema")
