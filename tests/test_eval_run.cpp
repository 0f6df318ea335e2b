// The eval loop end to end with the demo model on a few short suite records (passkey at ~300 tokens): scores in
// range, the prompt fits the context, middle truncation keeps both ends, and the measured KV bytes per token match
// the memory model the search budgets with. Skips when the demo model is absent.
#include <doctest/doctest.h>

#include "engine/llm.h"
#include "eval/runner.h"
#include "eval/search.h"
#include "eval/suite.h"
#include "loader/error.h"
#include "test_util.h"

namespace {

std::vector<llm::LongBenchRecord> passkey_records() {
  llm::SuiteOptions o;
  o.seed = 11;
  o.tasks = {"passkey"};
  o.lengths = {300};
  o.depths = {0, 50, 100};
  const auto docs = llm::suite_load_haystack({llm_test::data_path("eval/haystack/GPL-3")});
  return llm::suite_generate(docs, o);
}

}  // namespace

TEST_CASE("eval_select: task filter, per-dataset limit, errors") {
  std::vector<llm::LongBenchRecord> rs(5);
  for (size_t i = 0; i < rs.size(); ++i) {
    rs[i].dataset = i < 3 ? "passkey" : "niah";
    rs[i].id = std::to_string(i);
  }
  CHECK(llm::eval_select(rs, "", 0).size() == 5);
  CHECK(llm::eval_select(rs, "", 2).size() == 4);
  CHECK(llm::eval_select(rs, "niah", 0).size() == 2);
  CHECK(llm::eval_select(rs, "passkey", 1).front().id == "0");
  CHECK_THROWS_WITH_AS(llm::eval_select(rs, "hotpotqa", 0), doctest::Contains("it has: niah, passkey"), llm::Error);
}

TEST_CASE("eval with the demo model: a few passkey records") {
  if (!llm_test::have_demo_model()) return;
  const auto records = passkey_records();
  REQUIRE(records.size() == 3);
  llm::Model model(llm_test::demo_model_path());
  llm::EvalRunOptions o;
  o.n_ctx = 512;
  // one record under ASan (each takes ~30 s there), all three in the normal build
  const size_t n = llm_test::sanitized ? 1 : records.size();
  if (llm_test::sanitized) MESSAGE("reduced under AddressSanitizer: 1 of the 3 passkey records");
  const auto runs = llm::eval_records(model, {records.begin(), records.begin() + long(n)}, o);
  REQUIRE(runs.size() == n);
  const double full = llm::kv_full_bytes_per_token(model.config());
  for (const auto& r : runs) {
    CAPTURE(r.result.id);
    CAPTURE(r.result.prediction);
    CHECK(r.result.score >= 0.0);
    CHECK(r.result.score <= 1.0);
    CHECK(r.prompt_tokens == r.full_tokens);  // 300-token contexts fit 512 - 16
    CHECK(r.prompt_tokens > 250);
    CHECK(r.prompt_tokens <= 512 - 16);
    CHECK(r.generated_tokens <= 16);
    CHECK(r.kv_bytes_per_token == full);
  }
  const llm::EvalSummary s = llm::eval_summarize(llm::eval_results(runs));
  REQUIRE(s.tasks.size() == 1);
  CHECK(s.tasks[0].n == n);
  CHECK(s.average >= 0.0);
  CHECK(s.average <= 100.0);
  MESSAGE("passkey@300 score (full cache): ", s.average);

  // Middle truncation: a context of 128 leaves 112 prompt tokens; both ends of the chat-wrapped prompt survive.
  const llm::LongBenchDataset& d = llm::longbench_dataset("passkey");
  int full_tokens = 0;
  const std::vector<int> whole = llm::eval_prompt_tokens(model, d, records[0], 4096, &full_tokens);
  const std::vector<int> cut = llm::eval_prompt_tokens(model, d, records[0], 128);
  CHECK(static_cast<int>(whole.size()) == full_tokens);
  REQUIRE(cut.size() == 112);
  CHECK(std::equal(cut.begin(), cut.begin() + 56, whole.begin()));
  CHECK(std::equal(cut.end() - 56, cut.end(), whole.end() - 56));
  CHECK(model.detokenize(cut).find("pass key") != std::string::npos);  // the question at the end is kept
  o.n_ctx = 128;
  llm::Session small(model, {.n_ctx = 128});
  const llm::EvalRecordRun tr = llm::eval_record(model, small, records[0], o);
  CHECK(tr.prompt_tokens == 112);
  CHECK(tr.full_tokens > 112);
  o.n_ctx = 17;  // 17 - 16 leaves one token: an error, not a crash
  CHECK_THROWS_WITH_AS(llm::eval_prompt_tokens(model, d, records[0], 17), doctest::Contains("raise -c"), llm::Error);
}

TEST_CASE("eval with a low-rank cache: measured KV bytes match the memory model") {
  if (!llm_test::have_demo_model()) return;
  const auto records = passkey_records();
  const std::string spec = "svd:k=16,v=16/32/64,policy=seed";
  llm::LoadOptions lo;
  lo.kv = spec;
  llm::Model model(llm_test::demo_model_path(), lo);
  llm::EvalRunOptions o;
  o.n_ctx = 512;
  const auto runs = llm::eval_records(model, {records[1]}, o);
  REQUIRE(runs.size() == 1);
  CHECK(runs[0].result.score >= 0.0);
  CHECK(runs[0].result.score <= 1.0);
  const double predicted = llm::kv_spec_bytes_per_token(spec, model.config());
  // the seed policy's 40/40/20 split holds to a token or two of the prompt
  CHECK(runs[0].kv_bytes_per_token == doctest::Approx(predicted).epsilon(0.02));
  CHECK(runs[0].kv_bytes_per_token < llm::kv_full_bytes_per_token(model.config()) / 2.5);
}
