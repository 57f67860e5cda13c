"""The prediction log: a per-process append-only journal on disk and a database writer process.

Modules by job: ``journal`` (the segment files), ``records`` (checking and expanding journal
lines), ``inserter`` (the database inserts), ``writer`` (the writer process) and ``front``
(:class:`PredictionLog`, what the server holds).

Every model batch appends its records to this process's journal segment with one ``write()``
before any response of the batch is released: once a client has an answer, its record is in the OS
and survives ``kill -9`` of the server (``LOOPML_PREDLOG_FSYNC=always`` also fsyncs it, so it
survives a power loss). A write that fails or is short is truncated back to the last whole record
and the batch fails with :class:`~loopml.errors.JournalError` (503 + Retry-After): no answer is
ever given for a record that is not in the journal, and no torn record is left for the next one.

The database writer runs in its own process (spawned per server process), so its parsing and
inserts never compete with serving for the GIL. It tails this process's segments and inserts
records in batches with ``INSERT .. ON CONFLICT (request_id) DO NOTHING`` (replays are
idempotent), deleting a segment only once every byte of it is consumed. While the database is slow
or down, records stay in the segments (the spool) and the writer retries with back-off. A record
the database refuses (a bad field, a NUL on PostgreSQL) or a line that is not a valid record goes
to ``deadletter.jsonl`` in the spool folder (``loopml_predlog_dead_letter_total``, alert
``LoopmlPredictionDeadLetters``) and the rest of the batch is committed: one bad row never stalls
the log. Lines may be of any length. A line is one batch of records in columns (one
``orjson`` call per model batch keeps the serving process's cost per text low; the writer
computes text hashes and lengths) or, as older journals and tests write, one record.

The serving process keeps an in-memory index of the request ids it journaled and the writer has
not committed yet, so the feedback store finds a fresh prediction without reading the journal.

Each process holds an ``flock`` on ``<owner>.lock`` in the spool folder for its life. A segment
whose owner's lock is free belongs to a process that died (or stopped before it could drain):
any live writer replays it and deletes it.

Counters: ``served`` = records journaled, ``written`` = own records committed, ``dead_letter`` =
own records refused, ``backlog`` = served - written - dead_letter; records of other processes are
counted as ``replayed`` (or ``replay_dead_letter``); ``dropped`` = records of batches the journal
could not take (those requests were answered 503, so no answer is missing from the log).
"""

from __future__ import annotations

from loopml.serving.predlog.front import PredictionLog
from loopml.serving.predlog.journal import Journal, read_lines
from loopml.serving.predlog.records import parse
from loopml.store.deadletter import DEAD_LETTER

__all__ = ["DEAD_LETTER", "Journal", "PredictionLog", "parse", "read_lines"]
