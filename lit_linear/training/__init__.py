"""The training glue: the LightningModule, one step's maths as it runs, SGD steps grouped into Lightning batches,
precision, and the Trainer settings a sweep can honour."""
