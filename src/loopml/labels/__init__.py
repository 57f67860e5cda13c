"""Labels where they count: the label queue, Label Studio, and label-noise checks."""
