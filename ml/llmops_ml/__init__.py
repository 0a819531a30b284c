"""Model code shared by training, evaluation and inference; imports nothing of the platform."""
