#!/usr/bin/env python3
"""Writes tests/data/eval/metric_goldens.json: LongBench's own metric functions, run on a fixed set of
prediction/answer pairs, so tests/test_metrics.cpp can check that eval/metrics.cpp scores exactly like them; and
LongBench's config (prompt templates, max lengths, metric per dataset) for tests/test_longbench.cpp.

Nothing is re-implemented here: the scores come from LongBench's metrics.py and eval.py (THUDM/LongBench, folder
LongBench/, commit 2e00731f tested) imported as they are, on top of the packages they use:

    pip install rouge==1.0.1 fuzzywuzzy==0.18.0 python-Levenshtein jieba numpy
    git clone https://github.com/THUDM/LongBench
    python3 tools/make_metric_goldens.py --longbench LongBench/LongBench

fuzzywuzzy's ratio depends on what is installed: difflib.SequenceMatcher without python-Levenshtein (LongBench's
requirements.txt lists fuzzywuzzy alone), python-Levenshtein's ratio with it. Both are recorded: code_sim scores
are computed once with python-Levenshtein hidden from the import system and once with it present.
"""
import argparse
import importlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "eval", "metric_goldens.json")

TREC = ["Abbreviation", "Expression abbreviated", "Animal", "Organ of body", "Color", "Food", "Other entity",
        "Description of something", "Definition of something", "Manner of an action", "Reason", "Individual",
        "Group or organization of persons", "Title of a person", "Description of a person", "City", "Country",
        "Mountain", "Other location", "State", "Date", "Distance, linear measure", "Money", "Number of something",
        "Other number", "Percent, fraction", "Size, area and volume", "Speed", "Temperature", "Weight"]

QA = [
    ("The Eiffel Tower", "Eiffel Tower"),
    ("eiffel tower, in Paris.", "The Eiffel Tower"),
    ("A cat sat on the mat", "the cat"),
    ("An apple a day", "apple"),
    ("an-apple", "apple"),
    ("theatre", "the atre"),
    ("", "anything"),
    ("anything", ""),
    ("", ""),
    ("a an the", "the"),
    ("42", "42"),
    ("42 apples and 42 pears", "42"),
    ("3.14159", "314159"),
    ("1,000,000 dollars", "1000000 dollars"),
    ("Don't stop!", "dont stop"),
    ("hello   world\tagain\nand again", "hello world again"),
    ("Ünïcödé Straße", "ünïcödé straße"),
    ("İstanbul", "istanbul"),
    ("ΑΘΗΝΑ", "αθηνα"),
    ("ΟΔΟΣ", "οδος"),
    ("ΟΔΟΣ ΣΑΣ.", "οδοσ σας"),
    ("Σ Σ.Σ ΑΣ'Β ΑΣ'", "σ ας"),
    ("ὈΔΥΣΣΕΎΣ", "ὀδυσσεύς"),
    ("ＡＢＣ ｄｅｆ", "abc def"),
    ("aé the ä an_ thé", "é the ä"),
    ("the\u00a0cat\u3000sat", "cat sat"),
    ("café au lait", "Café"),
    ("the the the cat", "cat cat"),
    ("cat cat dog", "cat dog dog"),
    ("Barack Obama was the 44th president", "Barack Obama"),
    ("unanswerable", "Unanswerable"),
    ("yes", "no"),
    ("«quoted» — dash", "quoted dash"),
    ("a_b c", "a b c"),
    ("The answer is: Paris, France.", "Paris"),
    ("١٢٣ numbers", "١٢٣"),
]

ROUGE = [
    ("The cat sat on the mat.", "The cat sat on the mat."),
    ("The cat sat on the mat.", "A cat was sitting on a mat."),
    ("the cat the cat the cat", "the cat"),
    ("First sentence. Second sentence here. Third one.", "Second sentence. First sentence here."),
    ("", "reference text"),
    ("prediction text", ""),
    ("...", "reference"),
    ("Value is 3.14 exactly", "The value is 3.14"),
    ("  spaced   out . words  ", "spaced out words"),
    (" . ", "x"),
    ("word", "word"),
    ("Ünïcödé summary of things. Another line", "Ünïcödé summary. another line of things"),
    ("a b c d e f g", "g f e d c b a"),
    ("a b a b a b", "b a b a b a"),
    ("The meeting discussed budget cuts and the new hiring plan.\nThey agreed to revisit next week.",
     "The team discussed the budget and the hiring plan. A follow-up was set for next week."),
    ("x y z. x y z. x y z.", "x. y. z."),
    ("Person1 and Person2 plan a trip to Rome", "Person2 and Person1 will go to Rome together"),
    ("tab\tseparated\twords", "tab separated words"),
    ("nbsp\u00a0separated", "nbsp separated"),
    ("w1 w2 w6 w7 w8. w1 w3 w8 w9 w5", "w1 w2 w3 w4 w5"),
]

CLS = [
    ("Location", "City"),
    ("City", "City"),
    ("The type is Other location.", "Other location"),
    ("Description of a person", "Description of a person"),
    ("Description of something", "Description of a person"),
    ("Number of something or Other number", "Other number"),
    ("Abbreviation, Expression abbreviated", "Expression abbreviated"),
    ("nothing matches", "Food"),
    ("", "Food"),
    ("Human Animal Food", "Food"),
]
CLS_CUSTOM = [  # classes that are substrings of each other, where LongBench's remove-while-iterating loop shows
    ("New York New", "New York", ["New", "York", "New York", "Old"]),
    ("New York", "New York", ["York", "New", "New York"]),
    ("ab abc abcd", "abc", ["a", "ab", "abc", "abcd", "b"]),
    ("ab abc abcd", "abcd", ["a", "ab", "abc", "abcd", "b"]),
    ("x", "x", ["x"]),
    ("financial news", "财经", ["财经", "体育", "news"]),
]

RETR = [
    ("Paragraph 12", "Paragraph 12"),
    ("The answer is Paragraph 3", "Paragraph 12"),
    ("Paragraph 12 or Paragraph 13", "Paragraph 12"),
    ("no number", "Paragraph 1"),
    ("12", "Paragraph 12"),
    ("Paragraph 012", "Paragraph 12"),
    ("Paragraph ١٢", "Paragraph 12"),
    ("1 2 12 12", "Paragraph 12"),
]
RETR_ZH = [
    ("段落5", "段落5"),
    ("答案是段落5和段落6", "段落5"),
    ("Paragraph 5", "段落5"),
    ("无", "段落3"),
]
COUNT = [
    ("17", "17"),
    ("There are 17 unique paragraphs", "17"),
    ("17 or 18", "17"),
    ("none", "17"),
    ("", "3"),
    ("3 3 3", "3"),
    ("1, 2, 3, and so on: 30", "3"),
    ("３", "3"),
    ("twenty", "20"),
]
CODE = [
    ("return x + 1", "return x + 1"),
    ("return x+1", "return x + 1"),
    ("\n\nreturn x + 1\nfoo()", "return x + 1"),
    ("# a comment\nreturn x", "return x + 1"),
    ("// comment\nint y = 2;", "int y = 3;"),
    ("```python\nprint('hi')\n```", "print('hi')"),
    ("", "print('hi')"),
    ("", ""),
    ("x = 1  # trailing comment\ny = 2", "y = 2"),
    ("self.assertEqual(result, expected)", "self.assertEqual(expected, result)"),
    ("for (int i = 0; i < n; ++i) {", "for (int i = 0; i < n; i++) {"),
    ("public static void main(String[] args) {", "public static void main(String args[]) {"),
    ("    if (a == null) return;", "if (a == null) { return; }"),
    ("résumé = 'naïve'", "resume = 'naive'"),
    ("ab", "acab"),
    ("abcd", "bcda"),
    ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "aaaa"),
    ("x" * 150 + " = " + "y" * 120, "x" * 140 + " = " + "y" * 130 + ";"),
    ("result = compute(" + ", ".join(f"arg{i}" for i in range(40)) + ")",
     "result = compute(" + ", ".join(f"arg{i}" for i in range(38, -1, -1)) + ")"),
    ("a = b", "a = c"),
    ("`inline` code\nreal_line()", "real_line()"),
    ("only // comments\n# and more", "x = 1"),
    ("def f(x):", "def f(x, y):"),
    ("abc", "xyz"),
]
SCORER = [  # whole-record scoring (eval.py's scorer): first-line rule, max over answers
    ("triviaqa", "Paris\nExtra lines that would hurt", ["Paris", "Paris, France"], None),
    ("samsum", "\nShe will bring the cake.\nDialogue: more", ["She brings cake."], None),
    ("trec", "Location\nQuestion: ...", ["City"], TREC),
    ("trec", "City\n", ["City"], TREC),
    ("hotpotqa", "the answer is Yes", ["yes", "no"], None),
    ("narrativeqa", "He goes home.", ["home", "He returns home"], None),
    ("passage_count", "12", ["12"], None),
    ("passage_retrieval_en", "Paragraph 4", ["Paragraph 4"], None),
    ("lcc", "# next\nreturn value", ["return value;"], None),
    ("gov_report", "The report describes budgets. It recommends cuts.", ["The report recommends budget cuts."], None),
]


def load_longbench(path, with_levenshtein):
    """Import LongBench's metrics.py/eval.py fresh, with or without python-Levenshtein visible to fuzzywuzzy."""
    for name in ["metrics", "eval", "fuzzywuzzy.fuzz", "fuzzywuzzy.StringMatcher", "fuzzywuzzy"]:
        sys.modules.pop(name, None)
    if with_levenshtein:
        sys.modules.pop("Levenshtein", None)
    else:
        sys.modules["Levenshtein"] = None  # import fails -> fuzzywuzzy falls back to difflib, as in a plain install
    if path not in sys.path:
        sys.path.insert(0, path)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = importlib.import_module("metrics")
        ev = importlib.import_module("eval")
    from fuzzywuzzy import fuzz
    matcher = fuzz.SequenceMatcher.__module__
    expect = "fuzzywuzzy.StringMatcher" if with_levenshtein else "difflib"
    if matcher != expect:
        sys.exit(f"fuzzywuzzy uses {matcher}, expected {expect}: install python-Levenshtein")
    return metrics, ev


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--longbench", required=True, help="folder holding LongBench's metrics.py and eval.py")
    args = ap.parse_args()
    path = os.path.abspath(args.longbench)

    m, ev = load_longbench(path, with_levenshtein=False)
    cases = []

    def add(metric, pred, answer, score, all_classes=None):
        cases.append({"metric": metric, "pred": pred, "answer": answer, "all_classes": all_classes,
                      "score": float(score)})

    for p, a in QA:
        add("qa_f1", p, a, m.qa_f1_score(p, a))
    for p, a in ROUGE:
        add("rouge_l", p, a, m.rouge_score(p, a))
    for p, a in CLS:
        add("classification", p, a, m.classification_score(p, a, all_classes=TREC), TREC)
    for p, a, classes in CLS_CUSTOM:
        add("classification", p, a, m.classification_score(p, a, all_classes=list(classes)), classes)
    for p, a in RETR:
        add("retrieval", p, a, m.retrieval_score(p, a))
    for p, a in RETR_ZH:
        add("retrieval_zh", p, a, m.retrieval_zh_score(p, a))
    for p, a in COUNT:
        add("count", p, a, m.count_score(p, a))
    for p, a in CODE:
        add("code_sim_difflib", p, a, m.code_sim_score(p, a))
    records = []
    for dataset, pred, answers, classes in SCORER:
        records.append({"dataset": dataset, "pred": pred, "answers": answers, "all_classes": classes,
                        "score_percent": ev.scorer(dataset, [pred], [answers], classes)})

    m, ev = load_longbench(path, with_levenshtein=True)
    for p, a in CODE:
        add("code_sim_levenshtein", p, a, m.code_sim_score(p, a))

    import fuzzywuzzy
    import Levenshtein
    import rouge
    versions = {"python": sys.version.split()[0], "rouge": getattr(rouge, "__version__", "?"),
                "fuzzywuzzy": fuzzywuzzy.__version__, "Levenshtein": Levenshtein.__version__}
    # LongBench's per-dataset protocol, so tests/test_longbench.cpp can check eval/longbench.cpp's tables against it.
    with open(os.path.join(path, "config", "dataset2prompt.json"), encoding="utf-8") as f:
        prompts = json.load(f)
    with open(os.path.join(path, "config", "dataset2maxlen.json"), encoding="utf-8") as f:
        maxlen = json.load(f)
    config = {"dataset2prompt": prompts, "dataset2maxlen": maxlen,
              "dataset2metric": {k: fn.__name__ for k, fn in ev.dataset2metric.items()}}
    out = {"source": "LongBench/metrics.py + eval.py (THUDM/LongBench 2e00731f), via tools/make_metric_goldens.py",
           "versions": versions, "longbench_config": config, "cases": cases, "records": records}
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {OUT}: {len(cases)} pairs, {len(records)} records; {versions}")


if __name__ == "__main__":
    main()
