"""GR00T N1.5 in Flax: the Eagle 2.5 VL backbone, the flow-matching action head, the processor and the
two-way checkpoint converter (``python -m gr00t_port.convert``)."""
