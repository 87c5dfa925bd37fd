"""The station file (station.toml): cameras, PLC, database, archive, models, inference, HMI, shifts.

Validated once at start-up; unknown keys are errors. Relative paths are taken relative to
the station file's directory. ``StationConfig.embedded()`` is the no-hardware demo setup.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from station.config_errors import ConfigError, StrictModel as Strict, load_toml_model
from station.shifts import Shift, ShiftPlan, system_zone_name


class SimulatedCameraConfig(Strict):
    type: Literal["simulated"] = "simulated"
    name: str = "top"
    seed: int = 1
    width: int = Field(default=640, ge=64)
    height: int = Field(default=480, ge=64)
    defect_rate: float = Field(default=0.3, ge=0, le=1, description="share of parts with a defect")
    classes: list[str] = Field(default_factory=lambda: ["scratch", "crack", "stain"])


class ReplayCameraConfig(Strict):
    type: Literal["replay"] = "replay"
    name: str = "top"
    path: Path  # a folder of images, or a manifest CSV (image, mask, class, ...)
    loop: bool = True
    shuffle_seed: int | None = None


class GenicamCameraConfig(Strict):
    type: Literal["genicam"] = "genicam"
    name: str = "top"
    cti: list[Path] = Field(default_factory=list, description="GenTL producers; GENICAM_GENTL64_PATH is added")
    device: str | int = 0  # serial number, user-defined name, or index
    timeout_ms: int = Field(default=1000, gt=0)
    reconnect_backoff_ms: list[int] = Field(default_factory=lambda: [200, 500, 1000, 2000, 5000])
    num_buffers: int = Field(default=4, ge=1)
    lost_after_timeouts: int = Field(default=3, ge=1, description="timeouts in a row before the device is reconnected")


CameraConfig = Annotated[
    Union[SimulatedCameraConfig, ReplayCameraConfig, GenicamCameraConfig], Field(discriminator="type")
]


def _ip_networks(entries: list[str]) -> list[str]:
    """``entries`` if each is an IP address or network; else the first bad one, named."""
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)") from None
    return entries


class PlcConfig(Strict):
    enabled: bool = True
    mode: Literal["server", "client"] = "server"
    host: str = "127.0.0.1"  # server: bind address; client: the PLC's address
    port: int = Field(default=5020, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    allow: list[str] = Field(default_factory=list, description="server: client IPs allowed; empty: any")
    max_connections: int = Field(default=16, ge=1, le=10_000, description="server: clients connected at once; more are refused at connect")
    idle_timeout_ms: int = Field(default=60_000, ge=100, description="server: a connection without a request for this long is closed")
    # server: a client that never wrote registers 0-3 (not the PLC) gets one answer per this period at most; 0: no limit
    reader_interval_ms: float = Field(default=10.0, ge=0, le=10_000)
    heartbeat_timeout_ms: int = Field(default=2000, gt=0)
    result_buffer: int = Field(default=8, ge=1, le=64)
    poll_period_ms: int = Field(default=10, gt=0, le=10)
    input_base: int = Field(default=0, ge=0)
    output_base: int = Field(default=100, ge=0)
    reconnect_backoff_ms: list[int] = Field(default_factory=lambda: [100, 250, 500, 1000, 2000])

    @field_validator("allow")
    @classmethod
    def _allow_is_ip(cls, entries: list[str]) -> list[str]:
        return _ip_networks(entries)

    @model_validator(mode="after")
    def _blocks_apart(self) -> "PlcConfig":
        # client mode: the 4 input and 20 output words live in the PLC's memory and must not overlap
        if self.input_base < self.output_base + 20 and self.output_base < self.input_base + 4:
            raise ValueError(
                f"input_base {self.input_base} (4 words) overlaps output_base {self.output_base} (20 words)"
            )
        if self.input_base + 4 > 65536 or self.output_base + 20 > 65536:
            raise ValueError("input_base / output_base blocks must end below register 65536")
        return self


class DatabaseConfig(Strict):
    url: str = "sqlite:///var/station.db"
    # verdicts given and not yet in the database (the backlog): each is in the verdict journal
    queue_size: int = Field(default=10_000, ge=1)
    batch_size: int = Field(default=200, ge=1)
    # where each verdict is written before the PLC hears it (db/journal.py); default: var/journal
    # beside the archive. None only for a history writer used on its own (no journal).
    journal_dir: Path | None = None
    # the backlog at queue_size: "stop" refuses triggers (PLC error code HISTORY_FULL) until it
    # drains; "continue" inspects on and counts the verdicts it cannot record (unrecorded)
    on_history_full: Literal["stop", "continue"] = "stop"


class ArchiveConfig(Strict):
    dir: Path = Path("var/images")
    retention_days: float = Field(default=90, gt=0)
    max_bytes: int = Field(default=20 * 1024**3, gt=0)
    min_age_days: float = Field(default=7, ge=0)


class ExportConfig(Strict):
    """How the CSV export is written for the plant's spreadsheets (db/export.py)."""

    # "," for Excel set up with a decimal comma (German, French, ...): cells are then separated
    # by semicolons and numbers written 0,93, or the file opens as one column of text
    decimal_separator: Literal[".", ","] = "."


class InferenceConfig(Strict):
    backend: Literal["auto", "onnxruntime", "rknn"] = "auto"
    threads: int = Field(default=0, ge=0, description="onnxruntime intra-op threads; 0: all cores")
    npu_cores: int = Field(default=3, ge=1, le=3)


class HmiConfig(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    session_timeout_min: int = Field(default=30, gt=0, description="idle time that signs a user out; also the session cookie's lifetime")
    demo_autologin: bool = Field(default=False, description="demo only: open the operator view without login")
    certfile: Path | None = Field(default=None, description="PEM certificate (chain), absolute path: with keyfile, the HMI serves HTTPS")
    keyfile: Path | None = Field(default=None, description="PEM private key of certfile, absolute path")
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (deploy/README.md); empty: none",
    )

    @field_validator("certfile", "keyfile")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        # checked for shape only: the key may be readable by the station's service user alone,
        # and other commands read this file too; the HMI loads the pair when it starts
        if path is not None and not path.is_absolute():
            raise ValueError(f"{str(path)!r} must be an absolute path (e.g. /etc/station/hmi.pem)")
        return path

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_ip(cls, entries: list[str]) -> list[str]:
        return _ip_networks(entries)

    @model_validator(mode="after")
    def _tls_pair(self) -> "HmiConfig":
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together: give both for HTTPS, or neither")
        return self

    @property
    def tls(self) -> bool:
        """The HMI itself serves HTTPS."""
        return self.certfile is not None


class PipelineConfig(Strict):
    queue_depth: int = Field(default=4, ge=1, description="parts waiting per stage before triggers are refused")
    inference_workers: int = Field(default=1, ge=1, le=8)
    # an image whose header announces more pixels is refused before it is decoded (image_error);
    # 178 MP is Pillow's own ceiling, above which it refuses to open a file at all
    max_image_megapixels: float = Field(default=40.0, gt=0, le=178)

    @property
    def max_image_pixels(self) -> int:
        return int(self.max_image_megapixels * 1_000_000)


class ShiftConfig(Strict):
    name: str = Field(min_length=1, max_length=40)
    start: dt.time = Field(description='local wall-clock time the shift starts, "HH:MM"')
    end: dt.time | None = Field(default=None, description="when it ends (earlier than start: past midnight); "
                                                          "default: the next shift's start")


def _default_calendar() -> list[ShiftConfig]:
    return [ShiftConfig(name=s.name, start=s.start) for s in ShiftPlan.three_shifts().shifts]


class ShiftsConfig(Strict):
    """The shift calendar: the operator's counters count per shift; the history's yield per shift."""

    timezone: str | None = Field(default=None, description="IANA name, e.g. Europe/Berlin; default: the system's")
    calendar: list[ShiftConfig] = Field(default_factory=_default_calendar, min_length=1)

    @model_validator(mode="after")
    def _valid_plan(self) -> "ShiftsConfig":
        self.plan()  # unknown zone, repeated names, overlaps: ValueError at load, with the key
        return self

    def plan(self) -> ShiftPlan:
        """The calendar as a ShiftPlan; a shift without ``end`` runs until the next one starts."""
        ordered = sorted(self.calendar, key=lambda s: s.start)
        starts = [s.start for s in ordered]
        if len(set(starts)) != len(starts):
            raise ValueError(f"two shifts start at the same time: {[f'{t:%H:%M}' for t in starts]}")
        shifts = tuple(
            Shift(s.name, s.start, s.end if s.end is not None else ordered[(i + 1) % len(ordered)].start)
            for i, s in enumerate(ordered)
        )
        return ShiftPlan(shifts, self.timezone or system_zone_name())


class StationConfig(Strict):
    station_id: str = "station-1"
    recipes_dir: Path = Path("recipes")
    active_recipe: str
    models_dir: Path = Path("var/models")
    cameras: list[CameraConfig] = Field(min_length=1)
    plc: PlcConfig = PlcConfig()
    database: DatabaseConfig = DatabaseConfig()
    archive: ArchiveConfig = ArchiveConfig()
    inference: InferenceConfig = InferenceConfig()
    hmi: HmiConfig = HmiConfig()
    pipeline: PipelineConfig = PipelineConfig()
    shifts: ShiftsConfig = ShiftsConfig()
    export: ExportConfig = ExportConfig()

    @model_validator(mode="after")
    def _unique_cameras(self) -> "StationConfig":
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names repeat: {names}")
        return self

    def camera(self, name: str) -> CameraConfig:
        for c in self.cameras:
            if c.name == name:
                return c
        raise KeyError(name)

    def resolved(self, base: Path) -> "StationConfig":
        """Paths made absolute against ``base`` (the station file's directory)."""

        def fix(p: Path) -> Path:
            return p if p.is_absolute() else (base / p).resolve()

        cams = []
        for c in self.cameras:
            if isinstance(c, ReplayCameraConfig):
                c = c.model_copy(update={"path": fix(c.path)})
            elif isinstance(c, GenicamCameraConfig):
                c = c.model_copy(update={"cti": [fix(p) for p in c.cti]})
            cams.append(c)
        url = self.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            url = prefix + str(fix(Path(url[len(prefix):])))
        return self.model_copy(
            update={
                "recipes_dir": fix(self.recipes_dir),
                "models_dir": fix(self.models_dir),
                "cameras": cams,
                "database": self.database.model_copy(update={
                    "url": url,
                    "journal_dir": fix(self.database.journal_dir or self.archive.dir.parent / "journal"),
                }),
                "archive": self.archive.model_copy(update={"dir": fix(self.archive.dir)}),
            }
        )

    @classmethod
    def embedded(cls, root: Path, **overrides) -> "StationConfig":
        """The demo station: simulated camera, CPU inference, loopback Modbus, SQLite, local HMI."""
        data = {
            "station_id": "demo",
            "recipes_dir": "recipes",
            "active_recipe": "demo-part",
            "models_dir": "var/models",
            "cameras": [{"type": "simulated", "name": "top", "seed": 1}],
            "plc": {"mode": "server", "host": "127.0.0.1", "port": 5020},
            "database": {"url": "sqlite:///var/station.db"},
            "inference": {"backend": "onnxruntime"},
            "hmi": {"host": "127.0.0.1", "port": 8080, "demo_autologin": True},
        }
        data.update(overrides)
        return cls.model_validate(data).resolved(root)


def load_station_config(path: Path | str) -> StationConfig:
    """Load station.toml; raises ConfigError naming file, key and reason."""
    path = Path(path)
    config = load_toml_model(path, StationConfig)
    return config.resolved(path.resolve().parent)


__all__ = ["StationConfig", "ConfigError", "load_station_config"]
