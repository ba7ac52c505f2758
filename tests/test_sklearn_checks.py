"""scikit-learn's own estimator suite on derive's estimators.

No check is expected to fail: derive trains bit-reproducibly from random_state
(fit twice, pickle, subsets and row orders of predict all agree), validates
through scikit-learn's validate_data, and refuses one-class targets with a
message naming the class. Each data shape the checks use is a new architecture
(one Numba compile, a few seconds cold), so the estimators are small: one
hidden layer of 4 and 20 epochs at a learning rate of 0.05, enough for the
checks' accuracy (> 0.83) and R^2 (> 0.5) thresholds.
"""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from derive.sklearn import NetworkClassifier, NetworkRegressor  # noqa: E402

SMALL = {"hidden_layer_sizes": (4,), "max_iter": 20, "learning_rate_init": 0.05}
ESTIMATORS = [NetworkClassifier(**SMALL), NetworkRegressor(**SMALL)]


def expected_failed_checks(estimator) -> dict[str, str]:
    """None: a neural network passes every check scikit-learn runs on it."""
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)
