"""The maths, with no Lightning: the losses and their hand-derived gradients (vectorized and with loops), the
grid kernels that score K configs in one product, numeric gradient checks, and GridSGD's update."""
