"""Pre-labelling past one machine: `annotator prelabel --ray` on Ray Data (the optional `ray` extra).

`shards` plans the work as shards of images and keeps their results as atomically written JSONL files that a rerun
recognises; `ray_prelabel` runs the app's `Proposer` in Ray Data actors and merges each finished shard into the
project store. Ray itself is imported only when a run starts.
"""
