"""The wire contract (weir.proto) and its generated code."""
