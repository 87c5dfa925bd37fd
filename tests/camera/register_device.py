"""A GenApi node map over an in-memory register space: the trigger, geometry and exposure nodes
the SFNC defines, for the device features viky.cti does not have (trigger modes, offsets,
exposure, read-only nodes).

The node map is the real GenApi (genicam.genapi.NodeMap) evaluating a real GenICam XML; only
the device's register space is memory (MemoryPort implements GenApi's AbstractPort, the same
interface harvesters' own port adapter implements), since no such camera exists here.
"""

from __future__ import annotations

from genicam.genapi import AbstractPort, EAccessMode, NodeMap

_HEADER = """<?xml version="1.0" encoding="utf-8"?>
<RegisterDescription ModelName="RegisterCam" VendorName="StationTests" ToolTip="register model for tests"
  StandardNameSpace="None" SchemaMajorVersion="1" SchemaMinorVersion="1" SchemaSubMinorVersion="0"
  MajorVersion="1" MinorVersion="0" SubMinorVersion="0"
  ProductGuid="5b1e6a40-0c57-4a8e-9a59-0d1f1f7a0001" VersionGuid="5b1e6a40-0c57-4a8e-9a59-0d1f1f7a0002"
  xmlns="http://www.genicam.org/GenApi/Version_1_1"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.genicam.org/GenApi/Version_1_1 http://www.genicam.org/GenApi/GenApiSchema_Version_1_1.xsd">
"""


def _reg(name: str, address: int, kind: str = "IntReg", access: str = "RW") -> str:
    sign = "<Sign>Unsigned</Sign>" if kind == "IntReg" else ""
    return (f'  <{kind} Name="{name}Reg"><Address>{address:#x}</Address><Length>{8 if kind == "FloatReg" else 4}</Length>'
            f"<AccessMode>{access}</AccessMode><pPort>Device</pPort><Cachable>NoCache</Cachable>{sign}"
            f"<Endianess>LittleEndian</Endianess></{kind}>\n")


def _enum(name: str, entries: list[str]) -> str:
    body = "".join(f'<EnumEntry Name="{e}" NameSpace="Standard"><Value>{i}</Value></EnumEntry>' for i, e in enumerate(entries))
    return f'  <Enumeration Name="{name}" NameSpace="Standard">{body}<pValue>{name}Reg</pValue></Enumeration>\n'


def _int(name: str, lo: int, hi: int, inc: int = 1) -> str:
    return (f'  <Integer Name="{name}" NameSpace="Standard"><pValue>{name}Reg</pValue>'
            f"<Min>{lo}</Min><Max>{hi}</Max><Inc>{inc}</Inc></Integer>\n")


# feature name -> (node XML, register kind, register access, initial register value)
FEATURES = {
    "TriggerSelector": (_enum("TriggerSelector", ["FrameStart", "AcquisitionStart"]), "IntReg", "RW", 0),
    "TriggerMode": (_enum("TriggerMode", ["Off", "On"]), "IntReg", "RW", 0),
    "TriggerSource": (_enum("TriggerSource", ["Software", "Line0", "Line1"]), "IntReg", "RW", 0),
    "TriggerActivation": (_enum("TriggerActivation", ["RisingEdge", "FallingEdge"]), "IntReg", "RW", 1),
    "TriggerSoftware": ('  <Command Name="TriggerSoftware" NameSpace="Standard"><pValue>TriggerSoftwareReg</pValue>'
                        "<CommandValue>1</CommandValue></Command>\n", "IntReg", "RW", 0),
    "AcquisitionMode": (_enum("AcquisitionMode", ["Continuous", "SingleFrame"]), "IntReg", "RW", 1),
    "PixelFormat": (_enum("PixelFormat", ["Mono8", "Mono12", "BayerRG8"]), "IntReg", "RW", 0),
    "Width": (_int("Width", 16, 1024, 16), "IntReg", "RW", 1024),
    "Height": (_int("Height", 16, 768, 2), "IntReg", "RW", 768),
    "OffsetX": (_int("OffsetX", 0, 1008, 16), "IntReg", "RW", 0),
    "OffsetY": (_int("OffsetY", 0, 752, 2), "IntReg", "RW", 0),
    "ExposureTime": ('  <Float Name="ExposureTime" NameSpace="Standard"><pValue>ExposureTimeReg</pValue>'
                     "<Min>10</Min><Max>1000000</Max><Unit>us</Unit></Float>\n", "FloatReg", "RW", 0),
    "ReverseX": ('  <Boolean Name="ReverseX" NameSpace="Standard"><pValue>ReverseXReg</pValue>'
                 "<OnValue>1</OnValue><OffValue>0</OffValue></Boolean>\n", "IntReg", "RW", 0),
    "SensorWidth": ('  <Integer Name="SensorWidth" NameSpace="Standard"><pValue>SensorWidthReg</pValue></Integer>\n',
                    "IntReg", "RO", 1024),
}


class MemoryPort(AbstractPort):
    """GenApi port over a bytearray; records every write as (address, bytes)."""

    def __init__(self, size: int = 512):
        super().__init__()
        self.memory = bytearray(size)
        self.writes: list[tuple[int, bytes]] = []

    def is_open(self) -> bool:
        return True

    def get_access_mode(self):
        return EAccessMode.RW

    def read(self, address: int, length: int) -> bytes:
        return bytes(self.memory[address:address + length])

    def write(self, address: int, value: bytes) -> None:
        self.memory[address:address + len(value)] = value
        self.writes.append((address, bytes(value)))


def register_node_map(omit: tuple[str, ...] = ()):
    """(node_map, port, address_of) for a device with FEATURES except ``omit``."""
    xml, addresses = [_HEADER], {}
    port = MemoryPort()
    features = [n for n in FEATURES if n not in omit]
    xml.append('  <Category Name="Root" NameSpace="Standard">'
               + "".join(f"<pFeature>{n}</pFeature>" for n in features) + "</Category>\n")
    address = 0
    for name in features:
        node, kind, access, initial = FEATURES[name]
        xml.append(node)
        xml.append(_reg(name, address, kind, access))
        addresses[name] = address
        if kind == "IntReg":
            port.memory[address:address + 4] = int(initial).to_bytes(4, "little")
        address += 8
    xml.append('  <Port Name="Device" NameSpace="Standard"/>\n</RegisterDescription>\n')
    node_map = NodeMap()
    node_map.load_xml_from_string("".join(xml))
    node_map.connect(port, "Device")
    return node_map, port, addresses
