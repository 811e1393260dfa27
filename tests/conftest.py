"""pytest configuration shared by the test suite."""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running real-model checks (deselect with -m 'not slow')")
