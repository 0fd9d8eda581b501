"""The local stack: the embedded broker, `pipeline up`, the broker's retention, the offsets CLI.

Tools for running everything on one machine; the stages never import them.
"""
