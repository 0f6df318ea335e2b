// LongBench's metrics in C++ (eval/metrics.h): hand-computed cases, then parity with LongBench's own Python metric
// functions on tests/data/eval/metric_goldens.json (made by tools/make_metric_goldens.py with rouge 1.0.1,
// fuzzywuzzy 0.18.0, python-Levenshtein 0.27.5 on Python 3.11).
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "eval/longbench.h"
#include "eval/metrics.h"
#include "loader/error.h"
#include "test_util.h"

using llm::FuzzMatcher;

TEST_CASE("metrics: LongBench answer normalisation") {
  CHECK(llm::metric_normalize_answer("The Cat's  HAT, an apple!") == "cats hat apple");
  CHECK(llm::metric_normalize_answer("a an the") == "");
  CHECK(llm::metric_normalize_answer("theatre and anthem") == "theatre and anthem");  // whole words only
  CHECK(llm::metric_normalize_answer("an-apple") == "anapple");                       // punctuation goes first
  CHECK(llm::metric_normalize_answer("ÄÖÜ Straße") == "äöü straße");                 // Unicode lower-casing
  CHECK(llm::metric_normalize_answer("a\xC3\xA9 b") == "a\xC3\xA9 b");              // "aé": é is a word char
  CHECK(llm::metric_normalize_answer("x\xC2\xA0the\xE3\x80\x80y") == "x y");          // NBSP, ideographic space
}

TEST_CASE("metrics: qa F1 by hand") {
  // "cat sat" vs "cat sat down": 2 common, precision 1, recall 2/3 -> F1 0.8.
  CHECK(llm::metric_qa_f1("The cat sat", "a cat sat down") == doctest::Approx(0.8));
  CHECK(llm::metric_qa_f1("", "cat") == 0.0);
  CHECK(llm::metric_qa_f1("cat cat dog", "cat dog dog") == doctest::Approx(2.0 / 3.0));  // multiset overlap 2
  CHECK(llm::metric_qa_f1("Paris.", "paris") == 1.0);
}

TEST_CASE("metrics: ROUGE-L by hand") {
  // Identical: llcs 3 of 3 words -> 2 * 1 / (2 + 1e-8).
  CHECK(llm::metric_rouge_l("the cat sat", "the cat sat") == doctest::Approx(2.0 / (2.0 + 1e-8)).epsilon(1e-12));
  // ref {a, c, d}, hyp {a, b, c}, LCS "a c": p = r = 2/3.
  double p = 2.0 / 3.0;
  CHECK(llm::metric_rouge_l("a b c", "a c d") == doctest::Approx(2.0 * (p * p) / (p + p + 1e-8)).epsilon(1e-12));
  CHECK(llm::metric_rouge_l("", "a") == 0.0);     // the package raises; LongBench scores 0
  CHECK(llm::metric_rouge_l("...", "a") == 0.0);  // no sentence survives the '.' split
  // Words are counted as a set: "the the the" is one word.
  CHECK(llm::metric_rouge_l("the the the", "the") == doctest::Approx(2.0 / (2.0 + 1e-8)).epsilon(1e-12));
}

TEST_CASE("metrics: classification, retrieval, count by hand") {
  std::vector<std::string> classes = {"City", "Country", "Other location"};
  CHECK(llm::metric_classification("City", "City", classes) == 1.0);
  CHECK(llm::metric_classification("City or Country", "City", classes) == 0.5);
  CHECK(llm::metric_classification("Country", "City", classes) == 0.0);
  CHECK(llm::metric_retrieval("Paragraph 3", "Paragraph 3") == 1.0);
  CHECK(llm::metric_retrieval("Paragraph 3 or 4", "Paragraph 3") == 0.5);
  CHECK(llm::metric_retrieval("none", "Paragraph 3") == 0.0);
  CHECK_THROWS_AS(llm::metric_retrieval("1", "no paragraph here"), llm::Error);
  CHECK(llm::metric_count("1 2 3", "3") == doctest::Approx(1.0 / 3.0));
  CHECK(llm::metric_count("three", "3") == 0.0);
}

TEST_CASE("metrics: fuzzywuzzy ratio and code similarity by hand") {
  for (FuzzMatcher m : {FuzzMatcher::difflib, FuzzMatcher::levenshtein}) {
    CHECK(llm::metric_fuzz_ratio("ab", "acab", m) == 67);      // one block "ab": 2*2/6
    CHECK(llm::metric_fuzz_ratio("abcdefgh", "aBCDEFGH", m) == 12);  // 12.5 rounds half to even
    CHECK(llm::metric_fuzz_ratio("abcdefgh", "abcXXXXX", m) == 38);  // 37.5 -> 38
    CHECK(llm::metric_fuzz_ratio("", "", m) == 100);
    CHECK(llm::metric_fuzz_ratio("", "x", m) == 0);
  }
  CHECK(llm::metric_fuzz_ratio("abcd", "bcda", FuzzMatcher::difflib) == 75);
  // The first line without '#', '//' or a backtick is the one compared.
  CHECK(llm::metric_code_sim("# comment\n```\nreturn x;\nnext", "return x;") == 1.0);
  CHECK(llm::metric_code_sim("// only comments", "x = 1") == 0.0);
  CHECK_THROWS_AS(llm::metric_score(llm::Metric::qa_f1_zh, "a", "b", {}), llm::Error);
}

namespace {
nlohmann::json load_goldens() {
  std::ifstream in(llm_test::data_path("eval/metric_goldens.json"));
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}
std::vector<std::string> classes_of(const nlohmann::json& c) {
  return c["all_classes"].is_null() ? std::vector<std::string>{} : c["all_classes"].get<std::vector<std::string>>();
}
}  // namespace

TEST_CASE("metrics: parity with LongBench's Python metrics (goldens)") {
  nlohmann::json g = load_goldens();
  double max_dev = 0.0;
  size_t n = 0;
  for (const auto& c : g["cases"]) {
    std::string metric = c["metric"], pred = c["pred"], answer = c["answer"];
    double want = c["score"];
    double got = -1.0;
    if (metric == "qa_f1") got = llm::metric_qa_f1(pred, answer);
    else if (metric == "rouge_l") got = llm::metric_rouge_l(pred, answer);
    else if (metric == "classification") got = llm::metric_classification(pred, answer, classes_of(c));
    else if (metric == "retrieval") got = llm::metric_retrieval(pred, answer);
    else if (metric == "retrieval_zh") got = llm::metric_retrieval_zh(pred, answer);
    else if (metric == "count") got = llm::metric_count(pred, answer);
    else if (metric == "code_sim_difflib") got = llm::metric_code_sim(pred, answer, FuzzMatcher::difflib);
    else if (metric == "code_sim_levenshtein") got = llm::metric_code_sim(pred, answer, FuzzMatcher::levenshtein);
    else FAIL("unknown metric in goldens: " << metric);
    INFO(metric << " pred=\"" << pred << "\" answer=\"" << answer << "\"");
    CHECK(std::fabs(got - want) <= 1e-6);
    max_dev = std::max(max_dev, std::fabs(got - want));
    ++n;
  }
  CHECK(n >= 100);
  MESSAGE("metric parity: " << n << " pairs, max |C++ - Python| = " << max_dev);
}

TEST_CASE("metrics: whole-record scoring matches LongBench's eval.py scorer (goldens)") {
  nlohmann::json g = load_goldens();
  for (const auto& r : g["records"]) {
    const auto& d = llm::longbench_dataset(r["dataset"].get<std::string>());
    std::optional<std::vector<std::string>> classes;
    if (!r["all_classes"].is_null()) classes = r["all_classes"].get<std::vector<std::string>>();
    double got = 100.0 * llm::longbench_score(d, r["pred"].get<std::string>(),
                                              r["answers"].get<std::vector<std::string>>(), classes);
    INFO(d.name << " pred=\"" << r["pred"].get<std::string>() << "\"");
    CHECK(std::fabs(got - r["score_percent"].get<double>()) <= 0.005 + 1e-9);  // eval.py rounds to 2 decimals
  }
}

TEST_CASE("metrics: arbitrary bytes (invalid UTF-8 included) score in [0, 1] without throwing") {
  uint64_t state = 12345;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<unsigned>(state >> 33);
  };
  const std::vector<std::string> classes = {"a", "ab", "\xCE\xA3", "Paragraph 1"};
  for (int t = 0; t < 300; ++t) {
    auto text = [&] {  // mostly metric-relevant characters, one byte in four random
      std::string s;
      for (unsigned n = next() % 40; n > 0; --n)
        s.push_back(static_cast<char>(next() % 4 ? "aAb .#\n1\xCE\xA3"[next() % 11] : next()));
      return s;
    };
    std::string a = text(), b = text();
    for (double s : {llm::metric_qa_f1(a, b), llm::metric_rouge_l(a, b), llm::metric_classification(a, b, classes),
                     llm::metric_count(a, b), llm::metric_retrieval(a, "Paragraph 1"),
                     llm::metric_code_sim(a, b, FuzzMatcher::difflib),
                     llm::metric_code_sim(a, b, FuzzMatcher::levenshtein)}) {
      CHECK(s >= 0.0);
      CHECK(s <= 1.0);
    }
  }
  CHECK(llm::metric_normalize_answer("x\xFFy") == "x\xEF\xBF\xBDy");  // a bad byte reads as U+FFFD
  CHECK(llm::metric_normalize_answer("\xE2\x82") == "\xEF\xBF\xBD\xEF\xBF\xBD");  // truncated sequence
}
