"""Fails when a crate depends on a crate of a higher layer (see README, "Architecture").

Layers, lowest first; a crate may depend on crates of lower layers and, where the layer says
so, on its own layer. The layer is read from the crate's folder, so a new crate is checked
as soon as it exists, and one in an unknown folder fails until it is given a layer.
"""

import json
import subprocess
import sys
from pathlib import Path

# (layer, folders, may depend on crates of the same layer)
LAYERS = [
    ("domain", ["shared/core"], False),
    ("engines", ["shared/optimizer", "shared/cost", "shared/schedule", "shared/notify"], True),
    ("plumbing", ["shared/aws", "shared/lambda"], False),
    ("store", ["shared/store"], False),
    ("apps", ["functions/*", "agent", "cli"], False),
    ("tests", ["tests", "tests/*"], True),
]


def layer_of(root: Path, manifest: str):
    folder = Path(manifest).parent.relative_to(root).as_posix()
    for rank, (name, patterns, same_layer) in enumerate(LAYERS):
        for pattern in patterns:
            if folder == pattern or (
                pattern.endswith("/*") and Path(folder).parent.as_posix() == pattern[:-2]
            ):
                return rank, name, same_layer
    return None


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps", "--locked"],
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    packages = {p["name"]: p for p in metadata["packages"]}
    problems = []
    edges = []
    for package in packages.values():
        found = layer_of(root, package["manifest_path"])
        if found is None:
            problems.append(f"{package['name']}: its folder has no layer in scripts/layers.py")
            continue
        rank, name, same_layer = found
        for dep in package["dependencies"]:
            if dep["name"] not in packages or dep.get("kind") == "dev":
                continue
            dep_rank, dep_name, _ = layer_of(root, packages[dep["name"]]["manifest_path"])
            edges.append((package["name"], dep["name"]))
            allowed = dep_rank < rank or (dep_rank == rank and same_layer)
            if not allowed:
                problems.append(
                    f"{package['name']} ({name}) depends on {dep['name']} ({dep_name})"
                )
    if "--graph" in sys.argv:
        for crate, dep in sorted(edges):
            print(f"{crate} -> {dep}")
    for problem in problems:
        print(f"layering: {problem}", file=sys.stderr)
    if not problems:
        print(f"layering: {len(packages)} crates, {len(edges)} dependencies, none upward")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
