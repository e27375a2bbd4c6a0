"""What the container runtime does with a container's stdout: each line read from stdin is
appended to the log file as Docker's json-file driver writes it, one compact JSON object per
line: {"log":"<line>\n","stream":"stdout","time":"<RFC 3339, nanoseconds, UTC>"}.

Usage: nginx ... | python3 shim.py /var/log/containers/<pod>_<ns>_<container>-<id>.log
"""
import datetime
import json
import sys
import time


def docker_time() -> str:
    ns = time.time_ns()
    t = datetime.datetime.fromtimestamp(ns // 1_000_000_000, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + ".%09dZ" % (ns % 1_000_000_000)


def main() -> None:
    with open(sys.argv[1], "a", encoding="utf-8") as out:
        for line in sys.stdin:
            rec = {"log": line if line.endswith("\n") else line + "\n", "stream": "stdout", "time": docker_time()}
            out.write(json.dumps(rec, separators=(",", ":")) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
