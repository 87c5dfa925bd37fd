"""PLC settings are checked once, when the station file is loaded."""

from __future__ import annotations

import pytest

from station.config import ConfigError, PlcConfig, load_station_config

STATION = """
active_recipe = "widget"
[[cameras]]
type = "simulated"
[plc]
{plc}
"""


def load(tmp_path, plc: str):
    path = tmp_path / "station.toml"
    path.write_text(STATION.format(plc=plc))
    return load_station_config(path)


def test_allow_list_accepts_addresses_and_networks(tmp_path):
    cfg = load(tmp_path, 'allow = ["127.0.0.2", "10.0.0.0/24", "::1"]')
    assert cfg.plc.allow == ["127.0.0.2", "10.0.0.0/24", "::1"]


def test_allow_list_rejects_a_host_name_naming_the_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, 'allow = ["plc.local"]')
    assert "plc.allow" in str(err.value) and "plc.local" in str(err.value)


def test_poll_period_over_10_ms_is_refused(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, 'mode = "client"\npoll_period_ms = 20')
    assert "plc.poll_period_ms" in str(err.value)


def test_overlapping_client_blocks_are_refused():
    with pytest.raises(ValueError, match="overlaps"):
        PlcConfig(mode="client", input_base=110, output_base=100)
    with pytest.raises(ValueError, match="overlaps"):
        PlcConfig(mode="client", input_base=118, output_base=100)  # the output block is 20 words (100-119)
    PlcConfig(mode="client", input_base=120, output_base=100)  # adjacent is fine
