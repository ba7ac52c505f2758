"""scikit-learn's own estimator suite on derive's estimators."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from derive.sklearn import NetworkClassifier, NetworkRegressor  # noqa: E402

ESTIMATORS = [
    NetworkClassifier(hidden_layer_sizes=(4,), max_iter=20, learning_rate_init=0.05),
    NetworkRegressor(hidden_layer_sizes=(4,), max_iter=20, learning_rate_init=0.05),
]


@parametrize_with_checks(ESTIMATORS)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)
