#!/usr/bin/env python3
"""target/bench/results.json: one flat JSON object, metric name -> number.

  bench_results.py set NAME VALUE [NAME VALUE ...]   merge figures in
  bench_results.py table                             print every figure
"""
import json
import os
import sys

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "bench", "results.json")


def load():
    try:
        with open(PATH) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def save(data):
    os.makedirs(os.path.dirname(PATH), exist_ok=True)
    tmp = PATH + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, PATH)


def main(argv):
    if len(argv) >= 3 and argv[0] == "set" and len(argv) % 2 == 1:
        data = load()
        for name, value in zip(argv[1::2], argv[2::2]):
            number = float(value)
            data[name] = int(number) if number.is_integer() else round(number, 3)
        save(data)
    elif argv == ["table"]:
        data = load()
        width = max([len(k) for k in data] + [6])
        print(f"{'metric':<{width}}  value")
        for k in sorted(data):
            print(f"{k:<{width}}  {data[k]}")
        print(f"({os.path.normpath(PATH)})")
    else:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
