"""Writes iris.csv, the data of specs/iris-csv.yaml: `python specs/data/make_iris_csv.py`.

scikit-learn's bundled iris flowers as a spreadsheet exports them: a header row, the species as words, and
a few cells left empty (one in every 25 rows of sepal width) for the spec's `fill` to handle.
"""
import csv
from pathlib import Path

from sklearn.datasets import load_iris

if __name__ == "__main__":
    iris = load_iris()
    with open(Path(__file__).with_name("iris.csv"), "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["sepal_length", "sepal_width", "petal_length", "petal_width", "species"])
        for i, (row, label) in enumerate(zip(iris.data, iris.target)):
            cells = [f"{v:g}" for v in row]
            if i % 25 == 7:
                cells[1] = ""
            out.writerow(cells + [iris.target_names[label]])
