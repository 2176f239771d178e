import pytest
import torch

from inverse_graphics.assets import ObjectCatalog
from inverse_graphics.data.tabletop import Tabletop, TabletopConfig


@pytest.fixture(scope="session")
def catalog():
    return ObjectCatalog.load()


@pytest.fixture(scope="session")
def tabletop(catalog):
    return Tabletop(TabletopConfig(), catalog)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
