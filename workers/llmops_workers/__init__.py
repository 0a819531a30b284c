"""Workers and the ML engines they run. Importing this package does not import torch."""
