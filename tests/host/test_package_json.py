"""The mip package files (package.json, package-client.json,
package-broker.json) list real files, and each split package carries exactly
what its entry module needs: `mpremote mip install github:ORG/REPO/package-client.json`
must give a client that imports, without any broker module."""

import ast
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PKG_DIR = REPO / "firmware" / "lib" / "umqtt_full"
FILES = ("package.json", "package-client.json", "package-broker.json")


def load(name):
    return json.loads((REPO / name).read_text())


def local_imports(mod):
    """umqtt_full submodules `mod` imports (relative imports, any depth:
    lazy imports inside functions count, a board runs them too)."""
    tree = ast.parse((PKG_DIR / (mod + ".py")).read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
    return out


def closure(*mods, skip=()):
    seen, todo = set(), list(mods)
    while todo:
        m = todo.pop()
        if m not in seen and m not in skip:
            seen.add(m)
            todo.extend(local_imports(m))
    return seen


def modules(pkg):
    return {Path(dest).stem for dest, _ in pkg["urls"]}


@pytest.mark.parametrize("name", FILES)
def test_listed_files_exist_and_land_in_the_package(name):
    pkg = load(name)
    assert pkg["version"]
    assert pkg["urls"]
    dests = [dest for dest, _ in pkg["urls"]]
    assert len(dests) == len(set(dests))
    for dest, src in pkg["urls"]:
        assert (REPO / src).is_file(), src
        # Same file name on the board as in the repo, under <target>/umqtt_full/.
        assert dest == "umqtt_full/" + Path(src).name
        assert Path(src).parent == Path("firmware/lib/umqtt_full")


def test_full_package_has_every_module():
    assert modules(load("package.json")) == {p.stem for p in PKG_DIR.glob("*.py")}


def test_client_package_is_the_client_and_nothing_of_the_broker():
    mods = modules(load("package-client.json"))
    need = closure("__init__", "client")
    assert need >= {"client", "core", "codec", "transport", "errors"}  # the walk works
    assert need <= mods, sorted(need - mods)
    assert not [m for m in mods if m.startswith("broker")]
    # The optional client front ends ship too, with what they import.
    assert closure("robust", "aio") <= mods


def test_broker_package_is_the_broker_and_nothing_of_the_client():
    mods = modules(load("package-broker.json"))
    # The bridge runs our client inside the broker: it comes with the full
    # package (package.json), not the broker-only one.
    need = closure("__init__", "broker", "broker_config", skip=("broker_bridge",))
    assert {"broker", "broker_store", "codec", "broker_ws", "broker_persist"} <= need
    assert need <= mods, sorted(need - mods)
    assert not mods & {"client", "core", "session", "transport", "robust", "aio"}
