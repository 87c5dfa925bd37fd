"""An external PLC for the kill -9 test: a pymodbus master in its own process.

usage: python plc_master_worker.py PORT FIRST_PART_ID RATE OUT_FILE
Connects to the station's Modbus server (retrying until it listens), toggles its heartbeat,
triggers a part whenever the station is READY (at most RATE per second) and acknowledges
every result it is shown. Each event is one line appended to OUT_FILE at once (unbuffered,
so a line written is a line kept whatever happens to either process):

  T <part_id>                          trigger acknowledged (the station took the part)
  F <part_id> <error code>             trigger refused
  R <part_id> <seq> <result code> <P|R> <monotonic s>   a result seen with RESULT_VALID

Exits when the station goes away after it was connected (it was killed), or on SIGTERM.
"""

import logging
import os
import signal
import sys
import time

from pymodbus.client import ModbusTcpClient

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from station.plc.registers import OUTPUT_BASE, OUTPUT_WORDS, Control, Out, Status, join_u32, split_u32  # noqa: E402


def main() -> None:
    port, part, rate, out_path = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    out = os.open(out_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # every line is already written

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # "connection refused" while the station starts
    logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)

    def note(line: str) -> None:
        os.write(out, (line + "\n").encode())

    client = ModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    deadline = time.monotonic() + 60
    while not client.connect():
        if time.monotonic() > deadline:
            sys.exit("station never listened")
        time.sleep(0.05)
    control, triggering, acking, last_beat = 0, False, False, 0.0
    next_trigger = time.monotonic()
    try:
        client.write_register(0, 0, device_id=1)
        while True:
            rr = client.read_holding_registers(OUTPUT_BASE, count=OUTPUT_WORDS, device_id=1)
            if rr.isError():
                raise OSError(str(rr))
            o = rr.registers
            st, now, new = Status(o[Out.STATUS]), time.monotonic(), control
            if now - last_beat > 0.1:
                new ^= Control.HEARTBEAT
                last_beat = now
            if triggering and st & (Status.TRIGGER_ACK | Status.TRIGGER_FAILED):
                note(f"T {part}" if st & Status.TRIGGER_ACK else f"F {part} {o[Out.ERROR_CODE]}")
                part += 1
                new &= ~Control.TRIGGER
                triggering = False
            elif not triggering and not st & (Status.TRIGGER_ACK | Status.TRIGGER_FAILED) and st & Status.READY \
                    and now >= next_trigger:
                hi, lo = split_u32(part)
                client.write_registers(2, [hi, lo], device_id=1)
                new |= Control.TRIGGER
                triggering = True
                next_trigger = max(next_trigger + 1.0 / rate, now)
            if not acking and st & Status.RESULT_VALID:
                pid = join_u32(o[Out.PART_ID_HI], o[Out.PART_ID_LO])
                note(f"R {pid} {o[Out.SEQUENCE]} {o[Out.RESULT_CODE]} {'P' if st & Status.PASS else 'R'} {now:.4f}")
                new |= Control.RESULT_ACK
                acking = True
            elif acking and not st & Status.RESULT_VALID:
                new &= ~Control.RESULT_ACK
                acking = False
            if new != control:
                client.write_register(0, new, device_id=1)
                control = new
            time.sleep(0.002)
    except Exception:  # the station was killed: the connection is gone
        sys.exit(0)


if __name__ == "__main__":
    main()
