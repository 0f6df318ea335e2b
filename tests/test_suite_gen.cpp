// The long-context suite generator (eval/suite.h, tools/make_longctx_suite.cpp) on the Debian license texts in
// tests/data/eval/haystack/: determinism by seed, needles at the requested depth, answers present in the context,
// records that re-parse with the LongBench reader and that a correct answer scores 1 on.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "eval/longbench.h"
#include "eval/suite.h"
#include "loader/error.h"
#include "test_util.h"

namespace {

std::vector<llm::SuiteDocument> haystack() {
  std::vector<std::string> paths;
  for (const char* f : {"GPL-3", "GPL-2", "LGPL-2.1", "GFDL-1.3", "Apache-2.0", "MPL-2.0", "Artistic"})
    paths.push_back(llm_test::data_path(std::string("eval/haystack/") + f));
  return llm::suite_load_haystack(paths);
}

llm::SuiteOptions small_options(uint64_t seed) {
  llm::SuiteOptions o;
  o.seed = seed;
  o.lengths = {200, 1000, 3000};
  o.per_cell = 2;
  return o;
}

std::string dump(const std::vector<llm::LongBenchRecord>& recs) {
  std::string s;
  for (const auto& r : recs) s += llm::longbench_record_json(r) + "\n";
  return s;
}

int field(const std::string& id, char tag) {  // "niah-L1000-D25-0": 'L' -> 1000, 'D' -> 25
  size_t p = id.find(std::string("-") + tag);
  REQUIRE(p != std::string::npos);
  return std::stoi(id.substr(p + 2));
}

}  // namespace

TEST_CASE("suite: the same seed gives the same file, another seed another") {
  auto docs = haystack();
  auto a = llm::suite_generate(docs, small_options(7));
  auto b = llm::suite_generate(docs, small_options(7));
  auto c = llm::suite_generate(docs, small_options(8));
  CHECK(a.size() == 3 * 5 * 2 * 2 + 3 * 2 * 2);  // passkey+niah: lengths x depths x per_cell; others per length
  CHECK(dump(a) == dump(b));
  CHECK(dump(a) != dump(c));
  // Records do not depend on which other tasks are generated.
  auto o = small_options(7);
  o.tasks = {"niah"};
  auto only = llm::suite_generate(docs, o);
  size_t first_niah = 3 * 5 * 2;
  CHECK(llm::longbench_record_json(only[0]) == llm::longbench_record_json(a[first_niah]));
}

TEST_CASE("suite: needles sit at the requested depth, contexts have the requested length") {
  auto recs = llm::suite_generate(haystack(), small_options(3));
  int checked = 0;
  for (const auto& r : recs) {
    INFO(r.id);
    int length = field(r.id, 'L');
    double want = 4.0 * length * (r.dataset == "passkey" ? 0.9 : 1.0);  // the filler is cut 10% shorter
    CHECK(std::fabs(static_cast<double>(r.context.size()) - want) <= 400.0);
    if (r.dataset != "passkey" && r.dataset != "niah") continue;
    int depth = field(r.id, 'D');
    std::string needle = r.dataset == "passkey" ? "The pass key is " + r.answers[0] + "."
                                                : "One of the special magic numbers for ";
    size_t at = r.context.find(needle);
    REQUIRE(at != std::string::npos);
    CHECK(r.context.find(needle, at + 1) == std::string::npos);  // exactly one needle
    size_t needle_len = r.dataset == "passkey" ? r.context.find("is the pass key.", at) + 17 - at
                                               : r.context.find(r.answers[0], at) + r.answers[0].size() + 2 - at;
    double hay = static_cast<double>(r.context.size() - std::min(r.context.size(), needle_len));
    double target = depth / 100.0 * hay;
    // The needle goes to the sentence boundary nearest the target: within half the longest sentence.
    double slack = r.dataset == "passkey" ? 12.0 : llm::suite_max_sentence_chars / 2.0 + 2.0;
    CHECK(std::fabs(static_cast<double>(at) - target) <= slack);
    ++checked;
  }
  CHECK(checked == 3 * 5 * 2 * 2);
}

TEST_CASE("suite: the answers are in the context, and a correct answer scores 1") {
  auto recs = llm::suite_generate(haystack(), small_options(11));
  for (const auto& r : recs) {
    INFO(r.id);
    REQUIRE(r.answers.size() == 1);
    const std::string& a = r.answers[0];
    if (r.dataset == "multi_needle") {
      size_t pos = 0;
      size_t start = 0;
      int n = 0;
      while (start < a.size()) {  // every number, in order of appearance
        size_t sp = a.find(' ', start);
        std::string num = a.substr(start, sp == std::string::npos ? std::string::npos : sp - start);
        size_t at = r.context.find("is: " + num + ".", pos);
        CHECK(at != std::string::npos);
        pos = at == std::string::npos ? pos : at;
        ++n;
        start = sp == std::string::npos ? a.size() : sp + 1;
      }
      CHECK(n == 4);
    } else if (r.dataset == "doc_qa") {
      size_t q0 = r.input.find('"') + 1, q1 = r.input.rfind('"');
      std::string q = r.input.substr(q0, q1 - q0);
      CHECK(r.context.find(q + " " + a) != std::string::npos);  // the answer is the sentence right after
      CHECK(r.context.find(a) == r.context.rfind(a));          // and it occurs once
    } else {
      CHECK(r.context.find(a) != std::string::npos);
    }
    const auto& d = llm::longbench_dataset(r.dataset);
    CHECK(llm::longbench_score(d, a, r.answers, r.all_classes) == doctest::Approx(1.0));
    std::string prompt = llm::longbench_format_prompt(d.prompt, r);
    CHECK(prompt.find(r.context) != std::string::npos);
    CHECK(prompt.find(r.input) != std::string::npos);
  }
}

TEST_CASE("suite: the JSONL re-parses with the LongBench reader") {
  auto recs = llm::suite_generate(haystack(), small_options(5));
  std::string path = (std::filesystem::temp_directory_path() / "llm_test_suite.jsonl").string();
  std::ofstream(path, std::ios::binary) << dump(recs);
  auto back = llm::longbench_read_jsonl(path);
  std::filesystem::remove(path);
  REQUIRE(back.size() == recs.size());
  for (size_t i = 0; i < recs.size(); ++i) {
    CHECK(back[i].id == recs[i].id);
    CHECK(back[i].context == recs[i].context);
    CHECK(back[i].input == recs[i].input);
    CHECK(back[i].answers == recs[i].answers);
    CHECK(back[i].length == recs[i].length);
    CHECK(back[i].dataset == recs[i].dataset);
  }
}

TEST_CASE("suite: sentences and bad options") {
  auto s = llm::suite_sentences("First one here. Second one? 1. Third sentence! ");
  REQUIRE(s.size() == 3);
  CHECK(s[0] == "First one here. ");
  CHECK(s[1] == "Second one? ");
  CHECK(s[2] == "1. Third sentence! ");  // a section number heads the text it numbers
  for (const auto& x : llm::suite_sentences(haystack()[0].text)) CHECK(x.size() <= llm::suite_max_sentence_chars);
  auto docs = haystack();
  auto o = small_options(1);
  o.tasks = {"passkee"};
  CHECK_THROWS_WITH_AS(llm::suite_generate(docs, o), doctest::Contains("unknown task \"passkee\""), llm::Error);
  o = small_options(1);
  o.depths = {120};
  CHECK_THROWS_AS(llm::suite_generate(docs, o), llm::Error);
  CHECK_THROWS_WITH_AS(llm::suite_load_haystack({"/nonexistent/haystack.txt"}), doctest::Contains("cannot open"),
                       llm::Error);
}
