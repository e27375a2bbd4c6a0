"""Reads the events back from CloudWatch Logs (moto's server), prints each record, and checks
it against the seed's record shape: the same keys as expected-record.json at every level
(`kubernetes` may have more, as current Fluent Bit adds), the pod's metadata as the seed shows
it, and the nginx fields parsed from the hey request.

Usage: readback.py ENDPOINT EXPECTED_COUNT expected-record.json
Exits 0 when EXPECTED_COUNT events from hey arrive (bounded wait) and every one has the shape.
"""
import json
import sys
import time

import boto3


def main() -> int:
    endpoint, want, expected_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    expected = json.load(open(expected_file, encoding="utf-8"))
    logs = boto3.client(
        "logs", region_name="us-east-2", endpoint_url=endpoint,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    events = []
    deadline = time.time() + 60
    while time.time() < deadline:
        events = []
        try:
            streams = logs.describe_log_streams(logGroupName="fluentbit-cloudwatch")["logStreams"]
        except logs.exceptions.ResourceNotFoundException:
            streams = []
        for s in streams:
            r = logs.get_log_events(logGroupName="fluentbit-cloudwatch",
                                    logStreamName=s["logStreamName"], startFromHead=True)
            events += [(s["logStreamName"], e) for e in r["events"]]
        if sum(1 for _, e in events if '"agent":"hey/' in e["message"]) >= want:
            break
        time.sleep(1)
    problems = []
    for stream, e in events:
        rec = json.loads(e["message"])
        print(json.dumps(rec, indent=3, sort_keys=True))
        if not stream.startswith("fluentbit-kube."):
            problems.append(f"stream {stream} does not start with fluentbit-kube.")
        if set(rec) != set(expected):
            problems.append(f"keys {sorted(rec)} != {sorted(expected)}")
            continue
        if set(rec["data"]) != set(expected["data"]):
            problems.append(f"data keys {sorted(rec['data'])} != {sorted(expected['data'])}")
        if not set(expected["kubernetes"]) <= set(rec["kubernetes"]):
            problems.append(f"kubernetes lacks {set(expected['kubernetes']) - set(rec['kubernetes'])}")
        for k in ["container_name", "docker_id", "host", "labels", "namespace_name", "pod_id", "pod_name", "annotations"]:
            if rec["kubernetes"].get(k) != expected["kubernetes"][k]:
                problems.append(f"kubernetes.{k} = {rec['kubernetes'].get(k)!r}")
        d = rec["data"]
        if not (d.get("code") == "200"
                and d.get("method") == "GET" and d.get("path") == "/" and d.get("remote") == "127.0.0.1"):
            problems.append(f"data {d}")
        if rec["stream"] != "stdout" or not rec["log"].endswith("\n"):
            problems.append(f"stream/log {rec['stream']!r} {rec['log']!r}")
    from_hey = sum(1 for _, e in events if json.loads(e["message"]).get("data", {}).get("agent", "").startswith("hey/"))
    print(f"{len(events)} events in CloudWatch Logs (moto), {from_hey} from hey's {want} requests", file=sys.stderr)
    if from_hey != want:
        problems.append(f"{from_hey} events from hey, want {want}")
    for p in problems[:20]:
        print("MISMATCH:", p, file=sys.stderr)
    if not problems:
        print("every record has the seed's shape", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
