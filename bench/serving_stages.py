"""Where a 10,000-row `/predict` request spends its time, stage by stage, in one process.

    python bench/serving_stages.py [--workdir DIR] [--repeats 20]

The figures of `bench/serving.py` are end to end (wrk → uvicorn → answer). This times the
service's own stages on the same model and the same bodies, each on its own, best of
`--repeats`: decoding the body (records, landed records, Arrow), building the feature
columns (the landed form through the model's record step), the compiled scorer, the
answers as JSON, and the prediction log's record batch and Parquet write (on the
background thread in the service, but on the same two cores). `--workdir` is a
`bench/serving.py` workdir (its stack and champion are reused; else one is made).
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def best_ms(step: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--sample", type=float, default=0.08)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    from bench.common import exit_on_sigterm, write_result

    exit_on_sigterm()

    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq
    from fastapi.testclient import TestClient

    from app.stack import stop_stack
    from bench.serving import BATCH_ROWS, bodies, prepare
    from mlops.clients import client_settings
    from mlops.prediction_log import log_batch
    from serving.app import create_app
    from serving.schema import ARROW_STREAM
    from serving.scoring import ScoredRequest

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-stages-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config, version = prepare(workdir, args.sample)
    try:
        payloads = bodies(config)
        with client_settings(config), TestClient(create_app(config)) as client:
            service = client.app.state.service  # type: ignore[attr-defined]
            model = service.watcher.models.primary
            schema, scorer, max_records = service.schema, service.scorer, config.serving.max_records
            landed = service.landed_schema()

            def parse(body: bytes, content_type: str | None = None) -> Any:
                return schema.parse(body, max_records, content_type, landed).records

            records = parse(payloads["mlops-batch"])
            landed_records = parse(payloads["mlops-batch-landed"])
            columns, keys, _ = scorer.feature_columns(model, records)
            scores = model.score_columns(columns)
            labels = (scores >= scorer.threshold).astype(np.int8)
            answer = ScoredRequest(
                model.name, "none", scores, labels, None, ("champion", "challenger"), (version, version)
            )
            ids = np.full(len(records), "request-id", dtype=object)
            received = np.full(len(records), np.datetime64("2026-01-01T00:00:00", "us"))
            log_schema = service.log.schema if service.log is not None else None

            def log() -> pa.RecordBatch:
                assert log_schema is not None
                return log_batch(
                    log_schema, columns, keys, ids, received, model.name, version, "champion", "none",
                    True, scores, labels,
                )  # fmt: skip

            def parquet() -> None:
                pq.write_table(pa.Table.from_batches([log()]), io.BytesIO())

            stages = {
                "decode records (msgspec)": lambda: parse(payloads["mlops-batch"]),
                "decode landed records": lambda: parse(payloads["mlops-batch-landed"]),
                "decode dataframe_split": lambda: parse(payloads["mlops-split"]),
                "decode Arrow stream": lambda: parse(payloads["mlops-arrow.arrow"], ARROW_STREAM),
                "feature columns of records": lambda: scorer.feature_columns(model, records),
                "decode Arrow stream + its feature columns": lambda: scorer.feature_columns(
                    model, parse(payloads["mlops-arrow.arrow"], ARROW_STREAM)
                ),
                "feature columns of landed records (record step)": lambda: scorer.feature_columns(
                    model, landed_records
                ),
                "compiled scorer": lambda: model.score_columns(columns),
                "answers as JSON": lambda: orjson.dumps({"predictions": answer.predictions()}),
                "log: record batch": log,
                "log: record batch + Parquet": parquet,
                "whole request, in-process (records)": lambda: client.post(
                    "/predict", content=payloads["mlops-batch"], headers={"content-type": "application/json"}
                ).raise_for_status(),
                "whole request, in-process (Arrow)": lambda: client.post(
                    "/predict", content=payloads["mlops-arrow.arrow"], headers={"content-type": ARROW_STREAM}
                ).raise_for_status(),
            }
            print(f"{config.registry.model_name} v{version}, {BATCH_ROWS:,} rows, best of {args.repeats}")
            timed = []
            for name, step in stages.items():
                ms = best_ms(step, args.repeats)
                timed.append({"stage": name, "ms": ms, "rows_per_second": BATCH_ROWS / ms * 1000})
                print(f"  {name:<50} {ms:8.1f} ms   {BATCH_ROWS / ms * 1000:>12,.0f} rows/s")
        write_result(
            args.out,
            "serving_stages",
            {"model": f"{config.registry.model_name} v{version}", "rows": BATCH_ROWS, "repeats": args.repeats,
             "stages": timed},
        )  # fmt: skip
    finally:
        stop_stack(config)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
