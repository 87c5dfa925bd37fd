"""Child process for the kill -9 test: a HistoryWriter fed as fast as it takes results.

usage: python history_kill9_worker.py URL ARCHIVE_DIR SEED
Prints "ready" once the writer started (schema migrated). Runs until killed. Every
inspection has 2 views, so 3 images (2 raw + overlay) are wanted for each: the test checks
that each stored inspection has all its defects and images (or counts them as dropped).
"""

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from history_testkit import make_inspection  # noqa: E402

from station.db.writer import HistoryWriter  # noqa: E402
from station.alarms import AlarmBoard  # noqa: E402
from station.config import ArchiveConfig, DatabaseConfig  # noqa: E402
from station.recipe import load_recipe  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    url, archive, seed = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    text = (REPO / "recipes" / "demo-part.toml").read_text().replace("pass_sample_rate = 0.05", "pass_sample_rate = 1.0")
    loaded = load_recipe(REPO / "recipes" / "demo-part.toml", text=text)
    writer = HistoryWriter(
        DatabaseConfig(url=url, queue_size=500, batch_size=25),
        ArchiveConfig(dir=archive, retention_days=3650, min_age_days=0),
        AlarmBoard(),
        "kill9",
        reconcile_grace_s=3600,  # orphan files are the test's to count, not the writer's to sweep
    )
    writer.start()
    print("ready", flush=True)
    rng = random.Random(seed)
    seq = seed * 1_000_000
    while True:
        for _ in range(10):
            seq += 1
            writer.publish(make_inspection(seq, reject=rng.random() < 0.5, n_defects=rng.randrange(0, 6),
                                           views=("top", "side"), size=(48, 64), rng=rng, recipe=loaded))
        time.sleep(0.002)


if __name__ == "__main__":
    main()
