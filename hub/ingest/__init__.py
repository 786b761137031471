"""Ingest stage: node topics in, committed batches out, acknowledged after commit.

``consumer`` (threads, batching, acks), ``batch_core`` (the pure "messages in, result out" core),
``writer_process`` (the core in a process of its own).
"""
