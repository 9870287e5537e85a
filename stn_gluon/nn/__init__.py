"""Networks: the spatial ops, the STN blocks, the classifiers, the architecture description, the model zoo
and the shipped weights. Knows nothing of training, data files, export or serving."""
