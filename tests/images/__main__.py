"""``python -m tests.images``: set up the builder and build or reuse the test images.

    python -m tests.images prereqs                 # apt-get install buildah, mmdebstrap (once)
    python -m tests.images ensure [NAME ...]       # default: every buildable manifests image
    python -m tests.images ensure-model [--spec test] [--runtime transformers]
    python -m tests.images ensure-adapter [--spec test] [--seed 0] [--name adapter]
    python -m tests.images list                    # the cache's archives
    python -m tests.images path                    # print the cache directory
    python -m tests.images clean                   # remove the cache

``ensure*`` print one JSON object per image (name, ref, archive, key, size_bytes,
build_seconds, reused) on stdout; progress goes to stderr. Exit 1 with the reason on failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from tests.images.errors import ImageError


def main(argv: Sequence[str] | None = None) -> int:
    from tests.images import api, build, prereqs

    parser = argparse.ArgumentParser(prog="python -m tests.images", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prereqs", help="install the builder's Debian packages if missing")
    ensure = sub.add_parser("ensure", help="build or reuse manifests/images/NAME.Dockerfile")
    ensure.add_argument("names", nargs="*", help="Dockerfile stems (default: all buildable)")
    model = sub.add_parser("ensure-model", help="a private preset image of a tiny test model")
    model.add_argument("--spec", default="test", choices=sorted(api.SPECS))
    model.add_argument("--runtime", default="transformers")
    adapter = sub.add_parser("ensure-adapter", help="an adapter image of a tiny LoRA adapter")
    adapter.add_argument("--spec", default="test", choices=sorted(api.SPECS))
    adapter.add_argument("--seed", type=int, default=0)
    adapter.add_argument("--name", default="adapter")
    sub.add_parser("list", help="the archives in the cache")
    sub.add_parser("path", help="print the cache directory")
    sub.add_parser("clean", help="remove the image cache")
    args = parser.parse_args(argv)
    try:
        if args.command == "prereqs":
            prereqs.ensure()
            print("buildah and mmdebstrap are installed", file=sys.stderr)
        elif args.command == "ensure":
            for name in args.names or build.buildable():
                print(json.dumps(build.describe(api.ensure_image(name))))
        elif args.command == "ensure-model":
            image = api.ensure_model_image(spec=args.spec, runtime=args.runtime)
            print(json.dumps(build.describe(image)))
        elif args.command == "ensure-adapter":
            image = api.ensure_adapter_image(spec=args.spec, seed=args.seed, name=args.name)
            print(json.dumps(build.describe(image)))
        elif args.command == "list":
            for archive in sorted(build.cache_dir().glob("*.oci.tar")):
                print(f"{archive.stat().st_size / 1e6:9.0f} MB  {archive}")
        elif args.command == "path":
            print(build.cache_dir())
        elif args.command == "clean":
            build.clean()
            print(f"removed {build.cache_dir()}", file=sys.stderr)
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
