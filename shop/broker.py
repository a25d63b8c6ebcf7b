"""The embedded broker: kombu's filesystem transport, safe for many processes at once.

Every process of ``make run`` (web, worker, relay, beat) uses the same folders, so each file the
transport writes, renames or reads may meet another process doing the same. kombu's own channel
leaves three races open, and each is closed here:

- **Messages.** kombu creates a message file under its final name and then writes into it, so a
  consumer polling the folder can take it while it is still empty and die on a JSON decode
  error. Here a message is written under a name no consumer matches (``.part``) and renamed into
  place once complete: a rename is atomic on POSIX, so a consumer sees whole messages or none.
- **Exchange tables** (``<exchange>.exchange`` in the control folder: which queue is bound with
  which routing key). Every process that declares a queue rewrites its exchange's table, and
  kombu does it in place: it truncates the file before taking the lock (``open("wb")``), so a
  publisher reading the table meanwhile gets an empty file (a ``JSONDecodeError``), and two
  processes declaring the first queues at once each write a table without the other's binding
  (later messages to that queue are dropped). Here a read-modify-write of a table holds an
  exclusive lock on a separate ``.lock`` file that is never replaced, and writes the new table
  to a temporary file renamed over the old one: readers need no lock and always read a whole
  table, the old one or the new one; no writer loses another's binding.
- **Taking a message.** kombu moves a message out of the folder with ``shutil.move`` into the
  system's temporary folder when processed messages are not kept, which is a copy and a delete
  when that folder is on another file system: two consumers can then both copy (and run) the
  same message. Here a consumer claims a message by renaming it, inside its own folder, to a
  name that is unique and no queue matches; exactly one consumer's rename succeeds.

Message order: kombu names a message file by the time in whole milliseconds, so messages sent
within one millisecond were taken in random order. Here a name starts with a stamp that strictly
increases across the messages a thread sends (``_stamp``), zero-padded so that the consumer's sort
by name is the order of the stamps: a producer's messages are taken in the order it sent them.

``tests/shop/test_broker.py`` runs several processes declaring queues, publishing and consuming
at once, and checks that nothing fails, nothing is lost and nothing is taken twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import shutil
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic_ns

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

exchange_queue_t = filesystem.exchange_queue_t

_stamp_counter = itertools.count()  # next() on it is atomic: threads never share a number


def _stamp() -> str:
    """The start of a message file's name, compared as a string: greater than every stamp the
    calling thread made before, and unique across threads and processes.

    The system's monotonic clock in nanoseconds (shared by the processes of a machine; two reads
    may return the same value), then a counter of this process (which breaks such a tie), then a
    random part (two processes may stamp the same nanosecond with the same count). Fixed,
    zero-padded widths, so that comparing two names as strings compares their numbers."""
    return f"{monotonic_ns():020d}_{next(_stamp_counter):012d}_{uuid.uuid4().hex}"


def _write_atomically(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old content or the new, never part."""
    partial = f"{path}.{uuid.uuid4().hex}.part"
    try:
        with open(partial, "wb") as f:
            f.write(data)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{_stamp()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        try:
            # "<queue>.msg.<hex>.part" matches no queue's pattern until it is renamed.
            _write_atomically(final, str_to_bytes(dumps(payload)))
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def get_table(self, exchange):
        file = self._exchange_file(exchange)
        try:
            content = file.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc
        return [exchange_queue_t(*q) for q in self._table_parse(file, content)]

    @staticmethod
    def _table_parse(file: Path, content: bytes) -> list:
        if not content.strip():
            return []  # a table kombu's own code left truncated: nothing bound yet
        try:
            return loads(bytes_to_str(content))
        except (ValueError, json.JSONDecodeError) as exc:
            raise ChannelError(f"Exchange table {file} is not JSON: {exc}") from exc

    @contextlib.contextmanager
    def _table_locked(self, exchange):
        """The exchange's table, read under an exclusive lock held until the block ends."""
        file = self._exchange_file(exchange)
        self.control_folder.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            try:
                lock = stack.enter_context(open(f"{file}.lock", "ab"))
            except OSError as exc:
                raise ChannelError(f"Cannot open {file}.lock") from exc
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file is closed
            yield file, self.get_table(exchange)

    def _table_write(self, file: Path, queues: list) -> None:
        try:
            _write_atomically(file, str_to_bytes(dumps(queues)))
        except OSError as exc:
            raise ChannelError(f"Cannot write {file}") from exc

    def queue_bind(self, queue, exchange=None, routing_key="", arguments=None, **kwargs):
        """The binding reaches the exchange's table file before this process's broker state
        records it. kombu records it first and writes the file after; the state is shared by the
        process's threads, so another thread declaring the same binding in between skipped it,
        published into a table without it, and the message was dropped as unroutable."""
        exchange = exchange or "amq.direct"
        if not self.state.has_binding(queue, exchange, routing_key):
            meta = self.typeof(exchange).prepare_bind(queue, exchange, routing_key, arguments)
            self._queue_bind(exchange, *meta)
        super().queue_bind(queue, exchange, routing_key, arguments, **kwargs)

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        entry = exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._table_locked(exchange) as (file, queues):
            if entry not in queues:
                self._table_write(file, [entry, *queues])

    def _delete(self, queue, exchange, routing_key, pattern, *args, **kwargs):
        # kombu's virtual channel forgets the queue; its filesystem channel would then rewrite
        # the table in place, so the method of the grandparent is called, not the parent's.
        super(filesystem.Channel, self)._delete(
            queue, exchange, routing_key, pattern, *args, **kwargs
        )
        entry = exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._table_locked(exchange) as (file, queues):
            if entry in queues:
                self._table_write(file, [q for q in queues if q != entry])

    def _get(self, queue):
        suffix = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != suffix:
                continue
            # "<queue>.msg.<hex>.taken" matches no queue: only one consumer's rename succeeds.
            taken = os.path.join(self.data_folder_in, f"{name}.{uuid.uuid4().hex}.taken")
            try:
                os.rename(os.path.join(self.data_folder_in, name), taken)
            except OSError:
                continue  # another consumer took it first
            try:
                with open(taken, "rb") as f:
                    payload = f.read()
                if self.store_processed:
                    shutil.move(taken, os.path.join(self.processed_folder, name))
                else:
                    os.remove(taken)
            except OSError as exc:
                raise ChannelError(f"Cannot read file {taken!r} from queue.") from exc
            return loads(bytes_to_str(payload))
        raise Empty()


class Transport(filesystem.Transport):
    Channel = Channel
