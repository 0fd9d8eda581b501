"""Processor stage: a consumer group that transforms frames and republishes them."""
