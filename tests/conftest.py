"""Fixtures shared by the unit tests."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Run with one torch thread: the tensors in these tests are small, and two threads only add
    contention overhead on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
