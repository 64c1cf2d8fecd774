"""Air-gapped sites: the licensing life by file exchange (docs/offline.md).

``offline export`` writes the signed requests the agent would have sent to one file,
``ssm offline answer`` (or the real SSM's offline upload) answers them into another, and
``offline import`` checks every answer exactly as online and applies it through the same
agent methods and core functions. Nothing here has rules of its own: the file carries the
protocol's envelopes (docs/protocol.md §8) and the agent's jobs decide what they mean.
"""
