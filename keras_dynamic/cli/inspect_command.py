"""``keras-dynamic inspect EXPORT_DIR``: the chain's summary and a check of every file."""

import json

NAME = "inspect"
HELP = (
    "Load an export with every check (manifest schema and graph, each file's size and "
    "sha256, each stage's signature, a dry run of every stage) and print its summary, "
    "with what XNNPACK runs of each CPU stage."
)


def add_arguments(parser):
    parser.add_argument("export_dir", help="export folder (or its manifest.json)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead")
    parser.add_argument("--accelerator", choices=["cpu", "gpu", "npu"], default="cpu",
                        help="also try placing every stage there and report where each runs")


def file_report(chain):
    """Per file: path, bytes, sha256 and the stages it holds (all verified at load)."""
    stages_of = {}
    for stage in chain.manifest["stages"]:
        stages_of.setdefault(stage["file"], []).append(stage["name"])
    return [
        {"path": f["path"], "bytes": f["bytes"], "sha256": f["sha256"],
         "stages": stages_of.get(f["path"], [])}
        for f in chain.manifest["files"]
    ]


def run(args):
    from keras_dynamic.runtime import load

    with load(args.export_dir, accelerator=args.accelerator) as chain:
        files = file_report(chain)
        coverage = chain.xnnpack_coverage()
        if args.json:
            print(json.dumps({
                "folder": str(chain.folder),
                "manifest_sha256": chain.manifest_sha256,
                "version": chain.manifest["version"],
                "stages": list(chain.stage_names),
                "exits": list(chain.exit_names),
                "policy": chain.policy.to_dict(),
                "total_macs": chain.total_macs,
                "files": files,
                "backend": chain.backend,
                "placement": {name: {"requested": p.requested, "device": p.device,
                                     "reason": p.reason}
                              for name, p in chain.placement.items()},
                "xnnpack": {name: c.to_dict() for name, c in coverage.items()},
            }, indent=2))
            return 0
        chain.summary()
    print(f"manifest: version {chain.manifest['version']}, sha256 {chain.manifest_sha256}")
    for f in files:
        print(
            f"verified: {f['path']} ({f['bytes']:,} bytes, sha256 {f['sha256'][:16]}..., "
            f"stages {', '.join(f['stages'])}): size, hash, signatures and a dry run"
        )
    for name, c in coverage.items():
        print(f"{name}: {c}")
    incomplete = [name for name, c in coverage.items() if not c.complete]
    if incomplete:
        print(
            f"note: {', '.join(incomplete)} run ops on TFLite's own kernels, outside "
            "XNNPACK, which are often several times slower (see `keep_float` and "
            "`dynamic_conv_form` in the README's Export section)."
        )
    return 0
