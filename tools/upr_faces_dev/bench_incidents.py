"""What incidents save the operators: the demo's looping clip (six persons, 3 s each, 2 s
apart) on one camera of an in-process engine for a while, then the count of alerts
(incidents) against the count of sightings. Before incidents every sighting was an alert
(the pipeline's per-camera cooldown is the same), so the sightings are the baseline,
measured in the same run.

    .venv/bin/python -m upr_faces_dev.bench_incidents --minutes 5 [--cooldown 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from upr_faces_engine.server.config import parse_config
from upr_faces_engine.server.engine import Engine

from .clips import demo_media


async def run(faces: Path, models: Path, minutes: float, cooldown: float) -> dict[str, Any]:
    """Run the demo camera for ``minutes``; the counts."""
    with tempfile.TemporaryDirectory(prefix="upr-incidents-") as folder:
        work = Path(folder)
        gallery, clip = demo_media(faces, work / "media")
        engine = Engine(work / "data", version="bench", media=[work / "media"])
        await engine.start()
        try:
            config = {
                "gallery": {"source": "folder", "folder": str(gallery)},
                "models": {"pack": "custom", "folder": str(models)},
                "options": {"cooldown": cooldown},
                "cameras": [{"id": "door", "name": "Entrée", "source": f"file://{clip}"}],
            }
            await engine.apply(parse_config(config, engine.media))
            started = time.monotonic()
            await asyncio.sleep(minutes * 60)
            elapsed = time.monotonic() - started
            alerts = engine.store.alerts(limit=100_000)
        finally:
            await engine.stop()
    sightings = sum(int(a.get("sighting_count") or 1) for a in alerts)
    return {
        "minutes": round(elapsed / 60, 1),
        "cooldown_s": cooldown,
        "persons_seen": len({a["person_id"] for a in alerts}),
        "alerts_before (one per sighting)": sightings,
        "alerts_now (incidents)": len(alerts),
        "awaiting_a_verdict_now": sum(1 for a in alerts if a["state"] == "pending"),
        "ratio": round(sightings / len(alerts), 1) if alerts else None,
    }


def main() -> int:
    """Print the counts as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[2]
    parser.add_argument("--faces", type=Path, default=root.parent / "shared" / "faces")
    parser.add_argument(
        "--models", type=Path, default=root.parent / "shared" / "models" / "test_pack"
    )
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--cooldown", type=float, default=60.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.faces, args.models, args.minutes, args.cooldown))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
