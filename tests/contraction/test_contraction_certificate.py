"""Certificate serialisation and bad input: clear ValueErrors naming the argument."""

import json

import numpy as np
import pytest
import torch

from stablernn.contraction import (
    Certificate,
    certify_lipschitz,
    certify_matrix,
    lyapunov_metric,
    metzler_diagonal_metric,
    theorem1,
    theorem2,
    theorem3,
    theorem4,
    theorem5,
    theorem6_first_inequality,
    verify_metric,
)


def test_certificate_to_dict_is_json_and_describes():
    certificate = certify_matrix(torch.tensor([[0.0, 0.5], [0.2, 0.0]]))
    data = json.loads(json.dumps(certificate.to_dict()))
    assert data["contracting"] is True and data["condition"].startswith("paper 000")
    assert isinstance(data["metric"], list) and len(data["metric"]) == 2
    assert data["rate"] > 0 and data["max_euler_step"] > 0
    text = str(certificate)
    assert "Contracting" in text and "exp(-" in text and certificate.describe() == text
    with pytest.raises(AttributeError):
        certificate.contracting = False  # frozen


def test_not_contracting_certificate():
    certificate = certify_matrix(3 * np.eye(2))
    data = json.loads(certificate.to_json())
    assert data["contracting"] is False and data["metric"] is None and data["rate"] is None
    assert "Not certified" in str(certificate)


def test_non_finite_numbers_become_null():
    certificate = Certificate(False, "x", None, float("nan"), float("inf"), "r", {"a": np.float64("inf")})
    data = json.loads(certificate.to_json())
    assert data["rate"] is None and data["max_euler_step"] is None and data["details"]["a"] is None


CHECKS = [theorem1, theorem2, theorem3, theorem4, theorem5, theorem6_first_inequality, certify_matrix]


@pytest.mark.parametrize("check", CHECKS)
def test_bad_matrices(check):
    with pytest.raises(ValueError, match=r"W must be a square matrix.*got shape \(2, 3\)"):
        check(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"W must be a square matrix.*got shape \(3,\)"):
        check(np.zeros(3))
    with pytest.raises(ValueError, match=r"W contains 1 NaN or Inf"):
        check(torch.tensor([[0.0, float("nan")], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"W must be a real matrix"):
        check("abc")


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("g", [0.0, -1.0, float("inf"), float("nan"), "1", True])
def test_bad_slope_bound(check, g):
    with pytest.raises(ValueError, match=r"g must be a finite number > 0, got"):
        check(np.zeros((2, 2)), g)


def test_bad_metric_and_other_arguments():
    with pytest.raises(ValueError, match="metric must be positive definite"):
        verify_metric(np.zeros((2, 2)), 1.0, -np.eye(2))
    with pytest.raises(ValueError, match=r"metric must have shape \(2, 2\)"):
        verify_metric(np.zeros((2, 2)), 1.0, np.eye(3))
    with pytest.raises(ValueError, match="metric must be symmetric"):
        verify_metric(np.zeros((2, 2)), 1.0, [[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match="A must be a square matrix"):
        lyapunov_metric(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="A contains"):
        metzler_diagonal_metric([[np.inf, 0.0], [0.0, -1.0]])
    with pytest.raises(ValueError, match="W must have the shape of A"):
        certify_lipschitz(-np.eye(2), np.eye(3))
    with pytest.raises(ValueError, match="lipschitz must be a finite number > 0"):
        certify_lipschitz(-np.eye(2), np.eye(2), lipschitz=0)
    with pytest.raises(ValueError, match="pass a model"):
        certify_lipschitz(-np.eye(2))
    with pytest.raises(ValueError, match="p1 must have positive"):
        theorem3(-np.eye(2), p1=[1.0, -1.0], q=np.eye(2), p2=[1.0, 1.0])
    with pytest.raises(ValueError, match="method must be one of"):
        theorem5(np.eye(2), method="magic")
