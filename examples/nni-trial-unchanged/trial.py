"""An NNI trial, written the way NNI users write them: nothing here knows about tunelab.

A random forest on scikit-learn's bundled digits data set; the parameters come from the
command line (defaults) merged with what the tuner chose, and the held-out accuracy is
reported. Under tunelab, ``import nni`` finds tunelab's ``nni`` shim, which the training
service puts on the trial's PYTHONPATH. Run by hand, the shim gives ``{}`` and the defaults
apply; pass ``--n_estimators 10`` and so on to try other values.
"""

import argparse
import logging

import nni
from nni.utils import merge_parameter
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

logger = logging.getLogger("digits_forest")


def get_params() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Random forest on the digits data set")
    parser.add_argument("--n_estimators", type=int, default=50)
    parser.add_argument("--max_depth", type=int, default=12)
    parser.add_argument("--max_features", type=str, default="sqrt")
    parser.add_argument("--criterion", type=str, default="gini")
    parser.add_argument("--min_samples_leaf", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args, _ = parser.parse_known_args()
    return args


def run(params: dict) -> None:
    features, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.25, stratify=labels, random_state=params["seed"]
    )

    # Grow the forest in a few steps and report the accuracy after each, so that an
    # assessor sees a learning curve: warm_start keeps the trees already grown.
    model = RandomForestClassifier(
        n_estimators=0,
        max_depth=params["max_depth"],
        max_features=params["max_features"],
        criterion=params["criterion"],
        min_samples_leaf=params["min_samples_leaf"],
        random_state=params["seed"],
        warm_start=True,
    )
    steps = 4
    accuracy = 0.0
    for step in range(1, steps + 1):
        model.n_estimators = max(1, params["n_estimators"] * step // steps)
        model.fit(x_train, y_train)
        accuracy = model.score(x_test, y_test)
        nni.report_intermediate_result(accuracy)
        logger.debug("%d trees: accuracy %.4f", model.n_estimators, accuracy)

    nni.report_final_result(accuracy)
    logger.info("Final accuracy %.4f with %s", accuracy, params)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    try:
        tuner_params = nni.get_next_parameter()
        logger.debug(tuner_params)
        params = vars(merge_parameter(get_params(), tuner_params))
        run(params)
    except Exception as exception:
        logger.exception(exception)
        raise
