"""Benchmarks behind `station bench`, `station plc bench` and `station db bench`.

Apart from the runtime on purpose: nothing in station/, db/ or hmi/ imports this package (an
import-linter contract checks it). The HMI's browser benchmark drives Selenium and is not
installed at all: tools/hmi_bench.py.
"""
