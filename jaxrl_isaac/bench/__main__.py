"""``python -m jaxrl_isaac.bench SUITE [args]``: SUITE is ``env`` (simulator throughput), ``render`` (where a camera
frame's time goes), ``gr00t`` (GR00T N1.5 get_action latency, Flax vs PyTorch), ``bridge`` (torch<->JAX DLPack cost)
or ``experts`` (scripted-expert success). Each suite prints a Markdown table; results and commands live in
BENCHMARKS.md."""

from __future__ import annotations

import importlib
import sys

SUITES = {"env": "jaxrl_isaac.bench.env", "bridge": "jaxrl_isaac.bench.bridge", "gr00t": "jaxrl_isaac.bench.gr00t",
          "experts": "jaxrl_isaac.bench.experts", "render": "jaxrl_isaac.bench.render"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUITES:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"unknown benchmark suite {argv[0]!r}", file=sys.stderr)
        print(f"usage: python -m jaxrl_isaac.bench {{{','.join(SUITES)}}} [args]  (SUITE --help for its options)",
              file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return importlib.import_module(SUITES[argv[0]]).main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
