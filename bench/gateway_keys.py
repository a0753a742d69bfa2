"""Consumer keys in ``bench/gateway.py``: the cost of a key's check and rate limit at the edge.

- ``make_key``: a consumer key for the benchmark's deployment with a rate limit it never hits
  (1,000,000 req/s, burst 1,000,000), so every request takes the whole path: the cached key,
  the deployment check, the token bucket, the counts and the X-RateLimit headers;
- ``micro``: timeit of the check's cached path in this process (no network, no replica) beside
  the personal token's, so the difference is the check alone;
- ``report``: the wrk runs through the key beside the same runs through a personal token
  (alternating, same connections), with the edge's CPU per request of each and their
  difference per pair.
"""

from __future__ import annotations

import os
import statistics
import timeit

RATE = 1_000_000  # never reached by one wrk client on this machine


def make_key(deployment: str) -> str:
    """A consumer key row for ``deployment`` (as KEYS' service would make it); its secret."""
    from deployments.models import ConsumerKey, Deployment
    from teams import tokens

    d = Deployment.objects.get(name=deployment)
    secret = tokens.generate(tokens.CONSUMER_SCHEME)
    key = ConsumerKey.objects.create(team=d.team, name="bench-caller", prefix=secret.prefix,
                                     digest=secret.digest, rate_per_s=RATE, burst=RATE)
    key.deployments.set([d])
    return secret.token


_diffs: dict[int, list[float]] = {}  # conns -> edge CPU µs/req, key minus token, per pair


def add_target(targets: list, deployment: str) -> None:
    """The key's run, between the token's (``targets[1]``) and v2: same URL and body."""
    label, url, _headers, cgroup, body = targets[1]
    assert label == "gateway"
    targets.insert(2, ("key", url, {"Authorization": f"Bearer {make_key(deployment)}"},
                       cgroup, body))


def note(pair: dict, conns: int) -> None:
    """One turn's runs: the key's edge CPU per request minus the token's."""
    _diffs.setdefault(conns, []).append(pair["key"]["edge_us"] - pair["gateway"]["edge_us"])


def micro(number: int = 200_000) -> dict[str, float]:
    """ns per call of the cached checks, best of 5: the token's (cache hit + team check) and
    the key's (cache hit + deployment check + bucket + counts), no I/O."""
    import time
    import uuid

    from gateway import consumers, routes

    route = routes.Route(version=(1, 1), team_id=7, checked=time.monotonic(), name="bench")
    digest_t, digest_k = "t" * 64, "k" * 64
    routes._auth[digest_t] = (time.monotonic() + 3600, False, frozenset({7}))
    consumers._keys[digest_k] = consumers.Keyed(
        time.monotonic() + 3600, uuid.uuid4(), 7, frozenset({1}), "bench/bench-caller",
        float(RATE), RATE, consumers.Bucket(float(RATE), float(RATE)))

    def token() -> bool:
        caller = routes.cached_caller(digest_t)
        return caller is not None and (caller[0] or route.team_id in caller[1])

    def key() -> bool:
        keyed = consumers.cached(digest_k)
        return keyed is not None and routes.key_refusal(keyed, route, "bench") is None

    def key_headers() -> bytes:
        keyed = consumers._keys[digest_k]
        return keyed.limit + consumers.remaining(keyed)

    result = {}
    for label, fn in (("token", token), ("key", key), ("key headers", key_headers)):
        assert fn()
        result[label] = min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e9
    routes.invalidate()
    return result


def report(cells: dict, micro_ns: dict[str, float]) -> None:
    print(f"\nConsumer key (rate limit never hit) vs personal token, both through the gateway "
          f"(same runs, alternating; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})\n")
    print("| conns | token req/s | p50 ms | edge CPU µs/req | key req/s | p50 ms | "
          "edge CPU µs/req | key - token CPU µs/req (each pair) |")
    print("|---|---|---|---|---|---|---|---|")
    for conns in (1, 16):
        t, k = cells[("gateway", conns)], cells[("key", conns)]
        pairs = _diffs.get(conns) or [float("nan")]
        print(f"| {conns} | {t['rps']:.0f} | {t['p50']:.2f} | {t['edge_us']:.1f} | "
              f"{k['rps']:.0f} | {k['p50']:.2f} | {k['edge_us']:.1f} | "
              f"{statistics.median(pairs):+.1f} ({', '.join(f'{d:+.1f}' for d in pairs)}) |")
    added = micro_ns["key"] + micro_ns["key headers"] - micro_ns["token"]
    print(f"\nCached check alone (timeit, best of 5): token {micro_ns['token']:.0f} ns, key "
          f"{micro_ns['key']:.0f} ns + X-RateLimit headers {micro_ns['key headers']:.0f} ns; "
          f"the key adds {added / 1000:.2f} µs CPU per request (target ≤ 5 µs: "
          f"{'met' if added <= 5000 else 'not met'})")
