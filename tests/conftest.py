"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch

from fedpriv.audits.config import AuditConfig, from_mapping
from helpers import tiny_config_dict

torch.set_num_threads(2)


@pytest.fixture
def tiny_config() -> AuditConfig:
    return from_mapping(AuditConfig, tiny_config_dict())
