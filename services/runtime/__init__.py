"""The shared worker runtime. Imports no torch: model code is imported by the adapters when they load."""
