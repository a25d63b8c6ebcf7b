"""The embedded broker hands consumers whole messages only, even while producers write."""

import threading

from kombu import Connection


def test_a_polling_consumer_never_reads_a_half_written_message(tmp_path):
    options = {
        "data_folder_in": str(tmp_path),
        "data_folder_out": str(tmp_path),
        "control_folder": str(tmp_path / "control"),
        "polling_interval": 0,
    }
    n = 400
    body = {"ids": list(range(2000))}  # large enough that a write is not instantaneous
    received, errors = [], []
    done = threading.Event()

    def consume():
        with Connection("filesystem://", transport_options=options) as conn:
            queue = conn.SimpleQueue("race")
            while len(received) < n and not done.is_set():
                try:
                    message = queue.get(timeout=0.01)
                except queue.Empty:
                    continue
                except Exception as exc:  # a torn read shows up here
                    errors.append(exc)
                    return
                received.append(message.payload)
                message.ack()

    consumer = threading.Thread(target=consume)
    consumer.start()
    with Connection("filesystem://", transport_options=options) as conn:
        queue = conn.SimpleQueue("race")
        for i in range(n):
            queue.put({**body, "n": i})
    consumer.join(60)
    done.set()
    assert not errors
    assert sorted(p["n"] for p in received) == list(range(n))
    assert all(p["ids"] == body["ids"] for p in received)
