import pytest

import lenet


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST shipped with lenet, loaded once per test session."""
    return lenet.load_dataset("mnist")
