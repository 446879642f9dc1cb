"""The prediction service: the registry's champion behind FastAPI, with hot swap, shadow,
canary and A/B modes, and a Parquet log of every prediction.

Modules, in the order a request meets them: `schema` (the request contract, built from the
config's feature list), `routing` (which arm answers a record), `models` (loading and
hot-swapping registered versions), `scoring` (micro-batched scoring), `predlog` (the
buffered writer of the prediction log, whose format `mlops.prediction_log` owns), `app`
(the HTTP surface and `mlops serve`), `compare` (`mlops compare`: champion vs challenger
on logged traffic once labels land), `samples` (request records built from landed data,
for the demo, the benchmark and the tests).
"""
