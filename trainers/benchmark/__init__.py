"""`scripts/benchmark.py`'s measurements: this project's path timed side by side with the usual alternative in one
run (training, distillation, Grad-CAM, faithfulness, the maps dataset, shrunk copies)."""
