"""Per-class AP and mAP on hand-ranked scores."""
import math

import numpy as np
import pytest

from student.metrics import chance_map, mean_average_precision, per_class_average_precision

# 4 clips, 3 classes; class 2 has no positive.
TARGETS = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
SCORES = np.array([[0.9, 0.9, 0.5], [0.1, 0.2, 0.5], [0.8, 0.8, 0.5], [0.2, 0.1, 0.5]])


def test_per_class_ap_by_hand():
    # class 0: its two positives rank first -> AP 1. Class 1: ranked clip0 (neg), clip2 (pos), clip1 (pos),
    # clip3 -> precision 1/2 at the first positive, 2/3 at the second -> AP (1/2 + 2/3) / 2 = 0.58333.
    ap = per_class_average_precision(SCORES, TARGETS)
    assert ap[:2] == pytest.approx([1.0, 7 / 12]) and math.isnan(ap[2])
    assert mean_average_precision(SCORES, TARGETS) == pytest.approx((1 + 7 / 12) / 2)  # over classes with a positive
    assert chance_map(TARGETS) == pytest.approx(0.5)
    one = per_class_average_precision(SCORES, np.array([[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]))
    assert one[0] == 1.0 and np.isnan(one[1:]).all()  # a single class with a positive
