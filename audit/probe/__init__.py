"""The style and likeness probe: paired generations with and without an adapter, embeddings, statistics.

Heavy dependencies (torch, diffusers, open_clip) are imported only by the modules that generate or embed images;
``audit.probe.design`` and ``audit.probe.stats`` need numpy alone.
"""
