// LongBench's metrics, in C++: one prediction against one reference answer, each score in [0, 1], computed the way
// LongBench/metrics.py (THUDM/LongBench, commit 2e00731f) computes it with the Python packages it uses (`rouge` 1.0.1,
// `fuzzywuzzy` 0.18.0). Python semantics that change scores are reproduced on purpose: Unicode str.lower(),
// Unicode \w, \d and whitespace (tables in unicode_tables.inc), set-based ROUGE-L over '.'-split sentences,
// classification's remove-while-iterating loop, fuzzywuzzy's round-half-even percentage.
// Parity with the Python packages: tests/test_metrics.cpp against tests/data/eval/metric_goldens.json
// (made by tools/make_metric_goldens.py).
//
// Not implemented: qa_f1_zh and rouge_zh (LongBench segments Chinese with jieba, a dictionary-based segmenter this
// project does not carry); asking for them is an llm::Error.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace llm {

// Which sequence matcher fuzzywuzzy's fuzz.ratio runs on: difflib.SequenceMatcher when python-Levenshtein is not
// installed (LongBench's requirements.txt lists fuzzywuzzy alone, so this is what a plain install scores with), or
// python-Levenshtein's indel ratio when it is. They differ on some strings.
enum class FuzzMatcher { difflib, levenshtein };

enum class Metric { qa_f1, rouge_l, classification, retrieval, retrieval_zh, count, code_sim, qa_f1_zh, rouge_zh };

const char* metric_name(Metric m);

// LongBench's normalize_answer: lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace.
std::string metric_normalize_answer(std::string_view s);

double metric_qa_f1(std::string_view pred, std::string_view answer);   // token F1 after normalize_answer
double metric_rouge_l(std::string_view pred, std::string_view answer); // `rouge` package, rouge-l "f"; 0 on empty
double metric_classification(std::string_view pred, std::string_view answer,
                             const std::vector<std::string>& all_classes);
double metric_retrieval(std::string_view pred, std::string_view answer);    // answer holds "Paragraph N"
double metric_retrieval_zh(std::string_view pred, std::string_view answer); // answer holds "段落N"
double metric_count(std::string_view pred, std::string_view answer);
// First line of pred (after leading newlines) that holds no '`', '#' or "//", then fuzz.ratio / 100.
double metric_code_sim(std::string_view pred, std::string_view answer, FuzzMatcher m = FuzzMatcher::difflib);

// fuzzywuzzy's fuzz.ratio: an integer 0..100 (equal strings 100, one of them empty 0).
int metric_fuzz_ratio(std::string_view a, std::string_view b, FuzzMatcher m);

// Dispatch on a metric (all_classes is used by classification only).
double metric_score(Metric m, std::string_view pred, std::string_view answer,
                    const std::vector<std::string>& all_classes, FuzzMatcher fm = FuzzMatcher::difflib);

}  // namespace llm
