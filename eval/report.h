// Aggregating per-record scores into LongBench's report, and a progress line with an ETA, for `llm eval` (and the
// search/ablation drivers later). No engine needed: a record's score comes from longbench_score.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace llm {

struct EvalRecordResult {
  std::string id;
  std::string dataset;
  int64_t length = 0;  // the record's LongBench length field
  double score = 0.0;  // in [0, 1], from longbench_score
  std::string prediction;
};

struct EvalTaskSummary {
  std::string dataset;
  size_t n = 0;
  double score = 0.0;                   // LongBench's number: 100 * mean, rounded to 2 decimals
  double bucket_score[3] = {0, 0, 0};   // LongBench-E: 0-4k, 4-8k, 8k+ (100 * mean, 2 decimals; 0 when empty)
  size_t bucket_n[3] = {0, 0, 0};
};

struct EvalSummary {
  std::vector<EvalTaskSummary> tasks;  // in order of first appearance
  double average = 0.0;                // unweighted mean of the task scores (LongBench's "Avg"), 2 decimals
};

EvalSummary eval_summarize(const std::vector<EvalRecordResult>& results);
// A fixed-width table: dataset, n, score, and the three length buckets.
std::string eval_summary_table(const EvalSummary& s);
// JSON object {"tasks": {name: {"n", "score", "0-4k", "4-8k", "8k+"}}, "average"} (a string, no trailing newline).
std::string eval_summary_json(const EvalSummary& s);

// "\r[#######.............] 7/20 35% 0:12 ETA 0:22 <note>" on a terminal stream, updated at most ~10 times a second;
// finish() prints the final line and a newline. Held by the caller (no global state).
struct Progress {
  size_t total = 0;
  size_t done = 0;
  FILE* out = stderr;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_print{};

  void step(const std::string& note = {});  // one more item done
  void finish();
  std::string line(const std::string& note) const;  // the text of the current line (for tests)
};

}  // namespace llm
