"""One trial: fit an SVM on the digits data set and report its cross-validated accuracy.

Each of the 3 folds is reported as an intermediate result, so an assessor could stop a poor
trial early; the mean over the folds is the final result the tuner learns from.

Run by hand (``python3 trial.py``), the trial uses the defaults below and only logs its results.
"""

import logging

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import SVC

import tunelab

DEFAULTS = {"C": 10.0, "gamma": 0.001, "kernel": "rbf"}
FOLDS = 3


def main() -> None:
    params = dict(DEFAULTS)
    params.update(tunelab.get_next_parameter())

    digits = load_digits()
    features, labels = digits.data, digits.target
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=0)

    scores = []
    for train, test in folds.split(features, labels):
        model = SVC(C=params["C"], gamma=params["gamma"], kernel=params["kernel"])
        model.fit(features[train], labels[train])
        scores.append(model.score(features[test], labels[test]))
        tunelab.report_intermediate_result(float(np.mean(scores)))

    accuracy = float(np.mean(scores))
    tunelab.report_final_result(accuracy)
    print(f"params={params} accuracy={accuracy:.4f}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
