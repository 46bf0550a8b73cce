"""An admin call waits out an etcd failover for ETCD_PATIENCE_S from its first sign."""

from __future__ import annotations

from weir.controller.admin import ETCD_PATIENCE_S, EtcdPatience
from weir.etcd.store import StoreError, StoreUnavailableError

FAILOVER = StoreUnavailableError("no leader", failover=True)


def test_patience_counts_from_the_first_failover_error_not_the_call() -> None:
    now = [100.0]
    patience = EtcdPatience(lambda: now[0])
    now[0] += 2.0  # the first attempt hung until the store's timeout, and more
    assert patience.retry(FAILOVER)
    now[0] += ETCD_PATIENCE_S - 0.1
    assert patience.retry(FAILOVER)
    now[0] += 0.2
    assert not patience.retry(FAILOVER)


def test_errors_that_are_not_a_failover_are_not_waited_out() -> None:
    patience = EtcdPatience(lambda: 0.0)
    assert not patience.retry(StoreUnavailableError("no member answers"))
    assert not patience.retry(StoreError("refused"))
