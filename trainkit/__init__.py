"""A hands-on course in training AI models, from raw data to a deployed, monitored service, and the library its notebooks write.

Modules:

- `trainkit.callbacks`: A progress bar, a live loss plot, TensorBoard and MLflow logs, early stopping, checkpoints and a guard against NaN: each a small class that hooks into the Learner's events.
- `trainkit.clean`: Clean real messy records with a report of every change, decide about missing values column by column, and check the result against a schema.
- `trainkit.cli`: `trainkit run`: every step of the course, from raw records to artifacts, as one reproducible command driven by one config file.
- `trainkit.data`: Collect the same records from a SQLite database, a CSV file, a JSON web API and an HTML page, and check that the four agree.
- `trainkit.datasets`: One object that carries tensors, names and a profile from data preparation into training: penguins (tabular), digits (images), breast cancer (binary), diabetes (regression) and sunspots (a time series).
- `trainkit.diagnose`: Learning curves against capacity and training-set size — polynomials first, then a real network — and `diagnose`, which reads a training history and says whether a run underfits, overfits, fits well or is not done.
- `trainkit.edge`: Dynamic int8 quantization of a bundle's ONNX graph with ONNX Runtime's own tool, written as a verified folder only after it agrees with the fp32 model within a stated tolerance; file size, accuracy and CPU latency measured before and after.
- `trainkit.evaluate`: Accuracy, precision and recall, the confusion matrix at a threshold, ROC-AUC and average precision, calibration, regression errors and per-group slices: one `Report` per model and split, scored with scikit-learn, shown as a table, saved as JSON and Markdown.
- `trainkit.explain`: Permutation importance for any model, checked against scikit-learn; integrated gradients for a network, checked against Captum; and the checks that tell an explanation from a pretty picture.
- `trainkit.export`: Weights as safetensors, the fitted preprocessing as JSON, an ONNX graph and a manifest with the schema, metrics, training-data profile and a sha256 of every file: written atomically, verified before anything in it is read, and predicting on raw records exactly as the notebook did.
- `trainkit.graphs`: Record a whole epoch of training steps on the GPU once, then replay it with one call: how the Learner's `cuda_graph=True` works, and why it makes small models several times faster.
- `trainkit.label`: Label records with a widget that saves to the course database, write rules that label for you, and measure how far to trust either.
- `trainkit.learner`: Initialise, feed forward, compute the loss, backpropagate, update, repeat: first on one weight, then in twenty lines by hand, then in a `Learner` that does the same thing fast on a CPU or a GPU, resumes exactly after a crash, and reports what it is doing.
- `trainkit.models`: Linear and logistic regression, trees and forests, an MLP, a CNN, a GRU and a small Transformer — each on data that suits it, with what it costs and when to choose it.
- `trainkit.monitor`: A drift monitor compares a sliding window of the records a model is asked about with the profile of the data it was trained on: PSI on binned features, a KS or χ² test of whether the change could be chance, and one alarm that is neither deaf to real shifts nor raised by chance.
- `trainkit.panel`: Sliders for the hyperparameters, a Train button, curves that draw themselves while the model trains, a history of runs and a comparison of two: feel what each knob does.
- `trainkit.plots`: The pictures behind a report's numbers: the confusion matrix, ROC and precision–recall curves, the reliability diagram, residual plots, and a slider for a binary classifier's decision threshold.
- `trainkit.predictor`: What a service needs between "a verified bundle on disk" and "a JSON answer": a strict request model generated from the bundle's schema, the preprocessing compiled for single records, ONNX Runtime, and dynamic batching — checked against the notebook model to 1e-5.
- `trainkit.prep`: Split 70/15/15 without leaking rows or animals between splits, then fit the preprocessing on the training split alone.
- `trainkit.registry`: A local folder of verified bundles with their metrics and lineage, a listing that compares them, and a `CURRENT` pointer that is switched atomically, only to a bundle that verifies, and can be rolled back.
- `trainkit.serve`: A FastAPI service behind uvicorn: strict request models generated from the bundle's schema, predictions through ONNX Runtime, Prometheus metrics with drift, an optional API key, and new versions picked up from the registry without dropping a request.
- `trainkit.tune`: Cross-validation to compare models honestly, hyperparameter search with Optuna, regularisation and early stopping against overfitting, and a learning-rate finder. (Step 4b adds a tuning panel to feel what each knob does.)"""

__version__ = "0.1.0"
