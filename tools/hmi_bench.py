"""HMI benchmarks (not part of the test run): run the demo station with its HMI in this
process, open headless Chromium browsers on the live view, and measure.

    python tools/hmi_bench.py throughput [--seconds 30] [--browsers 0,1,3]
        station throughput (parts/s, parts triggered back to back) with 0, 1 and 3 browsers
        on the operator view, and each browser's live-view update rate (images shown per s);
    python tools/hmi_bench.py soak [--minutes 60] [--interval-ms 200] [--browsers 1]
        server memory (RSS) while parts run and browsers watch; growth must stay < 50 MB.

Browsers run on the same machine here (on the line they are other computers), niced to 19
so they take CPU only when the station leaves some; the figures say so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
COUNT_LOADS_JS = """
const img = document.querySelector("img[src^='data:image/jpeg']");
if (!img) return false;
if (!window.__hmiLoads) { window.__hmiLoads = 0; img.addEventListener('load', () => window.__hmiLoads++); }
return true;
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_browser(url: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1600,1000"):
        opts.add_argument(arg)
    # nice 19: the browser is another machine on the line; here it must not starve the station
    service = Service(CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=opts)
    try:
        import psutil

        for child in psutil.Process(service.process.pid).children(recursive=True):
            child.nice(19)
    except Exception:
        pass
    driver.get(url)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if driver.execute_script("return !!(window.did_handshake && window.socket && window.socket.connected)"):
            break
        time.sleep(0.2)
    return driver


def wait_image_counter(driver, timeout_s: float = 60) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if driver.execute_script(COUNT_LOADS_JS):
            return
        time.sleep(0.2)
    raise RuntimeError("the live image never appeared")


def loads(driver) -> int:
    return int(driver.execute_script("return window.__hmiLoads || 0"))


class Feeder:
    """Triggers parts back to back (retrying when the queue is full) until stopped."""

    def __init__(self, pipeline, interval_s: float = 0.0):
        self.pipeline = pipeline
        self.interval_s = interval_s
        self._stop = threading.Event()
        self.part_id = 1
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from station.pipeline import TriggerRefused

        while not self._stop.is_set():
            try:
                self.pipeline.trigger(self.part_id)
                self.part_id += 1
                if self.interval_s:
                    self._stop.wait(self.interval_s)
            except TriggerRefused:
                time.sleep(0.002)

    def start(self) -> "Feeder":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)


def build_station(root: Path, port: int):
    from station.app import Station
    from station.demo import demo_config

    config = demo_config(root, plc={"enabled": False},
                         hmi={"host": "127.0.0.1", "port": port, "demo_autologin": True})
    try:
        from station.models_store import ensure_recipe_models

        ensure_recipe_models(config.recipes_dir / f"{config.active_recipe}.toml", config.models_dir)
    except ImportError:
        pass
    station = Station(config, plc=False)
    station.start()
    return station


def measure_throughput(station, url: str, browser_counts: list[int], seconds: float, out: dict) -> None:
    for n in browser_counts:
        drivers = [open_browser(url + "/") for _ in range(n)]
        try:
            feeder = Feeder(station.pipeline).start()
            for d in drivers:
                wait_image_counter(d)
            time.sleep(2.0)  # warm up
            import psutil

            me = psutil.Process()
            cpu0 = sum(me.cpu_times()[:2])
            parts0, loads0, t0 = station.stats.parts, [loads(d) for d in drivers], time.monotonic()
            time.sleep(seconds)
            parts1, loads1, t1 = station.stats.parts, [loads(d) for d in drivers], time.monotonic()
            cpu1 = sum(me.cpu_times()[:2])
            feeder.stop()
            station.pipeline.wait_idle(10)
            rate = (parts1 - parts0) / (t1 - t0)
            updates = [(b - a) / (t1 - t0) for a, b in zip(loads0, loads1)]
            cpu_ms = 1000 * (cpu1 - cpu0) / max(1, parts1 - parts0)
            load = os.getloadavg()[0]
            out.setdefault(n, []).append({"parts_per_s": round(rate, 2), "station_cpu_ms_per_part": round(cpu_ms, 1),
                                          "live_updates_per_s": [round(u, 2) for u in updates],
                                          "loadavg_1min": round(load, 2)})
            print(f"browsers={n}: station {rate:.2f} parts/s, {cpu_ms:.1f} ms station-process CPU per part, "
                  f"load {load:.1f}; live view updates per browser: "
                  f"{', '.join(f'{u:.2f}/s' for u in updates) or '-'}", flush=True)
        finally:
            for d in drivers:
                d.quit()


def cmd_throughput(args) -> dict:
    out: dict = {}

    def work(station, url):
        counts = [int(x) for x in args.browsers.split(",")]
        for _ in range(args.rounds):  # interleaved rounds: a busy shared machine drifts
            measure_throughput(station, url, counts, args.seconds, out)

    run_with_hmi(work)

    def med(n: int, key: str) -> float:
        return statistics.median(r[key] for r in out[n])

    base = med(0, "parts_per_s") if 0 in out else None
    base_cpu = med(0, "station_cpu_ms_per_part") if 0 in out else None
    print("\nmedians over rounds")
    print("browsers  parts/s  loss vs 0  CPU ms/part  CPU vs 0  live updates/s per browser")
    for n in sorted(out):
        rate, cpu = med(n, "parts_per_s"), med(n, "station_cpu_ms_per_part")
        loss = f"{100 * (1 - rate / base):5.1f} %" if base else "-"
        dcpu = f"{100 * (cpu / base_cpu - 1):+5.1f} %" if base_cpu else "-"
        ups = [u for r in out[n] for u in r["live_updates_per_s"]]
        print(f"{n:>8}  {rate:>7.2f}  {loss:>9}  {cpu:>11.1f}  {dcpu:>8}  "
              f"{statistics.median(ups) if ups else float('nan'):.2f}")
    print(json.dumps({"throughput": out}))
    return out


def cmd_soak(args) -> dict:
    import psutil

    out: dict = {}

    def work(station, url):
        proc = psutil.Process()
        drivers = [open_browser(url + "/") for _ in range(args.browsers)]
        feeder = Feeder(station.pipeline, args.interval_ms / 1000.0).start()
        samples = []
        try:
            for d in drivers:
                wait_image_counter(d)
            time.sleep(30)  # caches and first allocations settle
            start = time.monotonic()
            end = start + args.minutes * 60
            while time.monotonic() < end:
                rss = proc.memory_info().rss / 2**20
                samples.append((round(time.monotonic() - start), round(rss, 1)))
                print(f"t={samples[-1][0]:>5} s  rss={rss:7.1f} MiB  parts={station.stats.parts}  "
                      f"live loads={[loads(d) for d in drivers]}", flush=True)
                time.sleep(args.sample_s)
            samples.append((round(time.monotonic() - start), round(proc.memory_info().rss / 2**20, 1)))
        finally:
            feeder.stop()
            for d in drivers:
                d.quit()
        growth = samples[-1][1] - samples[0][1]
        out.update({"minutes": args.minutes, "parts": station.stats.parts, "rss_start_mib": samples[0][1],
                    "rss_end_mib": samples[-1][1], "rss_max_mib": max(s[1] for s in samples),
                    "growth_mib": round(growth, 1), "ok": growth < 50})
        print(json.dumps({"soak": out}), flush=True)

    run_with_hmi(work)
    return out


def run_with_hmi(work) -> None:
    """Serve the demo station's HMI in this process and run ``work(station, url)`` beside it."""
    from nicegui import app, ui

    from station.hmi.app import UI_RUN_OPTIONS, mount

    root = Path(tempfile.mkdtemp(prefix="hmi-bench-"))
    (root / "var").mkdir()
    port = free_port()
    station = build_station(root, port)
    mount(station, station.config.hmi)
    url = f"http://127.0.0.1:{port}"

    def runner() -> None:
        try:
            work(station, url)
        except Exception as exc:  # report and stop the server either way
            print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        finally:
            app.shutdown()

    app.on_startup(lambda: threading.Thread(target=runner, daemon=True).start())
    try:
        ui.run(host="127.0.0.1", port=port, storage_secret=os.urandom(16).hex(), **UI_RUN_OPTIONS)
    finally:
        station.stop()
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/hmi_bench.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--browsers", default="0,1,3")
    p.add_argument("--rounds", type=int, default=2)
    p.set_defaults(func=cmd_throughput)
    p = sub.add_parser("soak")
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--interval-ms", type=float, default=200.0)
    p.add_argument("--browsers", type=int, default=1)
    p.add_argument("--sample-s", type=float, default=30.0)
    p.set_defaults(func=cmd_soak)
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
