"""The plugin builds one Spec per set of marker options, not one per
collected item: a big collection (click's 33k items) would otherwise hold
a Spec per item in the pytest process, which every per-test fork copies."""

SUITE = r'''
import pytest
from pytest_hermetic import hermetic

@pytest.mark.parametrize("i", range(50))
def test_plain(i):
    pass

@hermetic(mem="64M")
@pytest.mark.parametrize("i", range(3))
def test_limited(i):
    pass

@hermetic(mem="32M")
def test_other_limit():
    pass

@hermetic(env={"A": "1"})  # unhashable options: a Spec of its own, still right
@pytest.mark.parametrize("i", range(2))
def test_env(i):
    pass
'''

CONFTEST = r'''
def pytest_collection_finish(session):
    runner = session.config.pluginmanager.get_plugin("hermetic-runner")
    specs = {item.name: runner.spec_for(item) for item in session.items}
    plain = {id(s) for name, s in specs.items() if name.startswith("test_plain")}
    limited = {id(s) for name, s in specs.items() if name.startswith("test_limited")}
    env = [s for name, s in specs.items() if name.startswith("test_env")]
    print("SPECS", len(plain), len(limited), specs["test_other_limit"].mem, specs["test_limited[0]"].mem,
          specs["test_plain[0]"].mem, [dict(s.env) for s in env])
'''


def test_one_spec_per_set_of_options(pytester):
    pytester.makepyfile(test_specs=SUITE)
    pytester.makeconftest(CONFTEST)
    result = pytester.runpytest_subprocess("--hermetic", "--collect-only", "-q", "-s")
    result.stdout.fnmatch_lines(["SPECS 1 1 *"])
    line = next(line for line in result.stdout.lines if line.startswith("SPECS"))
    assert line.split(" ", 3)[3] == "%s %s None [{'A': '1'}, {'A': '1'}]" % (32 * 2**20, 64 * 2**20), line
