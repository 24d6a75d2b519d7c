"""The feed's subscription index delivers exactly what asking every client would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from service.auth import Principal
from service.feed import Client, FeedHub

VALUES = st.sampled_from(["a", "b", "c"])
SUBSCRIPTION = st.fixed_dictionaries(
    {
        "task_ids": st.lists(VALUES, max_size=2),
        "queues": st.lists(VALUES, max_size=2),
        "names": st.lists(VALUES, max_size=2),
        "all": st.booleans(),
    }
)
CHANGE = st.tuples(st.integers(0, 5), SUBSCRIPTION, st.booleans())  # client, what, add?
EVENT = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["task", "progress", "chunk", "notification", "worker"]),
        "task_id": st.none() | VALUES,
        "queue": st.none() | VALUES,
        "name": st.none() | VALUES,
        "owner": st.none() | st.sampled_from(["alice", "bob"]),
    }
)


def client(owner: str, admin: bool) -> Client:
    return Client(None, Principal(owner=owner, role="admin" if admin else "user"), 10_000)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["alice", "bob"]), st.booleans()), min_size=6, max_size=6),
    st.lists(CHANGE, max_size=20),
    st.sets(st.integers(0, 5), max_size=3),
    st.lists(EVENT, min_size=1, max_size=10),
)
def test_broadcast_reaches_exactly_the_clients_that_want_each_event(
    people, changes, gone, events
) -> None:
    hub = FeedHub(None, db=0, buffer=10_000, stats_interval=60, stats=None)  # type: ignore[arg-type]
    clients = [client(owner, admin) for owner, admin in people]
    # Some subscribe before they are registered (the query string), most after.
    for i, data, add in changes[:3]:
        clients[i].subscription.update(data, add)
    for c in clients:
        hub.add(c)
    for i, data, add in changes[3:]:
        clients[i].subscription.update(data, add)
    for i in gone:
        hub.remove(clients[i])
    for event in events:
        expected = {c for c in hub.clients if c.wants(event)}
        before = {c: c.queue.qsize() for c in clients}
        hub.broadcast(event)
        reached = {c for c in clients if c.queue.qsize() > before[c]}
        assert reached == expected
