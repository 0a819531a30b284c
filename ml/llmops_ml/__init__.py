"""Model code shared by training, evaluation and inference; imports nothing of the platform.

- `placement`: where a model runs and in which dtype (one rule for every load);
- `loading`: tokenizers, base models (4-bit NF4 included), adapters, merged models, and the
  `LoadedModel` that generation and scoring take;
- `merge`: an adapter merged into its base and written to disk atomically;
- `attention`, `varlen_attention`: the attention for padding-free and packed batches;
- `generation`: batched, left-padded generation (what eval runs and serving will run);
- `batching`: continuous batching over one base with a LoRA adapter per row (what serving runs),
  `sampling`, each row's next token with its own sampling parameters, and `stacked_lora`, rows
  of several adapters in one forward;
- `scoring`: teacher-forced log-probabilities of continuations.

Importing the package imports nothing heavy; each module imports torch and the Hugging Face stack.
"""
