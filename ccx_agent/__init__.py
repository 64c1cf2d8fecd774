"""ccx-agent: the Smart Licensing product-instance agent of a Cisco UCCX cluster."""

__version__ = "0.1.0"
