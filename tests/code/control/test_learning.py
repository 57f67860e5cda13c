"""The reachable estimate: cross-validation of the recipe over the new labels, on real tweets."""

from __future__ import annotations

from sklearn.metrics import f1_score

from loopml.control.learning import reachable_macro_f1
from loopml.data import Dataset, Splits
from loopml.recipes import get_recipe


def test_reachable_rises_with_new_labels_of_a_new_domain(tweets: Dataset) -> None:
    frame = tweets.frame
    home = frame[frame["domain"] != "airline"].sample(2000, random_state=0)
    airline = frame[frame["domain"] == "airline"].sample(1200, random_state=0)
    splits = Splits(home, home.iloc[:0], home.iloc[:0], seed=0)
    untrained = get_recipe("tfidf-logreg").fit(home["text"].tolist(), home["label"].tolist())
    live = f1_score(airline["label"], untrained.predict(airline["text"].tolist()), average="macro")

    small = reachable_macro_f1(splits, airline.iloc[:300], recipe=get_recipe("tfidf-logreg"))
    large = reachable_macro_f1(splits, airline, recipe=get_recipe("tfidf-logreg"))
    print(f"live {live:.3f}, reachable with 300: {small.macro_f1}, 1200: {large.macro_f1}")
    assert (small.labels, large.labels, large.folds) == (300, 1200, 3)
    # Labels of the new domain help, and more of them help more (a learning curve).
    assert small.macro_f1 > live + 0.03
    assert large.macro_f1 > small.macro_f1 + 0.02
    # The same data and seed give the same estimate.
    again = reachable_macro_f1(splits, airline.iloc[:300], recipe=get_recipe("tfidf-logreg"))
    assert again.macro_f1 == small.macro_f1
